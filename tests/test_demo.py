"""The README's main job (`zoo demo`): the recommended encoder exported, served and queried."""

import os
import re

from zoo.apps.demo import run_demo
from zoo.registry import RECOMMENDED, read_manifest


def test_the_recommended_model_ships_weights():
    assert RECOMMENDED in read_manifest()["models"]


def test_the_demo_serves_the_recommended_model_and_finds_more_than_pixels(tmp_path):
    report = run_demo(out_dir=str(tmp_path))
    assert report.startswith(f"{RECOMMENDED}: 2000 images of merchant_eval exported, served")
    ours, pixels = map(float, re.search(r"P@8 ([\d.]+) \(raw pixels ([\d.]+)\)", report).groups())
    assert ours > pixels + 0.3  # merchant_eval: 0.95 against 0.51 (MODELS.md)
    assert os.path.isfile(tmp_path / f"{RECOMMENDED}_retrieval.png")
    assert os.path.isfile(tmp_path / "models" / RECOMMENDED / "1" / "saved_model.pb")

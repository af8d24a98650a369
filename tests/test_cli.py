"""The command line and the reproducibility of the numbers MODELS.md reports."""

import subprocess
import sys

import numpy as np
import pytest

from zoo.apps.cli import main
from zoo.apps.evaluation import results as stored_results
from zoo.apps.evaluation.run import RAW_PIXELS, evaluate_retrieval
from zoo.registry import REGISTRY


def test_zoo_list_prints_every_model_without_tensorflow():
    code = ("import sys; from zoo.apps.cli import main; main(['list']); "
            "assert 'tensorflow' not in sys.modules, 'zoo list imported TensorFlow'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for name in REGISTRY:
        assert name in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["train", "no_such_model"], "Unknown model 'no_such_model'"),
    (["train", "thin_gan_merchant", "--set", "itrations=5"], "Unknown recipe keys"),
    (["train", "thin_gan_merchant", "--set", "iterations"], "key=value"),
    (["evaluate", "retrieval", "thin_gan_merchant", "--corpus", "nope"], "Unknown corpus"),
])
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_merchant_results_in_models_md_are_reproduced_by_their_command():
    """`zoo evaluate retrieval sketch_gan_merchant thin_gan_merchant` gives MODELS.md's numbers."""
    names = ["sketch_gan_merchant", "thin_gan_merchant"]
    retrieval = stored_results.read("retrieval")
    results = evaluate_retrieval(names, corpus="merchant_eval")
    for name in names:
        recorded = retrieval[f"merchant_eval/{name}"]["rows"]
        assert name in recorded and len(recorded) == 2  # float embedding and Hamming rows
        for row, metrics in recorded.items():
            for metric, value in metrics.items():
                assert results[row][metric] == pytest.approx(value, abs=2e-3), (row, metric)
    recorded_pixels = retrieval[f"merchant_eval/{RAW_PIXELS}"]["rows"][RAW_PIXELS]
    assert results[RAW_PIXELS] == pytest.approx(recorded_pixels, abs=1e-6)
    assert np.isfinite(list(results["sketch_gan_merchant"].values())).all()


def test_set_values_parse_as_numbers_booleans_text_or_tuples():
    from zoo.recipes import parse_recipe_changes

    assert parse_recipe_changes(["iterations=5", "learning_rate=2e-4", "center_high=false",
                                 "augment=True", "precision=float32"]) == {
        "iterations": 5, "learning_rate": 2e-4, "center_high": False, "augment": True,
        "precision": "float32"}
    assert parse_recipe_changes(["widths=64,128", "dropout=0,0.2,0.2"]) == {
        "widths": (64, 128), "dropout": (0, 0.2, 0.2)}

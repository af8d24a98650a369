"""One-shot classification: MHD by hand, and a tiny synthetic run with known answers."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from zoo.apps.evaluation import oneshot
from zoo.apps.evaluation.invariance import RawPixelEncoder


def test_modified_hausdorff_distance_by_hand():
    a = np.array([[0.0, 0.0]])
    b = np.array([[0.0, 0.0], [0.0, 3.0]])
    # A -> B: 0. B -> A: (0 + 3) / 2.
    assert oneshot.modified_hausdorff_distance(a, b) == pytest.approx(1.5)
    assert oneshot.modified_hausdorff_distance(b, a) == pytest.approx(1.5)
    c = np.array([[0.0, 0.0], [4.0, 0.0]])
    d = np.array([[0.0, 1.0], [4.0, 2.0], [8.0, 0.0]])
    # C -> D: (1 + 2) / 2 = 1.5.  D -> C: (1 + 2 + 4) / 3 = 7 / 3.
    assert oneshot.modified_hausdorff_distance(c, d) == pytest.approx(7 / 3)


def test_ink_points_are_black_pixels_centred():
    ink = np.zeros((5, 5), bool)
    ink[1, 1] = ink[3, 3] = True
    np.testing.assert_allclose(oneshot.ink_points(ink), [[-1, -1], [1, 1]])
    np.testing.assert_allclose(oneshot.ink_points(ink, centre=False), [[1, 1], [3, 3]])


def _png(draw):
    paper = np.ones((105, 105), bool)  # white paper, black strokes: as in all_runs.zip
    draw(paper)
    buffer = io.BytesIO()
    Image.fromarray(paper).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def _shapes(offset):
    def horizontal(paper):
        paper[50 + offset, 20:80] = False

    def vertical(paper):
        paper[20:80, 50 + offset] = False

    def box(paper):
        paper[30 + offset, 30:70] = paper[70 + offset, 30:70] = False
        paper[30 + offset:71 + offset, 30] = paper[30 + offset:71 + offset, 70] = False

    return [horizontal, vertical, box]


def _write_tiny_run(path, answer):
    """A 3-way run: test item k is class answer[k] drawn 3 px lower / to the right."""
    with zipfile.ZipFile(path, "w") as archive:
        for k, draw in enumerate(_shapes(0)):
            archive.writestr(f"run01/training/class0{k + 1}.png", _png(draw))
        for k, c in enumerate(answer):
            archive.writestr(f"run01/test/item0{k + 1}.png", _png(_shapes(3)[c]))
        archive.writestr("run01/class_labels.txt", "".join(
            f"run01/test/item0{k + 1}.png run01/training/class0{c + 1}.png\n"
            for k, c in enumerate(answer)))


def test_tiny_synthetic_run(tmp_path):
    answer = [2, 0, 1]
    _write_tiny_run(tmp_path / "all_runs.zip", answer)
    runs = oneshot.load_runs(str(tmp_path))
    assert len(runs) == 1 and runs[0].answers.tolist() == answer
    assert runs[0].training_images.shape == (3, 64, 64, 1) and runs[0].training_ink[0].sum() == 60
    result = oneshot.one_shot_errors({"pixels as a model": RawPixelEncoder()}, runs)
    assert result["runs"] == ["run01"]
    assert result["mean_error"] == {"pixels as a model": 0.0, "raw pixels": 0.0, "MHD": 0.0}


def test_error_rate_and_missing_zip(tmp_path):
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert oneshot.error_rate(scores, [0, 1]) == 0.5
    assert oneshot.error_rate(scores, [1, 1], higher_is_better=False) == 0.0
    with pytest.raises(ValueError, match="all_runs.zip"):
        oneshot.runs_zip_path(str(tmp_path))


def test_evaluate_oneshot_writes_numbers_and_report(tmp_path):
    from zoo.apps.evaluation.report import evaluate_oneshot, write_report

    _write_tiny_run(tmp_path / "all_runs.zip", answer=[1, 2, 0])
    result = evaluate_oneshot("thin_gan_merchant", data_dir=str(tmp_path), out_dir=str(tmp_path))
    assert result["runs"] == ["run01"] and result["mean_error"]["MHD"] == 0.0
    assert set(result["mean_error"]) == {"thin_gan_merchant", "raw pixels", "MHD"}
    with open(result["json"]) as handle:
        assert json.load(handle)["errors"] == result["errors"]
    with open(write_report(str(tmp_path))) as handle:
        text = handle.read()
    assert "| MHD | 0.0% |" in text and "evaluate_oneshot('thin_gan_merchant'" in text
    assert "(oneshot_thin_gan_merchant.csv)" in text

"""Learning curves (issue 18): snapshots written while training, measured afterwards."""

import numpy as np
import pytest

from zoo.data.corpora import LabelledImages
from zoo.data.merchant_marks import make_corpus
from zoo.apps.evaluation import learning_curve
from zoo.apps.evaluation.ablation import COLUMNS
from zoo.apps.evaluation.oneshot import load_runs
from zoo.training.run import train_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Four steps of the registered sketch-GAN+ network, a snapshot every two."""
    out = tmp_path_factory.mktemp("run")
    train_model("sketch_gan_plus_merchant", str(out), progress=False, recipe_changes={
        "iterations": 4, "checkpoint_every": 2, "sample_every": 2, "batch_size": 8,
        "lambda_gan": 0})
    return out


def test_training_keeps_a_snapshot_every_sample_every_steps(run_dir):
    assert [step for step, _ in learning_curve.snapshots(run_dir)] == [2, 4]
    assert not list((run_dir / "snapshots").glob("*.tmp*"))


def test_the_last_snapshot_is_the_finished_encoder(run_dir):
    import zoo

    from zoo.data.corpora import load_corpus
    from zoo.registry import get_corpus

    images = load_corpus(get_corpus("merchant_train")).images  # what `zoo train` calibrates on
    [*_, (_, last)] = learning_curve.snapshots(run_dir)
    encoder = learning_curve.snapshot_encoder("sketch_gan_plus_merchant", last, images)
    finished = zoo.load("sketch_gan_plus_merchant", with_hash_head=False,
                        weights_path=str(run_dir / "sketch_gan_plus_merchant.weights.h5"))
    probe = images[:6]
    np.testing.assert_allclose(encoder.encode(probe), finished.encode(probe), atol=1e-4)


def test_curve_points_measure_every_snapshot_and_round_trip(run_dir, tmp_path):
    runs = load_runs(runs=2)
    marks = make_corpus(num_identities=10, instances_per_identity=3, seed=7)
    evaluation = (runs, LabelledImages(np.concatenate([r.training_images for r in runs]),
                                       np.concatenate([np.arange(20)] * 2)),
                  LabelledImages(marks.images, marks.identities))
    training = make_corpus(num_identities=8, instances_per_identity=5, seed=0).images
    points = learning_curve.curve_points("sketch_gan_plus_merchant", run_dir, training,
                                         evaluation, progress=lambda _: None)
    assert [p["step"] for p in points] == [2, 4]
    assert all(set(COLUMNS) <= set(p) and 0 <= p["merchant R@1"] <= 1 for p in points)
    png, csv_path = learning_curve.save_curves({"run": points}, str(tmp_path / "curve"), "t")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    read = learning_curve.read_curves(csv_path)["run"]
    for got, expected in zip(read, points):
        assert got["step"] == expected["step"]
        assert all(got[c] == pytest.approx(expected[c], abs=1e-4) for c in COLUMNS)


def test_a_run_without_snapshots_is_refused_with_what_writes_them(tmp_path):
    with pytest.raises(ValueError, match="zoo train"):
        learning_curve.run_curve({"x": ("sketch_gan_plus_merchant", str(tmp_path))})


def test_recorded_curves_are_a_result_named_after_the_figure(results_dir, tmp_path):
    from zoo.apps.evaluation import results

    curves = {"run": [{"step": 2, "one-shot error": 0.5, "Omniglot P@8": 0.1,
                       "merchant P@8": 0.2, "merchant R@1": 0.3}]}
    figure, _ = learning_curve.save_curves(curves, str(tmp_path / "issue18_merchant"))
    learning_curve.record_curves(curves, figure, "zoo evaluate curve x=y --out z --record")
    stored = results.read("learning_curve")["issue18_merchant"]
    assert stored["runs"] == curves and stored["command"].startswith("zoo evaluate curve")

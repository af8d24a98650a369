"""The GAN training loop: updates both networks, checkpoints, and resumes after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from zoo.models import sketch_gan
from zoo.training.checkpoint import load_checkpoint
from zoo.training.gan import GANTrainer, make_trainer, reestimate_batchnorm
from zoo.recipes import Recipe
from zoo.training.train import train_gan

TINY = Recipe(iterations=12, batch_size=8, checkpoint_every=4, sample_every=6, seed=3)


def copy_weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_short_run_updates_both_networks_and_writes_outputs(tmp_path, small_corpus):
    generator, discriminator = sketch_gan.build_gan("sketch")
    g_before, d_before = copy_weights(generator), copy_weights(discriminator)
    trainer, seconds = train_gan(generator, discriminator, small_corpus.images, TINY,
                                 str(tmp_path), progress=False)
    assert isinstance(trainer, GANTrainer) and seconds > 0
    g_changed = [not np.allclose(a, b) for a, b in zip(g_before, generator.get_weights())]
    d_changed = [not np.allclose(a, b) for a, b in zip(d_before, discriminator.get_weights())]
    assert sum(g_changed) >= len(generator.trainable_weights)
    assert sum(d_changed) >= len(discriminator.trainable_weights)
    assert sorted(os.listdir(tmp_path / "samples")) == ["step_000006.png", "step_000012.png"]
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].split(",")[0] == "step" and [row.split(",")[0] for row in log[1:]] == [
        "4", "8", "12"]
    step, extra = load_checkpoint(make_trainer(*sketch_gan.build_gan("sketch"), TINY),
                                  str(tmp_path))
    assert step == 12 and extra["train_seconds"] > 0


def seeded_gan(architecture):
    import keras

    keras.utils.set_random_seed(11)  # the same initial weights for both runs
    return sketch_gan.build_gan(architecture)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, small_corpus):
    straight = seeded_gan("thin")
    train_gan(*straight, small_corpus.images, TINY, str(tmp_path / "straight"), progress=False)

    first = seeded_gan("thin")
    train_gan(*first, small_corpus.images, TINY.replace(iterations=8),
              str(tmp_path / "resumed"), progress=False)
    second = sketch_gan.build_gan("thin")  # a new process would start from fresh models
    train_gan(*second, small_corpus.images, TINY, str(tmp_path / "resumed"), progress=False)
    for expected, actual in zip(straight, second):
        for a, b in zip(expected.get_weights(), actual.get_weights()):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_killed_cli_run_resumes_from_its_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "zoo", "train", "thin_gan_merchant", "--out", str(run_dir),
               "--set", "iterations=400", "--set", "checkpoint_every=2", "--set", "batch_size=4",
               "--set", "sample_every=1000"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = run_dir / "checkpoint.npz"
    deadline = time.time() + 240
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.5)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the run wrote no checkpoint before it was killed"
    killed_at = int(np.load(checkpoint)["header"].item().split('"step": ')[1].split(",")[0])
    assert 2 <= killed_at < 400

    finish = command[:7] + ["--set", f"iterations={killed_at + 2}"] + command[9:]
    result = subprocess.run(finish, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    steps = [int(row.split(",")[0]) for row in (run_dir / "log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(2, killed_at + 3, 2))  # nothing trained twice, nothing skipped
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["recipe"]["iterations"] == killed_at + 2


def test_a_resumed_run_drops_log_rows_past_its_checkpoint(tmp_path):
    """A run killed after logging step 6 but before checkpointing it resumes from step 4: the
    row for 6 goes, so the resumed run logs 6 once."""
    from zoo.training.train import truncate_log

    log = tmp_path / "log.csv"
    log.write_text("step,d_loss\n2,0.5\n4,0.4\n6,0.3\n")
    truncate_log(str(log), 4)
    assert log.read_text() == "step,d_loss\n2,0.5\n4,0.4\n"
    truncate_log(str(log), 0)  # a restart keeps only the header
    assert log.read_text() == "step,d_loss\n"
    truncate_log(str(tmp_path / "missing.csv"), 4)  # no log yet: nothing to do
    assert not (tmp_path / "missing.csv").exists()


def test_batchnorm_reestimation_uses_real_data_statistics(small_corpus):
    discriminator = sketch_gan.build_discriminator("sketch")
    reestimate_batchnorm(discriminator, small_corpus.images, batch_size=7)
    first_bn = discriminator.get_layer("d1_bn")
    import keras

    probe = keras.Model(discriminator.input, first_bn.input)
    inputs = probe(small_corpus.images).numpy()
    np.testing.assert_allclose(first_bn.moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first_bn.moving_variance.numpy(), inputs.var(axis=(0, 1, 2)),
                               rtol=1e-3, atol=1e-6)


def test_recipe_is_typed_and_rejects_unknown_keys():
    assert Recipe.from_dict(Recipe().to_dict()) == Recipe()
    with pytest.raises(ValueError, match="Unknown recipe keys"):
        Recipe.from_dict({"iterations": 100, "learning_rte": 0.1})
    with pytest.raises(ValueError, match="positive integer"):
        Recipe(batch_size=0)
    with pytest.raises(ValueError, match="multiple of checkpoint_every"):
        Recipe(iterations=150, checkpoint_every=100)


def test_bad_training_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\[N, 64, 64, 1\]"):
        train_gan(*sketch_gan.build_gan("sketch"), np.zeros((20, 32, 32, 1), np.float32), TINY,
                  str(tmp_path))
    with pytest.raises(ValueError, match="at least batch_size"):
        train_gan(*sketch_gan.build_gan("sketch"), np.zeros((3, 64, 64, 1), np.float32), TINY,
                  str(tmp_path))

"""`zoo transfer`: fine-tune a shipped model on a new archive, refit, export, report."""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import zoo
from zoo.apps.cli import main
from zoo.loading import load_gan
from zoo.apps.transferring import (Archive, format_report, load_archive, record_transfer,
                              scored_images, transfer, transfer_recipe)
from zoo.recipes import PAPER

BASE = "sketch_gan_merchant"
TINY = {"batch_size": 8}  # with steps=2: two generator updates on batches of 8


def write_archive(folder, corpus):
    """One subfolder per identity (the label used to score retrieval), PNG scans of dark ink on
    light paper, and one corrupt file."""
    for index, (image, identity) in enumerate(zip(corpus.images, corpus.identities)):
        subfolder = folder / f"mark_{identity}"
        subfolder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - np.round(image[..., 0] * 255).astype(np.uint8)).save(
            subfolder / f"{index:03d}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def transferred(tmp_path_factory):
    from zoo.data.merchant_marks import make_corpus

    root = tmp_path_factory.mktemp("transfer")
    archive = write_archive(root / "new_archive", make_corpus(16, 4, seed=21))  # 64 images
    # zoo.transfer, the package-level entry point, stays callable beside zoo.apps.transferring.
    result = zoo.transfer(BASE, str(archive), steps=2, out=str(root / "models"),
                          run_dir=str(root / "run"), recipe_changes=TINY, progress=False)
    return types.SimpleNamespace(root=root, archive=archive, result=result,
                                 images=load_archive(archive, progress=False).images)


def test_weights_move_away_from_the_pretrained_ones(transferred):
    result = transferred.result
    run_dir = transferred.root / "run"
    assert result.weights_path == str(run_dir / f"{result.encoder.name}.weights.h5")
    fine_tuned = load_gan(BASE, result.weights_path)
    for pretrained, tuned in zip(load_gan(BASE), fine_tuned):
        for before, after in zip(pretrained.trainable_weights, tuned.trainable_weights):
            change = np.abs(np.asarray(after) - np.asarray(before)).max()
            assert change > 1e-5, f"{after.path} did not train"
    # The encoder returned is the discriminator of that weights file.
    reloaded = zoo.load(BASE, weights_path=result.weights_path)
    np.testing.assert_allclose(result.encoder.encode(transferred.images),
                               reloaded.encode(transferred.images), atol=1e-6)


def test_batchnorm_statistics_are_those_of_the_new_archive(transferred):
    _, discriminator = load_gan(BASE, transferred.result.weights_path)
    _, shipped = load_gan(BASE)
    layers = [layer for layer in discriminator.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert layers
    first = layers[0]
    inputs = keras.Model(discriminator.input, first.input)(transferred.images).numpy()
    # Population statistics of the archive (up to float32 convolution round-off) ...
    np.testing.assert_allclose(np.asarray(first.moving_mean), inputs.mean(axis=(0, 1, 2)),
                               rtol=1e-3, atol=2e-4)
    np.testing.assert_allclose(np.asarray(first.moving_variance), inputs.var(axis=(0, 1, 2)),
                               rtol=1e-3, atol=2e-4)
    # ... not the shipped ones of the merchant corpus.
    assert not np.allclose(np.asarray(shipped.get_layer(first.name).moving_mean),
                           np.asarray(first.moving_mean), atol=1e-3)


def test_hash_head_is_refitted_on_the_archive(transferred):
    encoder = transferred.result.encoder
    shipped = zoo.load(BASE).hash_head
    assert encoder.hash_head.num_bits == shipped.num_bits == 64
    np.testing.assert_allclose(encoder.hash_head.mean,
                               encoder.encode(transferred.images).mean(axis=0), atol=1e-5)
    assert not np.allclose(encoder.hash_head.mean, shipped.mean, atol=1e-3)
    bits = encoder.hash(transferred.images).bits
    assert 0.2 < bits.mean() < 0.8


def test_exported_version_serves_the_returned_encoder(transferred):
    result = transferred.result
    name = f"{BASE}_new_archive"
    assert result.encoder.name == name and result.version == 1
    assert result.export_path == str(transferred.root / "models" / name / "1")
    loaded = tf.saved_model.load(result.export_path)
    images = transferred.images[:10]
    embedding = loaded.signatures["serving_default"](images=tf.constant(images))["embedding"]
    np.testing.assert_allclose(embedding.numpy(), result.encoder.encode(images), atol=1e-5)
    bits = loaded.signatures["hash"](images=tf.constant(images))["bits"].numpy()
    np.testing.assert_array_equal(bits, result.encoder.hash(images).bits)
    with open(os.path.join(result.export_path, "assets", "metadata.json")) as handle:
        metadata = json.load(handle)
    assert metadata["name"] == name and metadata["fine_tuned_from"] == BASE
    assert metadata["transfer"]["steps"] == 2 and "new_archive" in metadata["training_corpus"]


def test_report_scores_retrieval_before_and_after(transferred):
    report = transferred.result.report
    assert report["images"] == 64 and report["scored_images"] == 64
    assert report["labels"] == "subfolders" and report["steps"] == 2
    assert report["recipe"]["learning_rate"] == 2e-4 and report["recipe"]["batch_size"] == 8
    assert [os.path.basename(path) for path, _ in report["skipped"]] == ["broken.png"]
    assert set(report["retrieval"]) == {"before", "bn_refit", "after", "before_hash",
                                        "after_hash", "raw pixels"}
    for metrics in report["retrieval"].values():
        assert set(metrics) == {"P@8", "mAP", "R@1", "R@8"}
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    # Two small steps barely move the ranking; the label-free overlap says so.
    assert 0.5 < report["neighbour_overlap@8"] <= 1.0
    with open(transferred.root / "run" / "transfer.json") as handle:
        assert json.load(handle) == json.loads(json.dumps(report))
    text = format_report(report)
    assert "broken.png" in text and f"{BASE} (shipped)" in text
    assert f"{report['retrieval']['after']['P@8']:.3f}" in text


def test_rerun_resumes_from_the_checkpoint_and_exports_the_next_version(transferred, capsys):
    root = transferred.root
    log_before = (root / "run" / "log.csv").read_text()
    argv = ["transfer", BASE, str(transferred.archive), "--steps", "2", "--set", "batch_size=8",
            "--out", str(root / "models"), "--run-dir", str(root / "run")]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert "exported version 2" in output and "P@8" in output
    assert (root / "run" / "log.csv").read_text() == log_before  # no training step repeated
    second = tf.saved_model.load(str(root / "models" / f"{BASE}_new_archive" / "2"))
    embedding = second.signatures["serving_default"](images=tf.constant(transferred.images[:4]))
    np.testing.assert_allclose(embedding["embedding"].numpy(),
                               transferred.result.encoder.encode(transferred.images[:4]),
                               atol=1e-5)


def test_a_run_folder_of_another_transfer_is_not_resumed(transferred):
    with pytest.raises(ValueError, match="holds a transfer of sketch_gan_merchant"):
        transfer("thin_gan_merchant", str(transferred.archive), steps=2,
                 out=str(transferred.root / "models"), run_dir=str(transferred.root / "run"),
                 recipe_changes=TINY, progress=False)


def test_families_without_a_transfer_recipe_are_refused(tmp_path):
    from zoo.registry import REGISTRY
    from zoo.models import get_family

    assert BASE in REGISTRY and get_family(REGISTRY[BASE].family).transfer
    refused = [name for name, entry in REGISTRY.items() if not get_family(entry.family).transfer]
    assert refused  # the BinGAN families declare no transfer
    for name in refused:
        with pytest.raises(ValueError, match=f"is a {REGISTRY[name].family} model"):
            transfer(name, str(tmp_path), steps=2)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_steps_must_be_a_positive_integer(steps, tmp_path):
    with pytest.raises(ValueError, match="steps to be a positive integer"):
        transfer(BASE, str(tmp_path), steps=steps)


def test_bad_sources_and_models_are_refused(tmp_path, transferred):
    with pytest.raises(ValueError, match="Unknown model 'no_such_model'"):
        transfer("no_such_model", str(transferred.archive), steps=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No image files"):
        transfer(BASE, str(tmp_path / "empty"), steps=2)
    with pytest.raises(ValueError, match="folder of images or a named corpus"):
        transfer(BASE, str(tmp_path / "missing"), steps=2)
    with pytest.raises(ValueError, match="fewer than the batch size 128"):
        transfer(BASE, str(transferred.archive), steps=2, run_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="64-bit hash head needs at least 64"):
        one_mark = sorted(transferred.archive.glob("mark_*"))[0]  # 4 images
        transfer(BASE, str(one_mark), steps=2,
                 recipe_changes={"batch_size": 2}, run_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="a model name of letters"):
        transfer(BASE, str(transferred.archive), steps=2, name="../up", recipe_changes=TINY,
                 run_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="Version 1 of sketch_gan_merchant_new_archive already"):
        transfer(BASE, str(transferred.archive), steps=2, version=1, recipe_changes=TINY,
                 out=str(transferred.root / "models"), run_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="hash_bits to be a positive integer"):
        transfer(BASE, str(transferred.archive), steps=2, hash_bits=0)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["transfer", BASE, str(tmp_path / "empty"), "--steps", "5"]) == 2
    assert "No image files" in capsys.readouterr().err
    assert main(["transfer", BASE, str(tmp_path / "empty"), "--steps", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


def test_recipe_fits_the_step_count():
    recipe = transfer_recipe(PAPER, 250)
    assert recipe.iterations == 250 and recipe.learning_rate == 2e-4
    assert recipe.checkpoint_every == 50 and recipe.sample_every == 250
    tiny = transfer_recipe(PAPER, 3, {"batch_size": 4, "learning_rate": 1e-3})
    assert (tiny.iterations, tiny.checkpoint_every, tiny.sample_every) == (3, 3, 3)
    assert tiny.batch_size == 4 and tiny.learning_rate == 1e-3
    with pytest.raises(ValueError, match="not the recipe's iterations"):
        transfer_recipe(PAPER, 10, {"iterations": 20})
    with pytest.raises(ValueError, match="Unknown recipe keys"):
        transfer_recipe(PAPER, 10, {"batchsize": 20})


def test_flat_folders_have_no_labels_and_singletons_are_not_scored(tmp_path, small_corpus):
    for index, image in enumerate(small_corpus.images[:5]):
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(
            tmp_path / f"{index}.png")
    archive = load_archive(tmp_path, progress=False)
    assert archive.labels is None and len(archive.images) == 5
    assert scored_images(archive) is None
    labels = np.array([0] * 6 + [1] * 6 + [2])  # the last one has no match: not scored
    archive = Archive("a", "a", np.zeros((13, 64, 64, 1), np.float32), labels, "test")
    np.testing.assert_array_equal(scored_images(archive), np.arange(12))
    report = {"base": BASE, "name": "x", "steps": 1, "archive": "a", "images": 5,
              "train_seconds": 6.0, "skipped": [], "weights": "w.weights.h5",
              "neighbour_overlap@8": 0.9, "retrieval": {}, "hash_bits": 64}
    assert "retrieval not scored" in format_report(report)


def test_recorded_transfer_appears_in_models_md(transferred, results_dir):
    from zoo.apps import model_cards
    from zoo.apps.evaluation import results

    command = "zoo transfer sketch_gan_merchant new_archive --steps 2 --record"
    record_transfer(transferred.result.report, command)
    recorded = results.read("transfer")[command]
    assert recorded["retrieval"] == json.loads(json.dumps(transferred.result.report["retrieval"]))
    text = model_cards.render()
    assert "## Transfer to a new archive" in text and f"Command: `{command}`" in text
    after = transferred.result.report["retrieval"]["after"]["P@8"]
    assert f"| {BASE}_new_archive (fine-tuned, 2 steps) | {after:.3f} |" in text


def test_sketch_gan_plus_transfers_with_its_own_trainer_and_refits_its_whitening(
        transferred, tmp_path):
    plus = "sketch_gan_plus_merchant"
    result = transfer(plus, str(transferred.archive), steps=2, out=str(tmp_path / "models"),
                      run_dir=str(tmp_path / "run"), recipe_changes=TINY, progress=False)
    log = open(tmp_path / "run" / "log.csv").read().splitlines()
    assert "con_loss" in log[0].split(",")  # trained by the contrastive wrapper
    # The whitening is refitted on the archive: its embeddings are centred there ...
    features = result.encoder.feature_extractor(transferred.images).numpy()
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-3)
    # ... which the shipped whitening, fitted on the merchant training corpus, does not do.
    shipped = zoo.load(plus).feature_extractor(transferred.images).numpy()
    assert np.abs(shipped.mean(axis=0)).max() > 1e-2
    loaded = tf.saved_model.load(result.export_path)
    embedding = loaded.signatures["serving_default"](
        images=tf.constant(transferred.images[:6]))["embedding"]
    np.testing.assert_allclose(embedding.numpy(), result.encoder.encode(transferred.images[:6]),
                               atol=1e-5)

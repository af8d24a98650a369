"""The Apache Beam pipeline on the DirectRunner: a real exported SavedModel encodes image files
into shards equal to the in-process encoder's output; bad files land in the errors."""

import os
import shutil

import apache_beam  # noqa: F401  (the [beam] extra; .ci/run installs it)
import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.apps.beam_pipeline import (SHARD_PATTERN, SavedModelHandler, encode_files, read_errors,
                               read_shards)
from zoo.apps.cli import main
from zoo.data.images import load_image
from zoo.data.merchant_marks import make_corpus

MODEL = "thin_gan_merchant"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """An exported model and a folder of five scans (one in a subfolder) and three bad files."""
    root = tmp_path_factory.mktemp("beam")
    encoder = zoo.load(MODEL)
    model_dir = encoder.export(str(root / "models"), 1)
    scans = root / "scans"
    scans.mkdir()
    marks = make_corpus(5, 1, seed=4).images[..., 0]
    good = []
    for index, mark in enumerate(marks):
        ink_on_paper = (250 - 200 * mark).astype(np.uint8)  # dark ink on light paper
        image = Image.fromarray(ink_on_paper).resize((70 + 15 * index, 90))
        if index == 1:
            image = image.convert("RGB")
        folder = scans / "more" if index == 4 else scans  # a folder is read recursively
        folder.mkdir(exist_ok=True)
        path = folder / f"mark{index}.{'jpg' if index == 1 else 'png'}"
        image.save(path)
        good.append(str(path))
    (scans / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2)
    Image.fromarray(np.full((40, 50), 230, np.uint8)).save(scans / "blank.png")
    (scans / "empty.png").write_bytes(b"")
    return encoder, model_dir, scans, sorted(good)


@pytest.fixture(scope="module")
def encoded(archive, tmp_path_factory):
    _, model_dir, scans, _ = archive
    output = str(tmp_path_factory.mktemp("shards"))
    # Shards of two rows and batches of three: several shards, bad files inside batches.
    run = encode_files(model_dir, [str(scans / "*.*"), str(scans / "more" / "*.png")], output,
                       ["--runner=DirectRunner"], shard_size=2, batch_size=3)
    return run, output


def test_embeddings_and_codes_equal_the_in_process_encoder(archive, encoded):
    encoder, _, _, good = archive
    run, output = encoded
    assert (run.state, run.images_encoded, run.files_failed) == ("DONE", 5, 3)
    paths, embeddings, bits = read_shards(os.path.join(output, SHARD_PATTERN))
    assert list(paths) == good
    images = np.stack([load_image(path) for path in good])
    np.testing.assert_allclose(embeddings, encoder.encode(images), atol=1e-5)
    np.testing.assert_array_equal(bits, encoder.hash(images).bits)
    assert embeddings.dtype == np.float32 and bits.dtype == np.uint8 and bits.shape == (5, 64)


def test_bad_files_land_in_errors_and_shards_appear_whole(archive, encoded):
    _, _, scans, _ = archive
    run, output = encoded
    errors = {os.path.basename(error["path"]): error["error"] for error in read_errors(output)}
    assert set(errors) == {"corrupt.png", "blank.png", "empty.png"}
    assert errors["corrupt.png"].startswith("cannot decode")
    assert "no visible ink" in errors["blank.png"]
    assert errors["empty.png"] == "empty file"
    shards = [name for name in os.listdir(output) if name.endswith(".npz")]
    assert len(shards) == run.shards_written >= 3
    assert not [name for name in os.listdir(output) if name.startswith(".")]  # no temporaries


def test_the_cli_runs_the_same_pipeline_on_a_folder(archive, encoded, tmp_path, capsys):
    _, model_dir, scans, good = archive
    output = str(tmp_path / "shards")
    assert main(["beam", "encode", "--model-dir", model_dir, "--input", str(scans),
                 "--output", output, "--runner=DirectRunner", "--direct_num_workers=1"]) == 0
    assert "DONE: 5 images encoded, 3 files failed; shard files: 1" in capsys.readouterr().out
    paths, embeddings, bits = read_shards(output)
    first_paths, first_embeddings, first_bits = read_shards(encoded[1])
    assert list(paths) == good
    # batches may group differently between runs: float sums can differ in the last ulp
    np.testing.assert_allclose(embeddings, first_embeddings, atol=1e-6)
    np.testing.assert_array_equal(bits, first_bits)


def test_the_handler_isolates_a_bad_file_in_a_batch(archive):
    _, model_dir, scans, good = archive
    handler = SavedModelHandler(model_dir, max_batch_size=8)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 8}
    model = handler.load_model()
    batch = [open(good[0], "rb").read(), b"not an image", open(good[2], "rb").read()]
    results = handler.run_inference(batch, model)
    assert [sorted(result) for result in results] == [["bits", "embedding"], ["error"],
                                                      ["bits", "embedding"]]
    assert "expected a PNG, JPEG, BMP or GIF" in results[1]["error"]
    alone = handler.run_inference(batch[2:], model)[0]
    np.testing.assert_allclose(alone["embedding"], results[2]["embedding"], atol=1e-6)


def test_read_shards_keeps_each_path_once_and_refuses_mixed_models(encoded, tmp_path):
    _, output = encoded
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    first = sorted(name for name in os.listdir(copy) if name.endswith(".npz"))[0]
    shutil.copy(copy / first, copy / "embeddings-0000000000000000.npz")  # as a retry might
    paths, embeddings, _ = read_shards(str(copy))
    assert len(paths) == len(set(paths)) == 5
    with np.load(copy / first) as shard:
        other = dict(shard)
    other["model"] = np.array("sketch_gan_merchant/7")
    np.savez(copy / "embeddings-ffffffffffffffff.npz", **other)
    with pytest.raises(ValueError, match="different models"):
        read_shards(str(copy))
    with pytest.raises(ValueError, match="No shards match"):
        read_shards(str(tmp_path / "nothing-here-*.npz"))


def test_bad_arguments_fail_before_the_pipeline_runs(archive, tmp_path, capsys):
    _, model_dir, scans, _ = archive
    with pytest.raises(ValueError, match="No files match the input pattern"):
        encode_files(model_dir, str(scans / "*.tiff"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="Expected --model-dir to be an exported zoo SavedModel"):
        encode_files(str(scans), str(scans), str(tmp_path / "out"))
    assert main(["beam", "encode", "--model-dir", model_dir, "--input", str(scans / "*.gif"),
                 "--output", str(tmp_path / "out")]) == 2
    assert "No files match" in capsys.readouterr().err

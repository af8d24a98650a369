"""SavedModel export: signatures against the Keras encoder, in-graph preprocessing and input
checks, warmup requests, metadata, and atomic version directories."""

import io
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from export import export_encoder
from export import saved_model as saved_model_export
from zoo.data.images import load_image
from zoo.encoder import Encoder
from zoo.hashing import pack_bits
from zoo.models import sketch_gan

SIGNATURES = {
    "serving_default": ({"images"}, {"embedding"}),
    "hash": ({"images"}, {"bits", "codes_bytes"}),
    "encode_pixels": ({"pixels"}, {"embedding"}),
    "hash_pixels": ({"pixels"}, {"bits", "codes_bytes"}),
    "encode_images": ({"image_bytes"}, {"embedding"}),
    "hash_images": ({"image_bytes"}, {"bits", "codes_bytes"}),
}


def untrained_encoder(architecture, name=None):
    discriminator = sketch_gan.build_discriminator(architecture)
    return Encoder(name or f"untrained_{architecture}",
                   sketch_gan.build_feature_extractor(discriminator),
                   metadata={"training_corpus": "none (untrained test model)", "note": "test"})


@pytest.fixture(scope="module")
def hash_corpus():
    from zoo.data.merchant_marks import make_corpus

    return make_corpus(25, 4, seed=3)


@pytest.fixture(scope="module")
def encoders(hash_corpus):
    """Untrained sketch-GAN and thin-GAN encoders, each with a 64-bit ITQ hash head."""
    encoders = {}
    for architecture in ("sketch", "thin"):
        encoders[architecture] = untrained_encoder(architecture)
        encoders[architecture].fit_hash_head(hash_corpus.images, bits=64, seed=0)
    return encoders


@pytest.fixture(scope="module", params=["sketch", "thin"])
def exported(request, encoders, tmp_path_factory):
    """One export per architecture, and the SavedModel loaded back."""
    encoder = encoders[request.param]
    base_dir = tmp_path_factory.mktemp(f"models_{request.param}")
    path = encoder.export(str(base_dir), 1)
    return types.SimpleNamespace(encoder=encoder, base_dir=base_dir, path=path,
                                 loaded=tf.saved_model.load(path))


def png_bytes(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def as_uint8(image):
    return np.round(np.asarray(image) * 255).astype(np.uint8)


def call(loaded, signature, **inputs):
    return {key: value.numpy() for key, value in loaded.signatures[signature](**inputs).items()}


# ----------------------------------------------------------------------------- round trip


def test_layout_and_signature_defs(exported):
    assert exported.path == os.path.join(str(exported.base_dir), exported.encoder.name, "1")
    assert os.listdir(os.path.dirname(exported.path)) == ["1"]  # no temporary directory left
    for item in ("saved_model.pb", "variables", "assets/metadata.json",
                 "assets.extra/tf_serving_warmup_requests"):
        assert os.path.exists(os.path.join(exported.path, item)), item
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(exported.path, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    signature_defs = saved_model.meta_graphs[0].signature_def
    dim, bits = exported.encoder.embedding_dim, exported.encoder.hash_head.num_bits
    for name, (inputs, outputs) in SIGNATURES.items():
        signature = signature_defs[name]
        assert set(signature.inputs) == inputs and set(signature.outputs) == outputs, name
        assert signature.method_name == "tensorflow/serving/predict"
    images = signature_defs["serving_default"].inputs["images"]
    assert images.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in images.tensor_shape.dim] == [-1, 64, 64, 1]
    assert [d.size for d in signature_defs["hash"].outputs["bits"].tensor_shape.dim] == [-1, bits]
    assert signature_defs["hash"].outputs["bits"].dtype == tf.uint8.as_datatype_enum
    assert signature_defs["hash_images"].outputs["codes_bytes"].dtype == tf.string.as_datatype_enum
    embedding = signature_defs["encode_images"].outputs["embedding"]
    assert [d.size for d in embedding.tensor_shape.dim] == [-1, dim]


def test_signatures_match_the_keras_encoder(exported, small_corpus):
    images = small_corpus.images[:6]
    expected_embedding = exported.encoder.encode(images)
    expected_codes = exported.encoder.hash(images)
    embedding = call(exported.loaded, "serving_default", images=tf.constant(images))["embedding"]
    assert embedding.dtype == np.float32 and embedding.shape == expected_embedding.shape
    np.testing.assert_allclose(embedding, expected_embedding, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    codes = call(exported.loaded, "hash", images=tf.constant(images))
    assert codes["bits"].dtype == np.uint8 and codes["bits"].shape == (6, 64)
    np.testing.assert_array_equal(codes["bits"], expected_codes.bits)
    assert list(codes["codes_bytes"]) == [row.tobytes() for row in pack_bits(codes["bits"])]
    assert list(codes["codes_bytes"]) == [row.tobytes() for row in expected_codes.packed]


def test_pixel_signatures_equal_float_images_divided_by_255(exported, small_corpus):
    """uint8 pixels give, to the bit, what their float32 images / 255 give (the client sends
    uint8 images to these signatures)."""
    pixels = as_uint8(small_corpus.images[:5])
    pixels[0, :4, :, 0] = np.arange(256).reshape(4, 64)  # every value a pixel can have
    images = tf.constant(pixels.astype(np.float32) / np.float32(255))
    for pixel_signature, float_signature in (("encode_pixels", "serving_default"),
                                             ("hash_pixels", "hash")):
        got = call(exported.loaded, pixel_signature, pixels=tf.constant(pixels))
        want = call(exported.loaded, float_signature, images=images)
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_bytes_signatures_equal_the_python_path(exported, small_corpus):
    files = [png_bytes(as_uint8(image[..., 0])) for image in small_corpus.images[:3]]
    expected_images = np.stack([load_image(data) for data in files])
    image_bytes = tf.constant(files)
    embedding = call(exported.loaded, "encode_images", image_bytes=image_bytes)["embedding"]
    np.testing.assert_allclose(embedding, exported.encoder.encode(expected_images), atol=1e-5)
    codes = call(exported.loaded, "hash_images", image_bytes=image_bytes)
    np.testing.assert_array_equal(codes["bits"], exported.encoder.hash(expected_images).bits)
    assert list(codes["codes_bytes"]) == [row.tobytes() for row in pack_bits(codes["bits"])]


def test_light_scan_gives_the_embedding_of_its_dark_twin(exported, small_corpus):
    page = np.zeros((110, 150), np.float32)
    page[20:84, 30:94] = small_corpus.images[5, ..., 0]
    dark = png_bytes(as_uint8(page))  # strokes bright on a black page, gray PNG
    light = png_bytes(np.stack([as_uint8(1.0 - page)] * 3, axis=-1))  # dark ink, white, RGB
    embedding = call(exported.loaded, "encode_images", image_bytes=tf.constant([dark, light]))
    embedding = embedding["embedding"]
    assert float(embedding[0] @ embedding[1]) > 1 - 1e-4
    np.testing.assert_allclose(embedding[0], embedding[1], atol=1e-3)


# ----------------------------------------------------------------------------- in-graph preprocessing


def reference_preprocess(gray, size=64, margin=3):
    """The numpy + Pillow preprocessing the TensorFlow ops replaced (the resize filter aside)."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:
        gray, background = 1.0 - gray, 1.0 - background
    ink = np.clip(gray - background, 0.0, None)
    ink = ink / ink.max()
    rows = np.flatnonzero((ink > 0.5).any(axis=1))
    cols = np.flatnonzero((ink > 0.5).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = (size - 2 * margin) / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = np.asarray(Image.fromarray(crop.astype(np.float32)).resize(
        (new_width, new_height), Image.Resampling.BILINEAR))
    canvas = np.zeros((size, size), np.float32)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = resized
    return np.clip(canvas, 0.0, 1.0)


def test_tf_preprocessing_is_the_reference_algorithm(rng):
    from zoo.data.preprocess_tf import preprocess_image_tf

    for index in range(6):
        # Ink whose bounding box is 58 pixels high: no resampling, so results are identical.
        page = rng.uniform(0.0, 0.2, (90 + index, 120)).astype(np.float32)
        width = int(rng.integers(5, 58))
        top, left = int(rng.integers(0, 30)), int(rng.integers(0, 60))
        blob = rng.uniform(0.6, 1.0, (58, width)).astype(np.float32)
        blob[1:-1, 1:-1] *= rng.random((56, width - 2)) < 0.5
        page[top : top + 58, left : left + width] = blob
        page = 1.0 - page if index % 2 else page  # light paper is inverted
        np.testing.assert_allclose(preprocess_image_tf(page).numpy(),
                                   reference_preprocess(page), atol=1e-6)


def test_tf_preprocessing_is_close_to_pillow_resizing(small_corpus):
    from zoo.data.preprocess_tf import preprocess_image_tf

    for mark in small_corpus.images[:4, ..., 0]:
        big = np.asarray(Image.fromarray(mark).resize((180, 180), Image.Resampling.BILINEAR))
        page = np.ones((260, 300), np.float32)
        page[40:220, 60:240] = 1.0 - big  # dark ink on white, three times too large
        difference = np.abs(preprocess_image_tf(page).numpy() - reference_preprocess(page))
        assert difference.max() < 0.1 and difference.mean() < 0.005


def encoded(pixels, format, mode=None, **options):
    image = Image.fromarray(pixels)
    image = image.convert(mode) if mode else image
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def test_in_graph_decoding_matches_pillow(small_corpus):
    from zoo.data.preprocess_tf import decode_and_preprocess_tf

    page = np.ones((90, 120), np.float32)
    page[10:74, 30:94] = 1.0 - small_corpus.images[7, ..., 0]
    gray = as_uint8(page)
    rgba = np.zeros(gray.shape + (4,), np.uint8)
    rgba[..., 3] = 255 - gray  # black ink, transparent paper
    files = {
        "gray PNG": encoded(gray, "PNG"), "RGB PNG": encoded(gray, "PNG", "RGB"),
        "gray+alpha PNG": encoded(gray, "PNG", "LA"), "palette PNG": encoded(gray, "PNG", "P"),
        "transparent RGBA PNG": encoded(rgba, "PNG"),
        "16-bit PNG": encoded((page * 4095).astype(np.uint16), "PNG"),
        "gray JPEG": encoded(gray, "JPEG", quality=95),
        "RGB JPEG": encoded(gray, "JPEG", "RGB", quality=95),
        "BMP": encoded(gray, "BMP"), "RGB BMP": encoded(gray, "BMP", "RGB"),
        "GIF": encoded(gray, "GIF"),
    }
    expected = load_image(files["gray PNG"])[..., 0]
    for name, data in files.items():
        result = decode_and_preprocess_tf(tf.constant(data)).numpy()
        np.testing.assert_allclose(result, load_image(data)[..., 0], atol=2e-3, err_msg=name)
        if "JPEG" not in name:
            np.testing.assert_allclose(result, expected, atol=5e-3, err_msg=name)  # 8-bit steps


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("signature, inputs, error, message", [
    ("serving_default", {"images": tf.zeros([2, 64, 64])}, tf.errors.InvalidArgumentError,
     r"expected shape \[\?,64,64,1\]"),
    ("hash", {"images": tf.zeros([2, 32, 32, 1])}, tf.errors.InvalidArgumentError,
     r"expected shape \[\?,64,64,1\]"),
    ("serving_default", {"images": tf.zeros([2, 64, 64, 1], tf.int32)},
     tf.errors.InvalidArgumentError, "expected to be a float tensor"),
    ("hash", {"images": tf.zeros([2, 64, 64, 1], tf.uint8)}, tf.errors.InvalidArgumentError,
     "expected to be a float tensor"),
    ("serving_default", {"images": tf.zeros([0, 64, 64, 1])}, tf.errors.InvalidArgumentError,
     "expected at least one image"),
    ("hash", {"images": tf.fill([2, 64, 64, 1], np.nan)}, tf.errors.InvalidArgumentError,
     r"expected float32 `images` with values in \[0, 1\] \(no NaN"),
    ("serving_default", {"images": tf.fill([1, 64, 64, 1], 255.0)},
     tf.errors.InvalidArgumentError, r"values in \[0, 1\].*scale 0-255 data by 1/255"),
    ("encode_pixels", {"pixels": tf.zeros([2, 32, 32, 1], tf.uint8)},
     tf.errors.InvalidArgumentError, r"expected shape \[\?,64,64,1\]"),
    ("hash_pixels", {"pixels": tf.zeros([0, 64, 64, 1], tf.uint8)},
     tf.errors.InvalidArgumentError, "expected at least one image"),
    ("encode_pixels", {"pixels": tf.zeros([2, 64, 64, 1])}, tf.errors.InvalidArgumentError,
     "expected to be a uint8 tensor"),
    ("encode_images", {"image_bytes": tf.constant([b"not an image"])},
     tf.errors.InvalidArgumentError, "expected a PNG, JPEG, BMP or GIF file"),
    ("hash_images", {"image_bytes": tf.constant([b""])}, tf.errors.InvalidArgumentError,
     "expected a PNG, JPEG, BMP or GIF file"),
    ("hash_images", {"image_bytes": tf.constant([png_bytes(np.eye(40, dtype=np.uint8))[:60]])},
     tf.errors.InvalidArgumentError, "PNG"),  # truncated: the decoder's own message
    ("hash_images", {"image_bytes": tf.constant([], tf.string)}, tf.errors.InvalidArgumentError,
     "expected at least one image"),
    ("encode_images", {"image_bytes": tf.constant(png_bytes(np.full((30, 30), 255, np.uint8)))},
     tf.errors.InvalidArgumentError, r"expected shape \[\?\]"),
    ("encode_images", {"image_bytes": tf.constant([png_bytes(np.full((30, 30), 255, np.uint8))])},
     tf.errors.InvalidArgumentError, "no visible ink"),
])
def test_bad_inputs_fail_saying_what_is_expected(exported, signature, inputs, error, message):
    with pytest.raises(error, match=message):
        exported.loaded.signatures[signature](**inputs)


def test_restored_functions_check_their_input_specs(exported):
    with pytest.raises((TypeError, ValueError), match=r"shape=\(None, 64, 64, 1\), dtype=tf.float32"):
        exported.loaded.serving_default(tf.zeros([2, 64, 64], tf.float32))
    with pytest.raises((TypeError, ValueError), match="dtype=tf.float32"):
        exported.loaded.hash(tf.zeros([2, 64, 64, 1], tf.float64))


# ----------------------------------------------------------------------------- warmup, metadata


def test_warmup_requests_name_every_signature_and_run(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(exported.path, "assets.extra", "tf_serving_warmup_requests")
    logs = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
                for log in logs}
    assert set(requests) == set(SIGNATURES) and len(logs) == len(SIGNATURES)
    for name, request in requests.items():
        assert request.model_spec.name == exported.encoder.name
        inputs = {key: tf.constant(tf.make_ndarray(value)) for key, value in request.inputs.items()}
        assert set(inputs) == SIGNATURES[name][0]
        outputs = exported.loaded.signatures[name](**inputs)
        assert set(outputs) == SIGNATURES[name][1]
        assert all(value.shape[0] == 2 for value in outputs.values())


def test_metadata_asset(exported):
    path = os.path.join(exported.path, "assets", "metadata.json")
    with open(path) as handle:
        metadata = json.load(handle)
    encoder = exported.encoder
    assert metadata["name"] == encoder.name and metadata["version"] == 1
    assert metadata["embedding_dim"] == encoder.embedding_dim == 1024
    assert metadata["code_length"] == 64 and metadata["hash_head"]["method"] == "ITQ"
    assert metadata["training_corpus"] == "none (untrained test model)"
    assert metadata["note"] == "test"  # from encoder.metadata
    assert "Hamming" in metadata["similarity"] and "dot product" in metadata["similarity"]
    assert "invert" in metadata["preprocessing"]
    assert set(metadata["signatures"]) == set(SIGNATURES)
    for name, (inputs, outputs) in SIGNATURES.items():
        assert set(metadata["signatures"][name]["inputs"]) == inputs
        assert set(metadata["signatures"][name]["outputs"]) == outputs
    # A tracked asset: the loaded object knows where it is.
    asset_path = exported.loaded.metadata_file.asset_path.numpy().decode()
    assert os.path.samefile(asset_path, path)


def test_metadata_takes_the_registry_entry(exported):
    from zoo.registry import get_entry

    encoder = Encoder("sketch_gan_merchant", exported.encoder.feature_extractor,
                      entry=get_entry("sketch_gan_merchant"),
                      hash_head=exported.encoder.hash_head)
    metadata = saved_model_export.build_metadata(encoder, 3)
    assert metadata["training_corpus"] == "merchant_train" and metadata["version"] == 3
    assert "Creswell" in metadata["paper"] and metadata["code_length"] == 64


# ----------------------------------------------------------------------------- atomic versions


def test_refused_exports_leave_nothing_behind(tmp_path, encoders):
    encoder = encoders["sketch"]
    no_head = Encoder("no_head", encoder.feature_extractor)
    with pytest.raises(ValueError, match="no hash head.*fit_hash_head"):
        no_head.export(str(tmp_path / "models"), 1)
    for version in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="positive integer"):
            export_encoder(encoder, str(tmp_path / "models"), version)
    with pytest.raises(ValueError, match="becomes a directory"):
        export_encoder(Encoder("../escape", encoder.feature_extractor, hash_head=encoder.hash_head),
                       str(tmp_path / "models"), 1)
    assert not os.path.exists(tmp_path / "models")


def test_versions_are_written_and_replaced_atomically(tmp_path, encoders, monkeypatch):
    encoder = encoders["sketch"]
    first = export_encoder(encoder, str(tmp_path), 2, warmup=False)
    model_dir = os.path.dirname(first)
    assert first == os.path.join(str(tmp_path), encoder.name, "2")
    assert oct(os.stat(first).st_mode & 0o777) == oct(0o755)  # readable by a server
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        export_encoder(encoder, str(tmp_path), 2)
    assert os.listdir(model_dir) == ["2"]

    marker = os.path.join(first, "assets", "stale.txt")
    with open(marker, "w") as handle:
        handle.write("from the previous export")
    second = export_encoder(encoder, str(tmp_path), 2, overwrite=True, warmup=False)
    assert second == first and not os.path.exists(marker)
    assert os.listdir(model_dir) == ["2"]
    assert tf.saved_model.load(second).signatures["serving_default"] is not None

    def fails_half_way(encoder, directory, version, warmup):
        with open(os.path.join(directory, "saved_model.pb"), "w") as handle:
            handle.write("half written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(saved_model_export, "_write_saved_model", fails_half_way)
    before = sorted(os.listdir(second))
    with pytest.raises(RuntimeError, match="disk full"):  # a failed overwrite changes nothing
        export_encoder(encoder, str(tmp_path), 2, overwrite=True)
    assert os.listdir(model_dir) == ["2"] and sorted(os.listdir(second)) == before
    with pytest.raises(RuntimeError, match="disk full"):  # a failed new export leaves nothing
        export_encoder(encoder, str(tmp_path / "fresh"), 1)
    assert not os.path.exists(tmp_path / "fresh")


@pytest.mark.parametrize("exchange_supported", [True, False])
def test_publish_replaces_a_version_in_one_step(tmp_path, monkeypatch, exchange_supported):
    if not exchange_supported:
        monkeypatch.setattr(saved_model_export, "_exchange", lambda first, second: False)
    model_dir = tmp_path / "model"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "old.txt").write_text("old")
    staging = model_dir / ".1.incomplete-x"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    with pytest.raises(ValueError, match="already exists"):
        saved_model_export._publish(str(staging), str(model_dir / "1"), overwrite=False)
    saved_model_export._publish(str(staging), str(model_dir / "1"), overwrite=True)
    assert os.listdir(model_dir) == ["1"] and os.listdir(model_dir / "1") == ["new.txt"]


# ----------------------------------------------------------------------------- shipped models


@pytest.mark.parametrize("name", __import__("zoo.registry").registry.shipped_names())
def test_every_shipped_model_round_trips_through_its_savedmodel(name, tmp_path, small_corpus):
    import zoo

    encoder = zoo.load(name)
    bits = zoo.registry.get_entry(name).published["hash_head"]["bits"]
    assert encoder.hash_head is not None and encoder.hash_head.num_bits == bits
    loaded = tf.saved_model.load(encoder.export(str(tmp_path), 1))
    images = tf.image.resize(small_corpus.images[:6], (encoder.image_size,) * 2).numpy()
    embedding = call(loaded, "serving_default", images=tf.constant(images))["embedding"]
    np.testing.assert_allclose(embedding, encoder.encode(images), atol=1e-5)
    hashed = call(loaded, "hash", images=tf.constant(images))
    codes = encoder.hash(images)
    np.testing.assert_array_equal(hashed["bits"], codes.bits)
    assert [bytes(row) for row in codes.packed] == list(hashed["codes_bytes"])
    metadata = json.loads(open(os.path.join(tmp_path, name, "1", "assets",
                                            "metadata.json")).read())
    assert metadata["name"] == name and metadata["code_length"] == bits


def test_zoo_export_command_writes_a_version_saved_model_cli_can_read(tmp_path, capsys):
    import subprocess
    import sys

    from zoo.apps.cli import main

    assert main(["export", "thin_gan_merchant", "--out", str(tmp_path), "--version", "3"]) == 0
    path = tmp_path / "thin_gan_merchant" / "3"
    assert (path / "saved_model.pb").exists()
    assert main(["export", "thin_gan_merchant", "--out", str(tmp_path), "--version", "3"]) == 2
    assert "already exists" in capsys.readouterr().err
    shown = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli",
                            "show", "--dir", str(path), "--all"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for signature, (inputs, outputs) in SIGNATURES.items():
        assert f"signature_def['{signature}']" in shown.stdout
        for key in inputs | outputs:
            assert f"['{key}']" in shown.stdout

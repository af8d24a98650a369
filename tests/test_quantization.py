"""int8 encoding (zoo.quantization, precision="int8"): the layer computes the documented quantised
arithmetic, and sketch-GAN+'s int8 encoders stay within the documented tolerance of float32, in
process and exported."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.common import test_images as merchant_marks  # renamed: not a test
from zoo.encoder import INT8_TOLERANCE
from zoo.precision import native_int8
from zoo.quantization import QuantizedConvLeakyReLU, int8_available, quantize_kernel

pytestmark = pytest.mark.skipif(
    not int8_available(), reason="this TensorFlow has no oneDNN int8 convolution; the zoo's "
                                 "tensorflow-cpu wheel has it, so CI runs these")

MODEL = "sketch_gan_plus_merchant"


def test_kernels_are_rounded_per_output_channel():
    kernel = np.random.default_rng(0).standard_normal((5, 5, 3, 4)).astype(np.float32)
    kernel[..., 1] *= 100.0  # one channel's scale must not coarsen the others
    kernel[..., 3] = 0.0
    quantized, ranges = quantize_kernel(kernel)
    assert quantized.dtype == np.int8 and np.abs(quantized).max() == 127
    np.testing.assert_allclose(ranges[:3], np.abs(kernel[..., :3]).max(axis=(0, 1, 2)))
    assert not quantized[..., 3].any() and ranges[3] > 0
    error = np.abs(quantized * (ranges / 127) - kernel).max(axis=(0, 1, 2))
    assert np.all(error <= ranges / 254 + 1e-6)


def _reference(x, kernel, bias, input_range, output_range, strides, padding):
    """The module docstring's arithmetic in float64 (exact on these integers)."""
    x8 = np.clip(np.round(x / (input_range / 127)), -127, 127)
    kernel8, ranges = quantize_kernel(kernel)
    sums = tf.nn.conv2d(x8.astype(np.float64), kernel8.astype(np.float64), strides,
                        padding.upper()).numpy()
    pre = sums * (input_range / 127) * (ranges / 127) + bias
    y8 = np.clip(np.round(pre / (output_range / 127)), -127, 127)
    y = y8 * (output_range / 127)
    return np.where(y > 0, y, 0.2 * y)


@pytest.mark.parametrize("strides, padding", [(2, "same"), (1, "valid")])
def test_the_layer_computes_the_quantised_convolution(strides, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 16, 16, 8)).astype(np.float32)
    kernel = (0.2 * rng.standard_normal((5, 5, 8, 16))).astype(np.float32)
    bias = (0.1 * rng.standard_normal(16)).astype(np.float32)
    input_range = 2.0  # below max |x|: inputs beyond it are clipped, as documented
    float_pre = tf.nn.conv2d(x, kernel, strides, padding.upper()).numpy() + bias
    output_range = float(np.abs(float_pre).max())
    layer = QuantizedConvLeakyReLU(kernel, bias, input_range, output_range, strides=strides,
                                   padding=padding)
    expected = _reference(x, kernel, bias, input_range, output_range, strides, padding)
    got = layer(tf.constant(x)).numpy()  # eager: the layer traces its graph
    assert got.shape == expected.shape == tuple(layer.compute_output_shape(x.shape))
    step = output_range / 127
    if native_int8() and "ONEDNN_MAX_CPU_ISA" not in os.environ:
        # VNNI: the documented arithmetic (oneDNN rounds in float32: a sum that lands on a half
        # step may round either way; measured: every output equal).
        assert np.abs(got - expected).max() <= step * 1.0001
        assert np.mean(np.isclose(got, expected, atol=step * 1e-3)) > 0.999
    else:  # halved kernels (module docstring); measured with ONEDNN_MAX_CPU_ISA=AVX512_CORE
        assert np.abs(got - expected).max() <= 2 * step * 1.0001
        assert np.abs(got - expected).mean() <= 0.35 * step
    graph = tf.function(lambda images: layer(images))(tf.constant(x)).numpy()
    np.testing.assert_array_equal(graph, got)
    # And it is the float convolution, up to the quantisation (and the clipping of |x| > 2).
    float_out = np.where(float_pre > 0, float_pre, 0.2 * float_pre)
    assert np.corrcoef(got.ravel(), float_out.ravel())[0, 1] > 0.99


def test_the_layer_rejects_uncalibrated_ranges_and_serialisation():
    kernel = np.ones((3, 3, 1, 2), np.float32)
    with pytest.raises(ValueError, match="positive calibrated ranges"):
        QuantizedConvLeakyReLU(kernel, np.zeros(2), 0.0, 1.0)
    with pytest.raises(NotImplementedError, match="export a SavedModel"):
        QuantizedConvLeakyReLU(kernel, np.zeros(2), 1.0, 1.0).get_config()


def _published_int8():
    from zoo.loading import has_int8_encoder
    from zoo.registry import REGISTRY

    return sorted(name for name, entry in REGISTRY.items()
                  if entry.published and has_int8_encoder(name))


@pytest.mark.parametrize("name", _published_int8())
def test_int8_encoders_stay_within_the_documented_tolerance(name):
    import zoo

    reference, fast = zoo.load(name), zoo.load(name, precision="int8")
    assert fast.precision == "int8" and "int8" in repr(fast)
    images = merchant_marks(256, seed=1)
    expected, got = reference.encode(images), fast.encode(images)
    assert got.dtype == np.float32 and got.shape == expected.shape
    min_cosine, bit_agreement = INT8_TOLERANCE["float"]
    assert np.sum(expected * got, axis=1).min() >= min_cosine
    assert np.mean(reference.hash(images).bits == fast.hash(images).bits) >= bit_agreement
    # Really int8: further from float32 than bfloat16 is.
    bfloat16 = zoo.load(name, precision="bfloat16").encode(images)
    assert np.sum(expected * got, axis=1).min() < np.sum(expected * bfloat16, axis=1).min()


def test_an_int8_embedding_does_not_depend_on_its_batch():
    import zoo

    encoder = zoo.load(MODEL, precision="int8")
    images = merchant_marks(40, seed=2)
    together = encoder.encode(images, batch_size=16)
    np.testing.assert_array_equal(encoder.encode(images[7:8]), together[7:8])
    np.testing.assert_array_equal(encoder.encode(images[::-1])[::-1], together)


def test_calibration_images_set_the_ranges():
    import zoo

    images = merchant_marks(8, seed=4)
    default = zoo.load(MODEL, precision="int8", with_hash_head=False)
    dim = zoo.load(MODEL, precision="int8", with_hash_head=False,
                   calibration_images=0.25 * merchant_marks(64, seed=5))
    ranges = [dim.feature_extractor.get_layer(f"{block}_int8").input_range
              for block in ("d1", "d2", "d3")]
    assert ranges < [default.feature_extractor.get_layer(f"{block}_int8").input_range
                     for block in ("d1", "d2", "d3")]
    assert not np.array_equal(default.encode(images), dim.encode(images))


def test_int8_is_refused_where_there_is_no_int8_path():
    import zoo
    from zoo.loading import has_int8_encoder

    assert has_int8_encoder(MODEL) and not has_int8_encoder("thin_gan_merchant")
    with pytest.raises(ValueError, match="sketch_gan_plus family"):
        zoo.load("thin_gan_merchant", precision="int8")
    with pytest.raises(ValueError, match="calibration_images are for precision 'int8'"):
        zoo.load(MODEL, calibration_images=merchant_marks(4, seed=6))


def test_an_int8_export_answers_like_the_int8_encoder(tmp_path):
    import zoo

    encoder = zoo.load(MODEL, precision="int8")
    path = encoder.export(str(tmp_path), 1)
    with open(os.path.join(path, "assets", "metadata.json")) as handle:
        assert json.load(handle)["precision"] == "int8"
    images = merchant_marks(6, seed=3)
    loaded = tf.saved_model.load(path)
    embedding = loaded.signatures["serving_default"](images=tf.constant(images))["embedding"]
    np.testing.assert_array_equal(embedding.numpy(), encoder.encode(images))
    pixels = np.round(images * 255).astype(np.uint8)
    codes = loaded.signatures["hash_pixels"](pixels=tf.constant(pixels))
    np.testing.assert_array_equal(codes["bits"].numpy(), encoder.hash(pixels).bits)


def test_the_zoos_server_serves_an_int8_export(tmp_path):
    """Over gRPC, as the client sends them (uint8 pixels and float32 images), the served int8
    model answers like the in-process int8 encoder. (TF Serving needs its oneDNN build for this
    op: README, Serving.)"""
    import zoo
    from benchmarks.common import model_config
    from serving.client import EncoderClient
    from serving.launch import start_server

    encoder = zoo.load(MODEL, precision="int8")
    encoder.export(str(tmp_path), 1)
    config = tmp_path / "models.config"
    config.write_text(model_config(MODEL, tmp_path / MODEL, labels={"stable": 1}))
    server = start_server("python", str(config), {MODEL: [1]})
    try:
        images = merchant_marks(5, seed=9)
        pixels = np.round(images * 255).astype(np.uint8)
        with EncoderClient(server.target, MODEL, timeout=60) as client:
            expected = encoder.encode(pixels)
            np.testing.assert_allclose(client.encode(pixels), expected, atol=1e-6)
            np.testing.assert_allclose(client.encode(pixels.astype(np.float32) / 255), expected,
                                       atol=1e-6)
            np.testing.assert_array_equal(client.hash(pixels).bits, encoder.hash(pixels).bits)
    finally:
        server.stop()


def test_calibrated_ranges_are_exact_percentiles_of_the_magnitudes():
    import keras

    from zoo.quantization import calibrate_ranges

    images = np.random.default_rng(7).standard_normal((300, 8, 8, 1)).astype(np.float32)
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, {"x": inputs, "twice": keras.layers.Rescaling(-2.0)(inputs)})
    magnitudes = np.abs(images).ravel()
    for percentile in (100, 99.99, 99.0):
        ranges = calibrate_ranges(model, images, batch_size=64, percentile=percentile)
        keep = int(magnitudes.size * (1 - percentile / 100)) + 1
        expected = np.sort(magnitudes)[-keep]  # the smallest of the `keep` largest
        assert ranges["x"] == pytest.approx(expected, rel=1e-6)
        assert ranges["twice"] == pytest.approx(2 * expected, rel=1e-6)
    assert calibrate_ranges(model, images, percentile=100)["x"] == magnitudes.max()
    with pytest.raises(ValueError, match="percentile in"):
        calibrate_ranges(model, images, percentile=0)

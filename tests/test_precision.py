"""bfloat16 encoding (zoo.precision): the fast path gives the float32 path's answers within the
documented tolerance, for every shipped entry, in-process, exported, and in an index (which keeps
int8 too; int8 itself: test_quantization.py)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from test_index import write_archive
from zoo.encoder import BFLOAT16_TOLERANCE
from zoo.machine import cpu_flags, machine_description
from zoo.precision import CHOICES, keras_policy, native_bfloat16, resolve
from zoo.quantization import int8_available

MODEL = "thin_gan_merchant"


def test_precision_choices_and_the_cpu_check(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 fma\n")
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(str(cpuinfo))
    assert cpu_flags(str(tmp_path / "missing")) == set()
    assert ("AVX512-BF16" in machine_description()) == ("avx512_bf16" in cpu_flags())
    assert resolve("auto") == ("bfloat16" if native_bfloat16() else "float32")
    assert [resolve(name) for name in ("float32", "bfloat16", "int8")] == ["float32", "bfloat16",
                                                                          "int8"]
    assert resolve("auto") != "int8"  # int8 moves embeddings further: opt-in only
    assert keras_policy("bfloat16") == "mixed_bfloat16"  # weights stay float32
    assert keras_policy("mixed_bfloat16") == "mixed_bfloat16"  # recipes name policies
    assert keras_policy("int8") == "mixed_bfloat16"  # the layers it does not quantise
    with pytest.raises(ValueError, match="float32, bfloat16, int8, auto"):
        resolve("float16")
    assert CHOICES == ("float32", "bfloat16", "int8", "auto")


def _published():
    from zoo.registry import REGISTRY

    return sorted(name for name, entry in REGISTRY.items() if entry.published)


@pytest.mark.parametrize("name", _published())
def test_bfloat16_encoders_stay_within_the_documented_tolerance(name):
    import zoo
    from zoo.models import get_family

    reference, fast = zoo.load(name), zoo.load(name, precision="bfloat16")
    assert fast.precision == "bfloat16" and "bfloat16" in repr(fast)
    rng = np.random.default_rng(0)
    from zoo.data.merchant_marks import make_corpus

    images = np.asarray(make_corpus(64, 4, seed=1).images, np.float32).reshape(-1, 64, 64, 1)
    if reference.image_size != images.shape[1]:
        images = np.clip(tf.image.resize(images, [reference.image_size] * 2).numpy(), 0, 1)
    images = images[rng.permutation(len(images))]
    expected, got = reference.encode(images), fast.encode(images)
    assert got.dtype == np.float32 and got.shape == expected.shape
    kind = "sign" if get_family(reference.entry.family).hash_head == "sign" else "float"
    min_cosine, bit_agreement = BFLOAT16_TOLERANCE[kind]
    assert np.sum(expected * got, axis=1).min() >= min_cosine
    assert np.mean(reference.hash(images).bits == fast.hash(images).bits) >= bit_agreement
    # The two paths really differ (the test would pass trivially otherwise).
    assert not np.array_equal(expected, got)


def test_a_bfloat16_export_answers_like_the_bfloat16_encoder(tmp_path):
    import zoo

    encoder = zoo.load(MODEL, precision="bfloat16")
    path = encoder.export(str(tmp_path), 1)
    with open(os.path.join(path, "assets", "metadata.json")) as handle:
        assert json.load(handle)["precision"] == "bfloat16"
    from zoo.data.merchant_marks import make_corpus

    images = np.asarray(make_corpus(4, 2, seed=3).images, np.float32).reshape(-1, 64, 64, 1)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    embedding = signature(images=tf.constant(images))["embedding"]
    assert embedding.dtype == tf.float32
    np.testing.assert_allclose(embedding.numpy(), encoder.encode(images), atol=1e-5)


@pytest.mark.parametrize("model, precision", [
    (MODEL, "bfloat16"),
    pytest.param("sketch_gan_plus_merchant", "int8", marks=pytest.mark.skipif(
        not int8_available(), reason="this TensorFlow has no oneDNN int8 convolution; the "
                                     "zoo's tensorflow-cpu wheel has it, so CI runs this"))])
def test_an_index_keeps_its_precision_for_adding_and_queries(model, precision, tmp_path):
    import zoo
    from zoo.data.images import load_image
    from zoo.data.merchant_marks import make_corpus
    from zoo.apps.index import Index

    corpus = make_corpus(num_identities=4, instances_per_identity=2, seed=11)
    folder = str(tmp_path / "scans")
    paths = write_archive(folder, corpus, 0, 5)
    index = Index.build(str(tmp_path / "fast.idx"), folder, models=(model,), progress=False,
                        precision=precision)
    assert index.model_info()["precision"] == precision
    paths += write_archive(folder, corpus, 5, 3)
    assert index.add(folder, progress=False).added == 3
    fast, reference = zoo.load(model, precision=precision), zoo.load(model)
    images = np.stack([load_image(path) for path in sorted(paths)])
    order = np.argsort([item.path for item in map(index.item, range(len(index)))])
    np.testing.assert_allclose(index.embeddings()[order], fast.encode(images), atol=1e-4)
    np.testing.assert_array_equal(index.codes()[order], fast.hash(images).packed)
    query = index.encode_query(paths[0])[0]
    np.testing.assert_allclose(query, fast.encode(images[:1])[0], atol=1e-4)
    assert not np.array_equal(query, reference.encode(images[:1])[0])

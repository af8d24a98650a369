"""The Encoder's input contract: what it accepts, and clear errors for what it refuses."""

import numpy as np
import pytest

from zoo.encoder import Encoder, validate_images
from zoo.models import sketch_gan


@pytest.fixture(scope="module")
def encoder():
    discriminator = sketch_gan.build_discriminator("sketch")
    return Encoder("untrained_sketch", sketch_gan.build_feature_extractor(discriminator))


def test_encode_is_l2_normalised_and_batch_independent(encoder, small_corpus):
    images = small_corpus.images[:10]
    embeddings = encoder.encode(images)
    assert embeddings.shape == (10, 1024) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([encoder.encode(images[i : i + 1]) for i in range(10)])
    np.testing.assert_allclose(one_by_one, embeddings, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(images, batch_size=3), embeddings, atol=1e-5)


def test_uint8_and_rank3_inputs_match_float(encoder, small_corpus):
    as_uint8 = np.round(small_corpus.images[:4] * 255).astype(np.uint8)
    expected = encoder.encode(as_uint8.astype(np.float32) / 255.0)
    np.testing.assert_allclose(encoder.encode(as_uint8), expected, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(as_uint8[..., 0]), expected, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 32, 32, 1), np.float32), "got shape"),
    (np.zeros((2, 64, 64, 3), np.float32), "got shape"),
    (np.zeros((64, 64), np.float32), "got shape"),
    (np.zeros((0, 64, 64, 1), np.float32), "empty batch"),
    (np.zeros((2, 64, 64, 1), np.int32), "dtype int32"),
    (np.array([["a"]]), "dtype"),
    (np.full((2, 64, 64, 1), np.nan, np.float32), "NaN"),
    (np.where(np.arange(2 * 64 * 64).reshape(2, 64, 64, 1) == 77, np.nan, 0.5), "NaN"),
    (np.where(np.arange(2 * 64 * 64).reshape(2, 64, 64, 1) == 5, -np.inf, 0.5), "infinite"),
    (np.full((2, 64, 64, 1), 255.0, np.float32), r"\[0, 1\]"),
])
def test_bad_input_is_refused_with_what_was_expected(encoder, bad, message):
    with pytest.raises(ValueError, match=message) as error:
        encoder.encode(bad)
    assert "Expected" in str(error.value) or "expected" in str(error.value)


def test_validate_accepts_a_list_of_images():
    images = [np.zeros((64, 64), np.uint8), np.full((64, 64), 255, np.uint8)]
    result = validate_images(images)
    assert result.shape == (2, 64, 64, 1) and result.max() == 1.0

"""Linear binary hashing: LSH, PCAH, ITQ, packed codes and Hamming distances."""

import numpy as np
import pytest

from zoo.hashing import (LinearHash, fit_itq, fit_lsh, fit_pcah, hamming_distances, pack_bits,
                         quantization_loss, top_k_overlap, unpack_bits)


@pytest.fixture(scope="module")
def correlated():
    """600 points in 32 dimensions with a decaying spectrum and a non-zero mean."""
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((600, 32)) * np.linspace(3.0, 0.1, 32)
    mixing, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    return (latent @ mixing + 5.0).astype(np.float32)


def test_itq_lowers_the_quantisation_loss_of_pcah(correlated):
    pcah = fit_pcah(correlated, 16)
    itq = fit_itq(correlated, 16, iterations=50, seed=0)
    assert itq.method == "ITQ" and pcah.method == "PCAH"
    assert quantization_loss(itq, correlated) < 0.95 * quantization_loss(pcah, correlated)
    # More iterations never hurt much: the alternation decreases the loss monotonically.
    few = fit_itq(correlated, 16, iterations=2, seed=0)
    assert quantization_loss(itq, correlated) <= quantization_loss(few, correlated) + 1e-6


def test_itq_rotation_is_orthogonal_and_projection_is_pca_times_rotation(correlated):
    pcah = fit_pcah(correlated, 16)
    itq = fit_itq(correlated, 16, seed=3)
    np.testing.assert_allclose(itq.mean, pcah.mean, atol=1e-5)
    rotation = pcah.projection.T.astype(np.float64) @ itq.projection
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(16), atol=1e-5)
    np.testing.assert_allclose(pcah.projection @ rotation, itq.projection, atol=1e-5)


def test_codes_are_balanced_and_deterministic(correlated):
    for linear_hash in (fit_itq(correlated, 16), fit_pcah(correlated, 16),
                        fit_lsh(correlated, 16, seed=0)):
        bits = linear_hash.bits(correlated)
        assert bits.dtype == np.uint8 and bits.shape == (600, 16)
        assert set(np.unique(bits)) <= {0, 1}
        assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.2), linear_hash
    np.testing.assert_array_equal(fit_itq(correlated, 16, seed=2).projection,
                                  fit_itq(correlated, 16, seed=2).projection)
    assert not np.allclose(fit_lsh(correlated, 8, seed=0).projection,
                           fit_lsh(correlated, 8, seed=1).projection)


def test_linear_hash_is_frozen_and_round_trips(correlated):
    itq = fit_itq(correlated, 12)
    assert itq.num_bits == 12 and itq.input_dim == 32
    assert itq.mean.dtype == np.float32 and itq.projection.dtype == np.float32
    with pytest.raises(ValueError):
        itq.mean[0] = 1.0  # read-only
    restored = LinearHash.from_dict(itq.to_dict())
    assert restored.method == "ITQ"
    np.testing.assert_array_equal(restored.bits(correlated), itq.bits(correlated))


def test_bits_are_the_sign_of_the_centred_projection():
    linear_hash = LinearHash(np.array([1.0, 1.0]), np.array([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]))
    bits = linear_hash.bits(np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]]))
    np.testing.assert_array_equal(bits, [[1, 0, 1], [1, 1, 1], [0, 1, 0]])


@pytest.mark.parametrize("num_bits", [1, 7, 8, 9, 16, 64, 70])
def test_pack_bits_equals_numpy_packbits(num_bits, rng):
    bits = rng.integers(0, 2, (5, num_bits)).astype(np.uint8)
    packed = pack_bits(bits)
    assert packed.dtype == np.uint8 and packed.shape == (5, -(-num_bits // 8))
    np.testing.assert_array_equal(packed, np.packbits(bits, axis=1))
    np.testing.assert_array_equal(unpack_bits(packed, num_bits), bits)


def test_pack_bits_is_big_endian():
    np.testing.assert_array_equal(pack_bits([[1, 0, 0, 0, 0, 0, 0, 1, 1]]), [[0b10000001, 0b10000000]])


def test_hamming_distances_on_hand_computed_codes():
    queries = np.array([[0b00000000, 0b00000000], [0b11111111, 0b00000001]], np.uint8)
    database = np.array([[0b00000000, 0b00000000], [0b10100000, 0b00000011],
                         [0b11111111, 0b11111111]], np.uint8)
    distances = hamming_distances(queries, database)
    assert distances.dtype == np.int32
    np.testing.assert_array_equal(distances, [[0, 4, 16], [9, 7, 7]])


def test_hamming_distances_equal_counting_unpacked_bits(rng):
    bits = rng.integers(0, 2, (30, 37)).astype(np.uint8)
    expected = (bits[:, None, :] != bits[None, :, :]).sum(axis=-1)
    np.testing.assert_array_equal(hamming_distances(pack_bits(bits[:7]), pack_bits(bits)), expected[:7])


def test_top_k_overlap():
    rng = np.random.default_rng(4)
    embeddings = rng.standard_normal((80, 16)).astype(np.float32)
    # Codes that are the signs of the embeddings themselves follow the cosine neighbours well;
    # random codes do not.
    good = fit_itq(embeddings, 16).bits(embeddings)
    random_codes = rng.integers(0, 2, (80, 16)).astype(np.uint8)
    good_overlap = top_k_overlap(embeddings, good, k=8)
    random_overlap = top_k_overlap(embeddings, random_codes, k=8)
    assert 0.0 <= random_overlap < good_overlap <= 1.0
    assert random_overlap < 0.3 and good_overlap > 0.3
    # Three points on a line, codes that order them the same way: perfect overlap.
    line = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.3], [0.0, 1.0]])
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]], np.uint8)
    assert top_k_overlap(line, codes, k=1) == 1.0


@pytest.mark.parametrize("x, bits, message", [
    (np.zeros((10, 4)), 5, "bits <= D"),
    (np.random.default_rng(0).standard_normal((3, 8)), 4, "bits <= N"),
    (np.zeros(10), 1, "2-D"),
    (np.full((10, 4), np.nan), 2, "NaN"),
    (np.array([["a", "b"]]), 1, "dtype"),
    (np.zeros((10, 4)), 0, "positive integer"),
])
def test_bad_input_is_refused(x, bits, message):
    for fit in (fit_itq, fit_pcah, fit_lsh):
        with pytest.raises(ValueError, match=message):
            fit(x, bits)


def test_bad_codes_are_refused():
    with pytest.raises(ValueError, match="0/1"):
        pack_bits([[0, 2]])
    with pytest.raises(ValueError, match="2-D"):
        pack_bits([0, 1])
    with pytest.raises(ValueError, match="packed uint8"):
        hamming_distances(np.zeros((1, 2), np.int64), np.zeros((1, 2), np.uint8))
    with pytest.raises(ValueError, match="different lengths"):
        hamming_distances(np.zeros((1, 2), np.uint8), np.zeros((1, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        fit_itq(np.zeros((50, 8)), 4).bits(np.zeros((2, 7)))


# ----------------------------------------------------------------------------- the encoder's hash head


def test_encoder_hash_head(small_corpus):
    from zoo.encoder import Codes, Encoder
    from zoo.models import sketch_gan

    discriminator = sketch_gan.build_discriminator("thin")
    encoder = Encoder("untrained_thin", sketch_gan.build_feature_extractor(discriminator))
    with pytest.raises(ValueError, match="no hash head.*fit_hash_head"):
        encoder.hash(small_corpus.images[:2])
    head = encoder.fit_hash_head(small_corpus.images, bits=24, seed=1)
    assert encoder.hash_head is head and head.num_bits == 24 and head.method == "ITQ"
    assert "num_bits=24" in repr(encoder)
    codes = encoder.hash(small_corpus.images[:5])
    assert isinstance(codes, Codes)
    assert codes.bits.dtype == np.uint8 and codes.bits.shape == (5, 24)
    assert codes.packed.dtype == np.uint8 and codes.packed.shape == (5, 3)
    np.testing.assert_array_equal(codes.packed, np.packbits(codes.bits, axis=1))
    # The same bits as the numpy LinearHash on the embeddings (up to float round-off at 0).
    numpy_bits = head.bits(encoder.encode(small_corpus.images[:5]))
    assert np.mean(numpy_bits != codes.bits) < 0.01
    # Fitting on the embeddings makes Hamming neighbours follow cosine neighbours somewhat.
    overlap = top_k_overlap(encoder.encode(small_corpus.images), encoder.hash(small_corpus.images).bits)
    assert 0.0 < overlap <= 1.0
    # A head passed in must fit the embedding dimension.
    with pytest.raises(ValueError, match="1024-d"):
        Encoder("x", encoder.feature_extractor, hash_head=LinearHash(np.zeros(8), np.ones((8, 4))))
    same = Encoder("x", encoder.feature_extractor, hash_head=head, metadata={"training_corpus": "c"})
    np.testing.assert_array_equal(same.hash(small_corpus.images[:5]).bits, codes.bits)
    assert same.metadata == {"training_corpus": "c"}

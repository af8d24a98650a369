"""Learned code heads (issue 14, part 3): the losses on hand-computed cases, training that learns
what ITQ cannot, and a shipped learned head whose bits are the exported graph's bits."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.hashing import LinearHash, fit_itq
from zoo.training.code_head import (CodeHeadRecipe, bit_regulariser, distance_matching,
                                    neighbour_distillation, train_code_head)


def test_bit_regulariser_on_hand_computed_codes():
    # Balanced but fully correlated bits: batch means (0, 0); codes^T codes / 2 = [[1, 1], [1, 1]],
    # off-diagonal 1 in 2 of 4 entries -> mean square 0.5.
    marginal, correlation = bit_regulariser([[1.0, 1.0], [-1.0, -1.0]])
    assert float(marginal) == pytest.approx(0.0)
    assert float(correlation) == pytest.approx(0.5)
    # Decorrelated, but bit 0 constant: means (1, 0) -> ME 0.5; codes^T codes / 2 = I -> AC 0.
    marginal, correlation = bit_regulariser([[1.0, 1.0], [1.0, -1.0]])
    assert float(marginal) == pytest.approx(0.5)
    assert float(correlation) == pytest.approx(0.0)


def test_distance_matching_on_hand_computed_codes():
    codes = tf.constant([[1.0, 1.0], [1.0, -1.0]])  # code inner products / K = identity
    orthogonal = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    assert float(distance_matching(codes, orthogonal)) == pytest.approx(0.0)
    same = tf.constant([[1.0, 0.0], [1.0, 0.0]])  # cosines all 1: off-diagonal errors of 1
    assert float(distance_matching(codes, same)) == pytest.approx(0.5)


def test_neighbour_distillation_is_the_cross_entropy_of_softmax_neighbours():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((5, 4)).astype(np.float32)
    embeddings = rng.standard_normal((5, 3)).astype(np.float32)
    temperature = 0.5

    def neighbours(x):  # softmax over j != i of cosine / temperature
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        logits = x @ x.T / temperature
        np.fill_diagonal(logits, -np.inf)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    target, predicted = neighbours(embeddings), neighbours(codes)
    off = ~np.eye(5, dtype=bool)
    expected = -np.mean(np.sum(np.where(off, target * np.log(np.where(off, predicted, 1)), 0),
                               axis=1))
    value = float(neighbour_distillation(codes, embeddings, temperature))
    assert value == pytest.approx(expected, rel=1e-4)
    # The code that copies the embedding's neighbours scores the target's entropy, the minimum.
    assert float(neighbour_distillation(embeddings, embeddings, temperature)) < value


def _clusters_with_nuisance(count=480, groups=24, seed=0, views=4):
    """Embeddings whose identity lives in 4 low-variance dimensions and whose 12 high-variance
    dimensions are nuisance that every augmented view redraws (what ITQ's PCA keeps first)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % groups
    centres = rng.standard_normal((groups, 4)).astype(np.float32)

    def draw():
        signal = centres[labels] + 0.1 * rng.standard_normal((count, 4))
        nuisance = 3.0 * rng.standard_normal((count, 12))
        x = np.concatenate([signal, nuisance], axis=1).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(), np.stack([draw() for _ in range(views)], axis=1), labels


def _precision_at(bits, labels, k=5):
    signs = 2.0 * bits - 1.0
    scores = signs @ signs.T - 1e3 * np.eye(len(bits))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(labels[top] == labels[:, None]))


def test_a_learned_head_keeps_what_views_share_where_itq_keeps_variance():
    embeddings, views, labels = _clusters_with_nuisance()
    recipe = CodeHeadRecipe(bits=8, steps=300, batch_size=128, learning_rate=1e-2, views=4)
    logged = []
    head = train_code_head(embeddings, views, recipe, log=lambda step, losses: logged.append(
        losses["contrastive"]))
    itq = fit_itq(embeddings, 8, seed=0)
    assert isinstance(head, LinearHash) and head.kind == "learned" and head.num_bits == 8
    np.testing.assert_allclose(head.mean, itq.mean)  # the shipped head's form: same centring
    assert logged[-1] < logged[0]
    learned, baseline = _precision_at(head.bits(embeddings), labels), _precision_at(
        itq.bits(embeddings), labels)
    assert learned > 0.4 and learned > baseline + 0.3, (learned, baseline)
    balance = np.abs(head.bits(embeddings).mean(axis=0) - 0.5).mean()
    assert balance < 0.15  # BRE keeps bits balanced


def test_training_is_reproducible_and_refuses_mismatched_views():
    embeddings, views, _ = _clusters_with_nuisance(count=96, groups=8, views=2)
    recipe = CodeHeadRecipe(bits=4, steps=20, batch_size=32, views=2)
    first = train_code_head(embeddings, views, recipe)
    second = train_code_head(embeddings, views, recipe)
    np.testing.assert_array_equal(first.projection, second.projection)
    with pytest.raises(ValueError, match="views"):
        train_code_head(embeddings, views[:50], recipe)
    with pytest.raises(ValueError, match="at least 2 views"):
        train_code_head(embeddings, views[:, :1], recipe)


@pytest.mark.parametrize("changes, message", [
    ({"bits": 0}, "bits"), ({"views": 1}, "views >= 2"), ({"temperature": 0.0}, "temperature"),
    ({"lambda_bre": -1.0}, "lambda_bre"),
])
def test_recipe_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        CodeHeadRecipe(**changes)


def test_the_shipped_learned_heads_bits_are_the_exported_graphs_bits(tmp_path):
    import zoo
    from zoo.data.merchant_marks import make_corpus

    encoder = zoo.load("sketch_gan_plus_merchant")
    assert encoder.hash_head.kind == "learned"
    assert encoder.entry.published["hash_head"]["method"] == encoder.hash_head.method
    images = make_corpus(num_identities=6, instances_per_identity=2, seed=5).images
    path = encoder.export(str(tmp_path), 1)
    exported = tf.saved_model.load(path).signatures["hash"](images=tf.constant(images))
    codes = encoder.hash(images)
    np.testing.assert_array_equal(exported["bits"].numpy(), codes.bits)
    assert list(exported["codes_bytes"].numpy()) == [row.tobytes() for row in codes.packed]


def test_each_entry_fits_the_kind_of_head_it_ships():
    """Refitting (`zoo hash-head`, `zoo transfer`) gives an entry with a code-head recipe a
    learned head and the other float encoders PCA + ITQ, on whatever images it is given."""
    import dataclasses

    import zoo
    from zoo.data.merchant_marks import make_corpus
    from zoo.models import get_family
    from zoo.training.code_head import ITQ_METHOD, fit_entry_head

    images = make_corpus(num_identities=16, instances_per_identity=4, seed=8).images
    learned = zoo.load("sketch_gan_plus_merchant", with_hash_head=False)
    small = CodeHeadRecipe(steps=30, batch_size=32, views=2)
    learned.entry = dataclasses.replace(learned.entry, code_head=small)
    head, method = fit_entry_head(learned, get_family("sketch_gan_plus"), images, bits=16)
    assert head.kind == "learned" and head.num_bits == 16 and method == head.method
    assert "30 Adam steps" in method

    itq_encoder = zoo.load("thin_gan_merchant", with_hash_head=False)
    head, method = fit_entry_head(itq_encoder, get_family("sketch_gan"), images, bits=16)
    assert head.kind == "ITQ" and method == ITQ_METHOD
    np.testing.assert_allclose(head.projection, fit_itq(itq_encoder.encode(images), 16).projection,
                               atol=1e-5)

"""Tests for the procedural merchant-mark corpus (zoo/data/merchant_marks.py)."""

import time

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from zoo.data import merchant_marks as mm

NUM_IDENTITIES = 30
INSTANCES = 4


@pytest.fixture(scope="module")
def corpus():
    return mm.make_corpus(num_identities=NUM_IDENTITIES, instances_per_identity=INSTANCES, seed=0)


def _cosine_similarities(images: np.ndarray, blur: float = 1.0) -> np.ndarray:
    """Cosine similarity of every pair of images after a slight blur (pixel tolerance)."""
    blurred = gaussian_filter(images[..., 0], sigma=(0, blur, blur))
    features = blurred.reshape(len(images), -1)
    features = features / np.linalg.norm(features, axis=1, keepdims=True)
    return features @ features.T


def _ink_box(image: np.ndarray, threshold: float = 0.5):
    """(top, bottom, left, right) of the pixels above threshold, inclusive."""
    rows = np.flatnonzero((image > threshold).any(axis=1))
    columns = np.flatnonzero((image > threshold).any(axis=0))
    return rows[0], rows[-1], columns[0], columns[-1]


# --- the part vocabulary and identities ----------------------------------------------------


def test_parts_vocabulary_is_stable_and_covers_the_spec():
    assert len(mm.PARTS) == len(set(mm.PARTS))
    for part in ("staff", "double_staff", "cross_bar", "double_cross", "triple_cross", "saltire",
                 "sign_of_four", "mirrored_four", "inverted_v_foot", "w_foot", "forked_foot",
                 "hooked_foot", "base_bar", "orb", "circle", "heart", "triangle", "shield", "pennant",
                 "hook", "chevron", "initials"):
        assert part in mm.PARTS
    assert len(mm.LETTERS) >= 12
    assert all(f"letter_{letter}" in mm.PARTS for letter in mm.LETTERS)


def test_identities_are_reproducible_and_use_known_parts():
    for identity_id in range(60):
        identity = mm.make_identity(identity_id)
        assert identity == mm.make_identity(identity_id)
        assert identity.id == identity_id
        assert identity.parts == tuple(sorted(set(identity.parts)))
        assert set(identity.parts) <= set(mm.PARTS)
        assert set(identity.stroke_parts) <= set(identity.parts)
        assert len(identity.strokes) == len(identity.stroke_parts) > 0
        hash(identity)  # frozen and hashable


def test_identities_vary_in_composition_and_use_the_whole_vocabulary():
    identities = [mm.make_identity(i) for i in range(400)]
    assert len({identity.parts for identity in identities}) > 300
    used = {part for identity in identities for part in identity.parts}
    structural = [part for part in mm.PARTS if not part.startswith("letter_")]
    assert set(structural) <= used
    assert len(used - set(structural)) >= 12  # many different initials


def test_shared_parts_counts_common_names():
    from zoo.apps.evaluation.retrieval import shared_parts

    assert shared_parts(("staff", "orb", "w_foot"), ("orb", "staff", "heart")) == 2
    assert shared_parts(("staff",), ("heart",)) == 0
    identity = mm.make_identity(7)
    assert shared_parts(identity.parts, identity.parts) == len(set(identity.parts))


# --- single instances ------------------------------------------------------------------------


def test_draw_instance_shape_range_and_determinism():
    identity = mm.make_identity(3)
    image = mm.draw_instance(identity, np.random.default_rng(0))
    assert image.shape == (64, 64) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image.max() == pytest.approx(1.0)  # strokes are full ink
    assert np.median(image) < 0.1  # on a dark ground
    np.testing.assert_array_equal(image, mm.draw_instance(identity, np.random.default_rng(0)))
    other_hand = mm.draw_instance(identity, np.random.default_rng(1))
    assert np.abs(image - other_hand).max() > 0.5


@pytest.mark.parametrize("size", [16, 32, 96])
def test_draw_instance_other_sizes(size):
    image = mm.draw_instance(mm.make_identity(11), np.random.default_rng(0), size=size)
    assert image.shape == (size, size) and image.dtype == np.float32
    top, bottom, left, right = _ink_box(image)
    assert max(bottom - top, right - left) + 1 >= 0.75 * size


# --- corpora ---------------------------------------------------------------------------------


def test_corpus_shapes_order_and_metadata(corpus):
    count = NUM_IDENTITIES * INSTANCES
    assert len(corpus) == count
    assert corpus.images.shape == (count, 64, 64, 1) and corpus.images.dtype == np.float32
    assert corpus.images.min() >= 0.0 and corpus.images.max() <= 1.0
    assert corpus.identities.shape == (count,) and corpus.identities.dtype == np.int64
    assert len(corpus.parts) == count
    # identity-major: each identity's instances are consecutive
    np.testing.assert_array_equal(corpus.identities, np.repeat(np.unique(corpus.identities), INSTANCES))
    assert len(np.unique(corpus.identities)) == NUM_IDENTITIES
    for identity_id, parts in zip(corpus.identities, corpus.parts):
        assert parts == mm.make_identity(int(identity_id)).parts
        assert set(parts) <= set(mm.PARTS)


def test_corpus_is_deterministic(corpus):
    again = mm.make_corpus(num_identities=NUM_IDENTITIES, instances_per_identity=INSTANCES, seed=0)
    np.testing.assert_array_equal(corpus.images, again.images)
    np.testing.assert_array_equal(corpus.identities, again.identities)
    assert corpus.parts == again.parts


def test_other_seed_gives_disjoint_identities_and_other_images(corpus):
    other = mm.make_corpus(num_identities=NUM_IDENTITIES, instances_per_identity=INSTANCES, seed=1)
    assert not set(corpus.identities.tolist()) & set(other.identities.tolist())
    assert np.abs(corpus.images - other.images).mean() > 0.05


def test_instances_of_one_identity_differ(corpus):
    images = corpus.images.reshape(NUM_IDENTITIES, INSTANCES, 64, 64)
    for group in images:
        for a in range(INSTANCES):
            for b in range(a + 1, INSTANCES):
                assert np.abs(group[a] - group[b]).max() > 0.5


def test_instances_are_closer_to_their_identity_than_to_others(corpus):
    similarity = _cosine_similarities(corpus.images)
    same = corpus.identities[:, None] == corpus.identities[None, :]
    itself = np.eye(len(corpus), dtype=bool)
    within = similarity[same & ~itself].mean()
    between = similarity[~same].mean()
    assert within > between + 0.1
    # and one identity at a time, for nearly every identity
    closer = []
    for identity_id in np.unique(corpus.identities):
        mine = corpus.identities == identity_id
        closer.append(similarity[np.ix_(mine, mine)][~np.eye(INSTANCES, dtype=bool)].mean()
                      > similarity[np.ix_(mine, ~mine)].mean())
    assert np.mean(closer) >= 0.9
    # nearest neighbour retrieval on blurred pixels is already well above chance (1 / 30)
    np.fill_diagonal(similarity, -np.inf)
    nearest_is_same = corpus.identities[similarity.argmax(axis=1)] == corpus.identities
    assert nearest_is_same.mean() > 0.5


def test_marks_are_tightly_cropped_and_centred(corpus):
    for image in corpus.images[..., 0]:
        top, bottom, left, right = _ink_box(image)
        height, width = bottom - top + 1, right - left + 1
        assert max(height, width) >= 50
        if height >= width:
            assert abs((top + bottom + 1) / 2 - 32) <= 3
        else:
            assert abs((left + right + 1) / 2 - 32) <= 3


def test_default_corpus_size_is_the_papers():
    # Cheap check of the defaults without drawing 2,000 images.
    import inspect

    defaults = inspect.signature(mm.make_corpus).parameters
    assert defaults["num_identities"].default * defaults["instances_per_identity"].default == 2000
    assert defaults["size"].default == 64


def test_corpus_is_fast():
    start = time.perf_counter()
    mm.make_corpus(num_identities=40, instances_per_identity=5, seed=3)
    assert time.perf_counter() - start < 5.0  # ~0.3 s on one idle core; 2,000 images take ~3 s


# --- streams ---------------------------------------------------------------------------------


def test_stream_yields_fresh_batches():
    batches = mm.stream(batch_size=12, seed=5)
    first, second = next(batches), next(batches)
    for batch in (first, second):
        assert batch.shape == (12, 64, 64, 1) and batch.dtype == np.float32
        assert batch.min() >= 0.0 and batch.max() <= 1.0
    assert np.abs(first - second).mean() > 0.05
    assert np.abs(first[0] - first[1]).mean() > 0.02
    np.testing.assert_array_equal(first, next(mm.stream(batch_size=12, seed=5)))


def test_stream_over_fixed_identities_and_other_size():
    batch = next(mm.stream(batch_size=10, seed=2, num_identities=3, size=32))
    assert batch.shape == (10, 32, 32, 1)
    # ten drawings of three identities: every image has a near twin in the batch
    similarity = _cosine_similarities(batch)
    np.fill_diagonal(similarity, -np.inf)
    assert similarity.max(axis=1).min() > 0.5


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    dict(num_identities=0),
    dict(instances_per_identity=0),
    dict(size=8),
    dict(seed=-1),
    dict(num_identities=2.5),
])
def test_make_corpus_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        mm.make_corpus(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(batch_size=0),
    dict(batch_size=4, num_identities=0),
    dict(batch_size=4, size=10),
    dict(batch_size=4, seed=-2),
])
def test_stream_rejects_bad_arguments_immediately(kwargs):
    with pytest.raises(ValueError):
        mm.stream(**kwargs)  # no next(): arguments are checked when the stream is made


def test_identity_and_instance_reject_bad_arguments():
    with pytest.raises(ValueError):
        mm.make_identity(-1)
    with pytest.raises(ValueError):
        mm.make_identity(1.5)
    identity = mm.make_identity(0)
    with pytest.raises(ValueError):
        mm.draw_instance(identity, rng=0)
    with pytest.raises(ValueError):
        mm.draw_instance(identity, np.random.default_rng(0), size=15)
    with pytest.raises(ValueError):
        mm.draw_instance("not an identity", np.random.default_rng(0))

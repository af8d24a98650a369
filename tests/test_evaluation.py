"""Retrieval metrics against rankings worked out by hand."""

import numpy as np
import pytest

from zoo.apps.evaluation.retrieval import rank_neighbours, raw_pixel_embeddings, retrieval_metrics


def test_metrics_on_a_hand_computed_ranking():
    # 1-d embeddings on the unit circle; items 0,1 share label 0 and items 2,3 label 1.
    angles = np.array([0.0, 0.1, 0.15, 1.5])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 0, 1, 1])
    # Rankings (self excluded): 0 -> [1, 2, 3]; 1 -> [2, 0, 3]; 2 -> [1, 0, 3]; 3 -> [2, 1, 0].
    np.testing.assert_array_equal(rank_neighbours(embeddings),
                                  [[1, 2, 3], [2, 0, 3], [1, 0, 3], [2, 1, 0]])
    metrics = retrieval_metrics(embeddings, labels, k=2)
    # Relevance: 0: [1,0,0]  1: [0,1,0]  2: [0,0,1]  3: [1,0,0]
    assert metrics["R@1"] == pytest.approx(2 / 4)
    assert metrics["P@2"] == pytest.approx((1 + 1 + 0 + 1) / 8)
    assert metrics["R@2"] == pytest.approx(3 / 4)
    assert metrics["mAP"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1) / 4)


def test_ties_are_broken_by_index():
    embeddings = np.ones((4, 3), np.float32) / np.sqrt(3)
    np.testing.assert_array_equal(rank_neighbours(embeddings),
                                  [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


def test_raw_pixels_find_identical_copies(small_corpus):
    images = np.concatenate([small_corpus.images[:6], small_corpus.images[:6]])
    labels = np.concatenate([np.arange(6), np.arange(6)])
    metrics = retrieval_metrics(raw_pixel_embeddings(images), labels, k=1)
    assert metrics["R@1"] == 1.0 and metrics["mAP"] == 1.0


def test_parts_overlap_beats_random_for_perfect_retrieval(small_corpus):
    labels = small_corpus.identities
    identities = np.unique(labels)
    one_hot = np.eye(len(identities))[np.searchsorted(identities, labels)]
    metrics = retrieval_metrics(one_hot, labels, parts=small_corpus.parts, k=3)
    assert metrics["P@3"] == 1.0
    assert metrics["parts@3"] > metrics["parts@random"]


def test_bad_evaluation_input():
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(np.eye(10), np.arange(9))
    with pytest.raises(ValueError, match="at least one other item"):
        retrieval_metrics(np.eye(10), np.arange(10), k=2)


def test_query_grids_draw_the_drawings_as_dark_ink_on_light_paper(tmp_path):
    from PIL import Image

    from zoo.apps.evaluation.run import save_query_grid

    images = np.zeros((3, 16, 16, 1), np.float32)
    images[:, 7:9, :, 0] = 1.0  # one horizontal stroke, as the zoo holds drawings
    embeddings = np.eye(3, dtype=np.float32)
    for dark_ink, paper, ink in ((True, 255, 0), (False, 0, 255)):
        path = save_query_grid(str(tmp_path / f"grid_{dark_ink}.png"), images, embeddings,
                               queries=1, top_k=2, dark_ink=dark_ink)
        picture = np.asarray(Image.open(path).convert("L"))
        top, left = 4 + 3, 4 + 3  # the query tile: outer margin + frame; tiles drawn at 2x
        assert picture[top + 2, left + 2] == paper and picture[top + 16, left + 16] == ink

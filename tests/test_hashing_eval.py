"""mAP@1000 of Hamming rankings against small rankings computed by hand, ties included."""

import itertools

import numpy as np
import pytest

from zoo.apps.evaluation.hashing import (
    average_precision_stable,
    average_precision_tie_aware,
    baseline_codes,
    evaluate_codes,
    format_hashing_table,
    hamming_matrix,
    precision_at,
    split_queries,
)
from zoo.hashing import hamming_distances, pack_bits


def test_stable_ap_breaks_ties_by_database_index():
    # distances 0, 1, 1, 2 with relevant items 0 and 2: ranks 1 and 3 -> (1 + 2/3) / 2
    distances, relevant = np.array([0, 1, 1, 2]), np.array([True, False, True, False])
    assert average_precision_stable(distances, relevant) == pytest.approx((1 + 2 / 3) / 2)
    # the same ranking with the tied pair swapped in the database: ranks 1 and 2 -> 1
    assert average_precision_stable(np.array([0, 1, 1, 2]),
                                    np.array([True, True, False, False])) == pytest.approx(1.0)


def test_tie_aware_ap_averages_over_the_orders_of_tied_items():
    # the relevant item of the tied pair is at rank 2 or 3 with equal chance:
    # ((1 + 2/2) / 2 + (1 + 2/3) / 2) / 2
    distances, relevant = np.array([0, 1, 1, 2]), np.array([True, False, True, False])
    expected = ((1 + 1) / 2 + (1 + 2 / 3) / 2) / 2
    assert average_precision_tie_aware(distances, relevant) == pytest.approx(expected)


def test_tie_aware_ap_equals_the_mean_over_all_permutations_of_ties(rng):
    distances = rng.integers(0, 3, size=7)
    relevant = rng.random(7) < 0.5
    relevant[0] = True
    groups = [np.flatnonzero(distances == d) for d in np.unique(distances)]
    values = []
    for orders in itertools.product(*(itertools.permutations(g) for g in groups)):
        hits = relevant[np.concatenate(orders)]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        values.append((precision * hits).sum() / hits.sum())
    assert average_precision_tie_aware(distances, relevant) == pytest.approx(np.mean(values))


def test_top_cut_and_no_relevant_item():
    distances, relevant = np.array([0, 1, 2, 3]), np.array([False, True, False, True])
    # top 2: only rank 2 counts, P@2 = 1/2, one relevant item found -> 0.5
    assert average_precision_stable(distances, relevant, top=2) == pytest.approx(0.5)
    assert average_precision_stable(distances, np.zeros(4, bool)) == 0.0
    assert average_precision_tie_aware(distances, np.zeros(4, bool)) == 0.0
    assert precision_at(distances, relevant, ks=(1, 2, 4)) == [0.0, 0.5, 0.5]


def test_hamming_matrix_matches_the_packed_popcount(rng):
    query = rng.integers(0, 2, size=(5, 24)).astype(np.uint8)
    database = rng.integers(0, 2, size=(40, 24)).astype(np.uint8)
    np.testing.assert_array_equal(
        hamming_matrix(query, database), hamming_distances(pack_bits(query), pack_bits(database)))
    with pytest.raises(ValueError, match="differ in length"):
        hamming_matrix(query, database[:, :16])
    with pytest.raises(ValueError, match="0/1 bits"):
        hamming_matrix(query * 3, database)


def test_codes_that_are_the_labels_score_one_and_baselines_run(rng):
    labels = np.repeat(np.arange(4), 30)
    bits = np.unpackbits(labels.astype(np.uint8)[:, None], axis=1)  # identical codes per class
    metrics = evaluate_codes(bits[:8], labels[:8], bits[8:], labels[8:], top=20)
    assert metrics["map_stable"] == pytest.approx(1.0)
    assert metrics["map_tie_aware"] == pytest.approx(1.0)
    pixels = rng.random((120, 8, 8, 1)).astype(np.float32) + labels[:, None, None, None]
    queries, database = split_queries(120, 10, seed=0)
    assert len(set(queries) | set(database)) == 120 and not set(queries) & set(database)
    codes = baseline_codes(pixels[database], pixels[queries], 8)
    assert set(codes) == {"LSH", "PCAH", "PCA-ITQ"}
    results = {"models": {}, "baselines": {"8": {
        method: evaluate_codes(q, labels[queries], d, labels[database])
        for method, (q, d) in codes.items()}}}
    assert results["baselines"]["8"]["PCA-ITQ"]["map_stable"] > 0.5  # chance is 0.25
    assert "| PCA-ITQ | 8 |" in format_hashing_table(results)

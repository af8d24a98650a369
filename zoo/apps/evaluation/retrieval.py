"""Retrieval with ground truth (evaluation.md section 2).

Every image of a labelled corpus is a query against all the others (the query itself is
excluded). An item is relevant when it has the query's label (same merchant-mark identity,
same Omniglot character). Ranking is by similarity, ties broken by corpus index.

- P@8: mean fraction of relevant items among the top 8.
- mAP: mean over queries of average precision over the whole ranking.
- R@1, R@8: fraction of queries with at least one relevant item in the top 1 / top 8.
- parts@8 (merchant marks): mean number of parts a query shares with its top 8, beside the
  same number for random pairs of different images ("visually similar", not only exact).
"""

import numpy as np



def l2_normalise(vectors):
    vectors = np.asarray(vectors, np.float32).reshape(len(vectors), -1)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def raw_pixel_embeddings(images):
    """The raw-pixel baseline: flattened images, L2-normalised (cosine similarity)."""
    return l2_normalise(images)


def rank_neighbours(embeddings, top_k=None):
    """Indices of every item's neighbours by descending dot product, the item itself excluded.

    Returns [N, N-1] (or [N, top_k]); ties are broken by ascending index (stable sort).
    """
    embeddings = np.asarray(embeddings, np.float32)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]
    return order if top_k is None else order[:, :top_k]


def shared_parts(a, b):
    """Number of tags (a merchant mark's part names) two items have in common, counted once."""
    return len(set(a) & set(b))


def retrieval_metrics(embeddings, labels, parts=None, k=8, seed=0):
    """P@k, mAP, R@1, R@k (and parts@k vs random when `parts` is given) as a dict of floats."""
    labels = np.asarray(labels)
    if len(embeddings) != len(labels):
        raise ValueError(f"Got {len(embeddings)} embeddings but {len(labels)} labels.")
    if len(labels) < k + 1:
        raise ValueError(f"Need more than k={k} items to evaluate retrieval, got {len(labels)}.")
    order = rank_neighbours(embeddings)
    relevant = labels[order] == labels[:, None]  # [N, N-1]
    relevant_count = relevant.sum(axis=1)
    if np.any(relevant_count == 0):
        raise ValueError("Every query needs at least one other item with its label.")
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision_at_rank = np.cumsum(relevant, axis=1) / ranks
    average_precision = (precision_at_rank * relevant).sum(axis=1) / relevant_count
    metrics = {
        f"P@{k}": float(relevant[:, :k].mean()),
        "mAP": float(average_precision.mean()),
        "R@1": float(relevant[:, 0].mean()),
        f"R@{k}": float(relevant[:, :k].any(axis=1).mean()),
    }
    if parts is not None:
        top = order[:, :k]
        metrics[f"parts@{k}"] = float(np.mean([
            [shared_parts(parts[q], parts[i]) for i in top[q]] for q in range(len(parts))
        ]))
        rng = np.random.default_rng(seed)
        first = rng.integers(0, len(parts), 10_000)
        second = (first + rng.integers(1, len(parts), 10_000)) % len(parts)
        metrics["parts@random"] = float(np.mean(
            [shared_parts(parts[a], parts[b]) for a, b in zip(first, second)]))
    return metrics

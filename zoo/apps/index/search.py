"""Nearest-neighbour search over an index's arrays with faiss, and numpy references.

Four searchers with one interface, `searcher.search(queries, k) -> (scores [Q, k], ids [Q, k])`:

| searcher                  | searches                 | score                  | faiss index     |
|---------------------------|--------------------------|------------------------|-----------------|
| `ExactHamming`            | packed codes [N, K / 8]  | Hamming distance (int) | IndexBinaryFlat |
| `ApproximateHamming`      | packed codes             | Hamming distance       | IndexBinaryHNSW |
| `ExactInnerProduct`       | float32 unit vectors     | cosine similarity      | IndexFlatIP     |
| `ApproximateInnerProduct` | float32 unit vectors     | cosine similarity      | IndexHNSWFlat   |

Results are ordered best first and, among equal scores, by ascending id. The exact Hamming
searcher makes that order exact, ties included: it gives the same ids as the numpy reference
`numpy_hamming_search` (a full scan with a stable sort), because when the k-th distance is
shared beyond the candidates faiss returned it fetches every item at that distance with a range
search. Approximate searchers may miss true neighbours (rows are padded with id -1 when they
find fewer than k); `recall_at_k` measures them against an exact search, counting a result as
found when its score is at least as good as the exact k-th score (so ties do not count as
misses).
"""

import os

import numpy as np

from zoo.hashing import hamming_distances

__all__ = ["ExactHamming", "ApproximateHamming", "ExactInnerProduct", "ApproximateInnerProduct",
           "numpy_hamming_search", "numpy_inner_product_search", "recall_at_k", "make_searcher",
           "searcher_class"]


def _faiss():
    import faiss

    return faiss


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"Expected k to be a positive integer; got {k!r}.")
    return int(k)


def _check_codes(codes, name, num_bytes=None):
    codes = np.ascontiguousarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or (num_bytes and codes.shape[1] != num_bytes):
        width = num_bytes or "B"
        raise ValueError(f"Expected {name} as packed uint8 codes [N, {width}]; got dtype "
                         f"{codes.dtype}, shape {codes.shape}.")
    return codes


def _check_vectors(vectors, name, dim=None):
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or (dim and vectors.shape[1] != dim):
        raise ValueError(f"Expected {name} as float32 [N, {dim or 'D'}]; got shape "
                         f"{vectors.shape}.")
    return vectors


def _order(scores, ids, higher_is_better):
    """Sort each row best first, ties by ascending id; invalid ids (-1) last."""
    key = -scores if higher_is_better else scores
    key = np.where(ids < 0, np.inf, key.astype(np.float64))
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), key), axis=-1)
    return np.take_along_axis(scores, order, -1), np.take_along_axis(ids, order, -1)


def _empty(count, higher_is_better, dtype):
    fill = -np.inf if higher_is_better else np.iinfo(np.int32).max
    return np.full((count, 0), fill, dtype), np.full((count, 0), -1, np.int64)


# ----------------------------------------------------------------------------- Hamming


class ExactHamming:
    """Exact Hamming k-NN over packed codes (faiss IndexBinaryFlat), ties broken by id."""

    higher_is_better = False

    def __init__(self, codes):
        codes = _check_codes(codes, "codes")
        self.count, self.num_bytes = codes.shape
        self.index = _faiss().IndexBinaryFlat(8 * self.num_bytes)
        if self.count:
            self.index.add(codes)

    def search(self, queries, k):
        queries = _check_codes(queries, "queries", self.num_bytes)
        k = min(_check_k(k), self.count)
        if k == 0:
            return _empty(len(queries), False, np.int32)
        # Ask for extra candidates: if the k-th distance is below the last candidate's, every
        # item at that distance is among them and sorting by (distance, id) is exact.
        candidates = min(self.count, 2 * k + 32)
        distances, ids = self.index.search(queries, candidates)
        distances, ids = _order(distances.astype(np.int32), ids.astype(np.int64), False)
        out_distances = distances[:, :k].copy()
        out_ids = ids[:, :k].copy()
        for row in range(len(queries)):
            boundary = int(distances[row, k - 1])
            if candidates < self.count and int(distances[row, -1]) == boundary:
                # More items share the k-th distance than faiss returned: fetch all of them.
                _, found_distances, found_ids = self.index.range_search(
                    queries[row : row + 1], boundary + 1)  # distance < radius
                found_distances = found_distances.astype(np.int32)[None]
                found_ids = found_ids.astype(np.int64)[None]
                found_distances, found_ids = _order(found_distances, found_ids, False)
                out_distances[row], out_ids[row] = found_distances[0, :k], found_ids[0, :k]
        return out_distances, out_ids


class _SavedGraph:
    """save / load of an approximate searcher's faiss index (building a graph over a million
    items takes minutes, loading it a second)."""

    _binary = False

    def save(self, path):
        faiss = _faiss()
        temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
        (faiss.write_index_binary if self._binary else faiss.write_index)(self.index, temporary)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path, ef_search=64):
        faiss = _faiss()
        searcher = cls.__new__(cls)
        searcher.index = (faiss.read_index_binary if cls._binary else faiss.read_index)(path)
        searcher.ef_search, searcher.count = ef_search, int(searcher.index.ntotal)
        if cls._binary:
            searcher.num_bytes = int(searcher.index.code_size)
        else:
            searcher.dim = int(searcher.index.d)
        return searcher


class ApproximateHamming(_SavedGraph):
    """Approximate Hamming k-NN: a binary HNSW graph (faiss IndexBinaryHNSW, Malkov &
    Yashunin 2018). `neighbours` (M) and `ef_construction` set the graph, `ef_search` the
    breadth of a search (raised to k when smaller): larger = higher recall, slower."""

    higher_is_better = False
    _binary = True

    def __init__(self, codes, neighbours=32, ef_construction=64, ef_search=64):
        codes = _check_codes(codes, "codes")
        self.count, self.num_bytes = codes.shape
        self.ef_search = ef_search
        self.index = _faiss().IndexBinaryHNSW(8 * self.num_bytes, neighbours)
        self.index.hnsw.efConstruction = ef_construction
        if self.count:
            self.index.add(codes)

    def search(self, queries, k):
        queries = _check_codes(queries, "queries", self.num_bytes)
        k = min(_check_k(k), self.count)
        if k == 0:
            return _empty(len(queries), False, np.int32)
        self.index.hnsw.efSearch = max(self.ef_search, k)
        distances, ids = self.index.search(queries, k)
        return _order(distances.astype(np.int32), ids.astype(np.int64), False)


# ----------------------------------------------------------------------------- inner product


class ExactInnerProduct:
    """Exact maximum inner product (= cosine for unit vectors) search, faiss IndexFlatIP.
    `vectors` may be a list of [n_i, D] blocks (segments), added one after the other."""

    higher_is_better = True

    def __init__(self, vectors):
        blocks = vectors if isinstance(vectors, (list, tuple)) else [vectors]
        blocks = [_check_vectors(block, "vectors") for block in blocks]
        self.dim = blocks[0].shape[1] if blocks else 0
        self.count = sum(len(block) for block in blocks)
        self.index = self._make_index(self.dim)
        for block in blocks:
            if len(block):
                self.index.add(_check_vectors(block, "vectors", self.dim))

    def _make_index(self, dim):
        return _faiss().IndexFlatIP(dim)

    def search(self, queries, k):
        queries = _check_vectors(queries, "queries", self.dim)
        k = min(_check_k(k), self.count)
        if k == 0:
            return _empty(len(queries), True, np.float32)
        scores, ids = self.index.search(queries, k)
        return _order(scores, ids.astype(np.int64), True)


class ApproximateInnerProduct(_SavedGraph, ExactInnerProduct):
    """Approximate inner-product search with an HNSW graph (faiss IndexHNSWFlat)."""

    def __init__(self, vectors, neighbours=32, ef_construction=64, ef_search=64):
        self.neighbours, self.ef_construction, self.ef_search = (neighbours, ef_construction,
                                                                 ef_search)
        super().__init__(vectors)

    def _make_index(self, dim):
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(dim, self.neighbours, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def search(self, queries, k):
        self.index.hnsw.efSearch = max(self.ef_search, _check_k(k))
        return super().search(queries, k)


def searcher_class(mode, approximate):
    """The searcher class for mode "hamming" (over packed codes) or "embedding" (over float32
    vectors, given as one array or a list of blocks)."""
    if mode == "hamming":
        return ApproximateHamming if approximate else ExactHamming
    if mode == "embedding":
        return ApproximateInnerProduct if approximate else ExactInnerProduct
    raise ValueError(f"Expected mode 'embedding' or 'hamming'; got {mode!r}.")


def make_searcher(mode, approximate, data):
    """A searcher of `searcher_class(mode, approximate)` over `data`."""
    if mode == "hamming" and isinstance(data, (list, tuple)):
        data = np.concatenate(data)
    return searcher_class(mode, approximate)(data)


# ----------------------------------------------------------------------------- references


def _exact_top_k(scores, k, higher_is_better):
    """Rows of (scores, ids) of the k best per row, ties by id: argpartition finds the k-th
    score, then every item at least that good is sorted by (score, id)."""
    count = scores.shape[1]
    k = min(k, count)
    key = -scores.astype(np.float64) if higher_is_better else scores.astype(np.float64)
    out_scores = np.empty((len(scores), k), scores.dtype)
    out_ids = np.empty((len(scores), k), np.int64)
    for row in range(len(scores)):
        kth = np.partition(key[row], k - 1)[k - 1]
        candidates = np.flatnonzero(key[row] <= kth)
        order = candidates[np.lexsort((candidates, key[row, candidates]))][:k]
        out_scores[row], out_ids[row] = scores[row, order], order
    return out_scores, out_ids


def numpy_hamming_search(codes, queries, k):
    """The brute-force reference: a numpy scan (zoo.hashing.hamming_distances), ordered by
    (distance, id)."""
    return _exact_top_k(hamming_distances(queries, codes), _check_k(k), False)


def numpy_inner_product_search(vectors, queries, k):
    """The brute-force reference for inner products: queries @ vectors.T, ordered by
    (-score, id)."""
    vectors = _check_vectors(vectors, "vectors")
    queries = _check_vectors(queries, "queries", vectors.shape[1])
    return _exact_top_k(queries @ vectors.T, _check_k(k), True)


def recall_at_k(exact_scores, approximate_scores, approximate_ids, higher_is_better):
    """Mean fraction of the k results an approximate search got right, tie-aware: a result
    counts when its score is at least as good as the exact k-th score of its query."""
    exact_scores = np.asarray(exact_scores)
    k = exact_scores.shape[1]
    if k == 0:
        return 1.0
    kth = exact_scores[:, -1:].astype(np.float64)
    approximate_scores = np.asarray(approximate_scores, np.float64)
    # Float scores of one pair may differ in the last bits between two faiss indexes.
    slack = 1e-5 if np.issubdtype(exact_scores.dtype, np.floating) else 0
    good = (approximate_scores >= kth - slack if higher_is_better
            else approximate_scores <= kth + slack)
    good &= np.asarray(approximate_ids) >= 0
    return float(np.mean(np.minimum(good[:, :k].sum(axis=1), k) / k))

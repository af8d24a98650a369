"""Linear binary hashing of embeddings: K-bit codes compared by Hamming distance (numpy only).

A hash is linear when bit k of x is [(x - mean) . w_k >= 0]: one centring vector and one
[D, K] projection. Three ways of choosing the projection, from Gong & Lazebnik, "Iterative
Quantization: A Procrustean Approach to Learning Binary Codes", CVPR 2011:

* LSH: random Gaussian directions (a baseline that ignores the data);
* PCAH: the top-K principal directions;
* ITQ: the top-K principal directions followed by the orthogonal rotation R that minimises the
  quantisation loss ||B - V R||^2 (V the PCA-projected data, B = sign(V R)), found by
  alternating B = sign(V R) with the orthogonal Procrustes solution for R.

The float encoders' hash heads (sketch-GAN, thin-GAN) and the BinGAN baselines use these.
Codes travel packed, eight bits a byte in `numpy.packbits` order (first bit = most significant
bit of the first byte), which is also what the exported `codes_bytes` output holds.

Typical use::

    head = fit_itq(embeddings, bits=64)
    codes = pack_bits(head.bits(embeddings))            # uint8 [N, 8]
    distances = hamming_distances(codes[:1], codes)    # int32 [1, N]
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

__all__ = [
    "LinearHash",
    "fit_lsh",
    "fit_pcah",
    "fit_itq",
    "quantization_loss",
    "pack_bits",
    "unpack_bits",
    "hamming_distances",
    "top_k_overlap",
]


def _frozen(array, dtype, name, ndim):
    array = np.array(array, dtype=dtype, copy=True)
    if array.ndim != ndim:
        raise ValueError(f"Expected {name} with {ndim} dimensions; got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class LinearHash:
    """bits(x) = ((x - mean) @ projection >= 0): mean float32 [D], projection float32 [D, K]."""

    mean: np.ndarray
    projection: np.ndarray
    method: str = "linear"  # how the projection was chosen: "LSH", "PCAH", "ITQ", ...

    def __post_init__(self):
        mean = _frozen(self.mean, np.float32, "mean", 1)
        projection = _frozen(self.projection, np.float32, "projection", 2)
        if projection.shape[0] != mean.shape[0] or projection.shape[1] < 1:
            raise ValueError(f"Expected mean [D] and projection [D, K >= 1]; got "
                             f"{mean.shape} and {projection.shape}.")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "projection", projection)
        object.__setattr__(self, "method", str(self.method))

    def __repr__(self):
        return f"LinearHash({self.method}, input_dim={self.input_dim}, num_bits={self.num_bits})"

    @property
    def input_dim(self):
        return int(self.mean.shape[0])

    @property
    def num_bits(self):
        return int(self.projection.shape[1])

    @property
    def kind(self):
        """How the projection was made, in a word for table rows: ITQ, learned, sign, LSH, ..."""
        if self.method.startswith("learned"):
            return "learned"
        if "ITQ" in self.method:
            return "ITQ"
        return self.method.split(" ")[0] or "linear"

    def project(self, x):
        """Real-valued projections (x - mean) @ projection: float32 [N, K]."""
        x = _check_data(x, "x")
        if x.shape[1] != self.input_dim:
            raise ValueError(f"Expected x of shape [N, {self.input_dim}]; got {x.shape}.")
        return (x - self.mean) @ self.projection

    def bits(self, x):
        """uint8 [N, K] of 0/1."""
        return (self.project(x) >= 0).astype(np.uint8)

    def to_dict(self):
        return {"mean": self.mean.copy(), "projection": self.projection.copy(),
                "method": self.method}

    @classmethod
    def from_dict(cls, data):
        return cls(mean=np.asarray(data["mean"]), projection=np.asarray(data["projection"]),
                   method=str(np.asarray(data.get("method", "linear"))))


# ----------------------------------------------------------------------------- fitting


def _check_data(x, name="x"):
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating)
                                 or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"Expected {name} as a numeric 2-D array [N, D]; got dtype {x.dtype}.")
    if x.ndim != 2:
        raise ValueError(f"Expected {name} as a 2-D array [N, D]; got shape {x.shape}.")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers.")
    return x


def _check_fit(x, bits):
    x = _check_data(x)
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or bits < 1:
        raise ValueError(f"Expected bits to be a positive integer; got {bits!r}.")
    count, dim = x.shape
    if bits > dim:
        raise ValueError(f"Cannot fit {bits} bits to {dim}-dimensional data (bits <= D).")
    if bits > count:
        raise ValueError(f"Cannot fit {bits} bits to {count} samples (bits <= N).")
    return x.astype(np.float64), int(bits)


def _pca(x, bits):
    """(mean [D], top-`bits` principal directions [D, bits]) with a deterministic sign each."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    directions = vt[:bits].T
    # Fix the sign ambiguity: the largest-magnitude component of every direction is positive.
    largest = directions[np.argmax(np.abs(directions), axis=0), np.arange(bits)]
    return mean, directions * np.where(largest < 0, -1.0, 1.0)


def fit_lsh(x, bits, seed=0):
    """Random Gaussian projections of the centred data (Charikar's sign random projections)."""
    x, bits = _check_fit(x, bits)
    projection = np.random.default_rng(seed).standard_normal((x.shape[1], bits))
    return LinearHash(x.mean(axis=0), projection, method="LSH")


def fit_pcah(x, bits):
    """The top-`bits` principal directions, thresholded at the mean (PCAH)."""
    x, bits = _check_fit(x, bits)
    mean, directions = _pca(x, bits)
    return LinearHash(mean, directions, method="PCAH")


def fit_itq(x, bits, iterations=50, seed=0):
    """Iterative quantisation: PCA to `bits` dimensions, then the rotation R minimising
    ||B - V R||^2, alternating B = sign(V R) and R = the orthogonal Procrustes solution.

    The projection is PCA @ R, so PCAH's projection.T @ ITQ's projection recovers R.
    """
    x, bits = _check_fit(x, bits)
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
        raise ValueError(f"Expected iterations to be a non-negative integer; got {iterations!r}.")
    mean, directions = _pca(x, bits)
    projected = (x - mean) @ directions
    # A random orthogonal starting rotation (QR of a Gaussian matrix, signs fixed).
    gaussian = np.random.default_rng(seed).standard_normal((bits, bits))
    q, r = np.linalg.qr(gaussian)
    rotation = q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))
    for _ in range(iterations):
        codes = np.where(projected @ rotation >= 0, 1.0, -1.0)
        # argmin_R ||B - V R||_F over orthogonal R: with V^T B = U S W^T, R = U W^T.
        u, _, wt = np.linalg.svd(projected.T @ codes)
        rotation = u @ wt
    return LinearHash(mean, directions @ rotation, method="ITQ")


def quantization_loss(linear_hash, x):
    """Mean squared distance between the projections and their binary codes in {-1, +1}."""
    projected = linear_hash.project(x).astype(np.float64)
    codes = np.where(projected >= 0, 1.0, -1.0)
    return float(np.mean(np.sum((codes - projected) ** 2, axis=1)))


# ----------------------------------------------------------------------------- packed codes


def _check_bits(bits, name="bits"):
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"Expected {name} as a 2-D array [N, K] of 0/1; got shape {bits.shape}.")
    if bits.dtype != bool and not np.issubdtype(bits.dtype, np.integer):
        raise ValueError(f"Expected {name} as integers or booleans of 0/1; got dtype {bits.dtype}.")
    if bits.size and (bits.min() < 0 or bits.max() > 1):
        raise ValueError(f"Expected {name} of 0/1 only; got values in [{bits.min()}, {bits.max()}].")
    return bits.astype(np.uint8, copy=False)


def pack_bits(bits):
    """uint8 [N, K] of 0/1 -> uint8 [N, ceil(K / 8)], as numpy.packbits(bits, axis=1)."""
    return np.packbits(_check_bits(bits), axis=1)


def unpack_bits(packed, num_bits):
    """The inverse of `pack_bits`: uint8 [N, ceil(K / 8)] -> uint8 [N, K] of 0/1."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] != -(-num_bits // 8):
        raise ValueError(f"Expected packed codes [N, {-(-num_bits // 8)}]; got {packed.shape}.")
    return np.unpackbits(packed, axis=1, count=num_bits)


_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], np.uint8)


def _popcount(values):
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return _POPCOUNT[values]


def hamming_distances(query_codes, database_codes):
    """Hamming distances between packed codes: uint8 [Q, B] x uint8 [M, B] -> int32 [Q, M]."""
    query_codes = np.asarray(query_codes)
    database_codes = np.asarray(database_codes)
    for name, codes in (("query_codes", query_codes), ("database_codes", database_codes)):
        if codes.dtype != np.uint8 or codes.ndim != 2:
            raise ValueError(f"Expected {name} as packed uint8 codes [N, bytes] (see pack_bits); "
                             f"got dtype {codes.dtype}, shape {codes.shape}.")
    if query_codes.shape[1] != database_codes.shape[1]:
        raise ValueError(f"Codes of different lengths: {query_codes.shape[1]} and "
                         f"{database_codes.shape[1]} bytes.")
    distances = np.empty((len(query_codes), len(database_codes)), np.int32)
    rows = max(1, (16 << 20) // max(1, len(database_codes) * query_codes.shape[1]))  # ~16 MB
    for start in range(0, len(query_codes), rows):
        xor = query_codes[start : start + rows, None, :] ^ database_codes[None, :, :]
        distances[start : start + rows] = _popcount(xor).sum(axis=-1, dtype=np.int32)
    return distances


def _top_k(scores, k):
    """Indices of the k smallest scores in every row, ties broken by the lower index."""
    return np.argsort(scores, axis=1, kind="stable")[:, :k]


def top_k_overlap(embeddings, bits, k=8):
    """Mean fraction shared between every item's top-k cosine neighbours and its top-k Hamming
    neighbours (the item itself excluded, ties broken by index): how well the codes' Hamming
    neighbours approximate the embeddings' cosine neighbours. 1.0 means identical lists.
    """
    embeddings = _check_data(embeddings, "embeddings").astype(np.float64)
    bits = _check_bits(bits)
    count = len(embeddings)
    if len(bits) != count:
        raise ValueError(f"Expected one code per embedding; got {len(bits)} codes for "
                         f"{count} embeddings.")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < count:
        raise ValueError(f"Expected 1 <= k < N = {count}; got k = {k!r}.")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    cosine_distance = -(unit @ unit.T)
    np.fill_diagonal(cosine_distance, np.inf)
    hamming = hamming_distances(pack_bits(bits), pack_bits(bits)).astype(np.float64)
    np.fill_diagonal(hamming, np.inf)
    cosine_neighbours = _top_k(cosine_distance, k)
    hamming_neighbours = _top_k(hamming, k)
    shared = [len(np.intersect1d(a, b)) for a, b in zip(cosine_neighbours, hamming_neighbours)]
    return float(np.mean(shared) / k)


def linear_hash_bits_tf(embeddings, mean, projection):
    """bits = ((embeddings - mean) @ projection >= 0) as uint8 [N, K]: the TensorFlow ops of a
    LinearHash, shared by `Encoder.hash` and the exported graph so both give the same bits."""
    import tensorflow as tf

    projected = tf.matmul(embeddings - mean, projection)
    return tf.cast(projected >= 0.0, tf.uint8)

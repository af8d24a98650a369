"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its idx files, e.g. Debian's
`dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist), gzipped or not.

The 28x28 images (light garments on black) are zero-padded by 2 pixels to the 32x32 input of
BinGAN's discriminator (the CIFAR-10 size of the paper) and returned as float32 in [0, 1].
Labels (10 classes) serve evaluation only.
"""

import gzip
import os

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "ZOO_FASHION_MNIST_DIR"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_SIZE = 32
_MAGIC = {2049: 1, 2051: 3}  # idx magic number (unsigned byte data) -> number of dimensions


def read_idx(path):
    """An idx file (MNIST format, optionally .gz) -> uint8 array; ValueError if it is not one."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"Cannot read idx file {path!r}: {error}") from error
    if len(data) < 8:
        raise ValueError(f"{path!r} is not an idx file (only {len(data)} bytes).")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _MAGIC:
        raise ValueError(f"{path!r} is not an unsigned-byte idx file (magic number {magic}, "
                         f"expected 2049 for labels or 2051 for images).")
    ndim = _MAGIC[magic]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"{path!r} is truncated or padded: {len(data)} bytes, the header "
                         f"{shape} implies {expected}.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise ValueError(
        f"Fashion-MNIST file {stem}[.gz] not found in {directory!r}. Install it with "
        f"`apt-get install dataset-fashion-mnist`, or pass the folder holding the idx files "
        f"(or set {ENV_VAR})."
    )


def pad_to_input(images_uint8):
    """uint8 [N, 28, 28] -> float32 [N, 32, 32, 1] in [0, 1], zero-padded by 2 pixels."""
    images = np.asarray(images_uint8, np.float32) / 255.0
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]


def load_fashion_mnist(data_dir=None, split="train"):
    """(images float32 [N, 32, 32, 1] in [0, 1], labels int64 [N]) of one split, or of "all"
    (train then test, 70,000 images)."""
    if split == "all":
        parts = [load_fashion_mnist(data_dir, name) for name in ("train", "test")]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if split not in SPLITS:
        raise ValueError(f"Unknown Fashion-MNIST split {split!r}; expected 'train', 'test' or 'all'.")
    directory = data_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR
    images_stem, labels_stem = SPLITS[split]
    images = read_idx(_find(directory, images_stem))
    labels = read_idx(_find(directory, labels_stem))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise ValueError(f"Fashion-MNIST {split} in {directory!r}: expected [N, 28, 28] images "
                         f"and N labels, got {images.shape} and {labels.shape}.")
    return pad_to_input(images), labels.astype(np.int64)

"""CIFAR-10 from the standard python archive (cifar-10-python.tar.gz) at a path the user gives.

Nothing is downloaded: point `load_cifar10` at the archive (or at its extracted
cifar-10-batches-py folder). Images come back as float32 [N, 32, 32, 3] in [0, 1], labels as
int64 [N] (evaluation only). Split "train" = data_batch_1..5 (50,000), "test" = test_batch
(10,000), "all" = both.
"""

import os
import pickle
import tarfile

import numpy as np

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _decode_batch(raw, source):
    try:
        batch = pickle.loads(raw, encoding="bytes")
        data = np.asarray(batch[b"data"], np.uint8)
        labels = np.asarray(batch[b"labels"], np.int64)
    except Exception as error:  # a pickle of anything else
        raise ValueError(f"{source} is not a CIFAR-10 python batch: {error}") from error
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{source}: expected data [N, 3072] and N labels, got {data.shape} "
                         f"and {labels.shape}.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_members(path, names):
    if os.path.isdir(path):
        folder = os.path.join(path, FOLDER) if os.path.isdir(os.path.join(path, FOLDER)) else path
        out = []
        for name in names:
            member = os.path.join(folder, name)
            if not os.path.isfile(member):
                raise ValueError(f"CIFAR-10 batch {name!r} not found in {folder!r}.")
            with open(member, "rb") as handle:
                out.append((handle.read(), member))
        return out
    if not os.path.isfile(path):
        raise ValueError(f"CIFAR-10 archive {path!r} does not exist; download "
                         f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                         f"and pass its path.")
    try:
        with tarfile.open(path, "r:*") as archive:
            out = []
            for name in names:
                try:
                    member = archive.extractfile(f"{FOLDER}/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise ValueError(f"{path!r} has no {FOLDER}/{name}; expected the CIFAR-10 "
                                     f"python archive (cifar-10-python.tar.gz).")
                out.append((member.read(), f"{path}:{name}"))
            return out
    except tarfile.TarError as error:
        raise ValueError(f"{path!r} is not a readable tar archive: {error}") from error


def load_cifar10(path, split="train"):
    """(images float32 [N, 32, 32, 3] in [0, 1], labels int64 [N]) from the python archive."""
    if split == "all":
        names = BATCHES["train"] + BATCHES["test"]
    elif split in BATCHES:
        names = BATCHES[split]
    else:
        raise ValueError(f"Unknown CIFAR-10 split {split!r}; expected 'train', 'test' or 'all'.")
    decoded = [_decode_batch(raw, source) for raw, source in _read_members(path, names)]
    images = np.concatenate([d[0] for d in decoded]).astype(np.float32) / 255.0
    return images, np.concatenate([d[1] for d in decoded])

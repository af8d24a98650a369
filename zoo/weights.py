"""Weights files: write G and D to one .weights.h5, verify its sha256, load it back.

Layout (HDF5): /generator/<variable path> and /discriminator/<variable path>, one dataset per
variable (e.g. /discriminator/d1_conv/kernel), BatchNorm moving statistics included. Variable
paths come from the explicitly named layers of the architecture files, never from Keras's
auto-generated names, so a file stays loadable across Keras versions.
"""

import hashlib
import os

import h5py
import numpy as np

PACKAGE_WEIGHTS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep + "weights"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_gan_weights(path, generator, discriminator, attributes=None):
    """Atomically write both networks' variables; return the file's sha256."""
    if not path.endswith(".weights.h5"):
        raise ValueError(f"Weights file names end in '.weights.h5', got {path!r}.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with h5py.File(temporary, "w") as handle:
        for key, value in (attributes or {}).items():
            handle.attrs[key] = value
        for group_name, model in (("generator", generator), ("discriminator", discriminator)):
            group = handle.create_group(group_name)
            for variable in model.weights:
                group.create_dataset(variable.path, data=np.asarray(variable.numpy()))
    os.replace(temporary, path)
    return sha256_of(path)


def verify_sha256(path, expected_sha256):
    if not os.path.isfile(path):
        raise ValueError(f"Weights file {path!r} is missing; reinstall the package.")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ValueError(
            f"Weights file {path!r} failed verification: sha256 {actual} but the registry "
            f"expects {expected_sha256}. The file is corrupt, truncated or was modified; "
            f"reinstall the package or retrain with `zoo train`."
        )


def load_gan_weights(path, generator, discriminator, expected_sha256=None):
    """Assign every variable of both networks from `path` (after a sha256 check if given)."""
    if expected_sha256 is not None:
        verify_sha256(path, expected_sha256)
    if not os.path.isfile(path):
        raise ValueError(f"Weights file {path!r} does not exist.")
    try:
        with h5py.File(path, "r") as handle:
            for group_name, model in (("generator", generator), ("discriminator", discriminator)):
                for variable in model.weights:
                    key = f"{group_name}/{variable.path}"
                    if key not in handle:
                        raise ValueError(f"Weights file {path!r} has no variable {key!r}; it was "
                                         f"written for another architecture.")
                    value = handle[key][()]
                    if tuple(value.shape) != tuple(variable.shape):
                        raise ValueError(f"Weights file {path!r}: {key} has shape {value.shape}, "
                                         f"the model expects {tuple(variable.shape)}.")
                    variable.assign(value)
    except OSError as error:
        raise ValueError(f"Weights file {path!r} is not a readable HDF5 file: {error}") from error

"""Build registered models and load their shipped, sha256-verified weights (offline)."""

import numpy as np

from zoo.encoder import Encoder
from zoo.hashing import LinearHash
from zoo.models import get_family
from zoo.precision import policy_scope, resolve
from zoo.registry import get_entry
from zoo.weights import load_gan_weights, verify_sha256


def build(name):
    """(generator, discriminator) of a registered model, freshly initialised (no weights)."""
    entry = get_entry(name)
    return get_family(entry.family).build_gan(**entry.architecture)


def load_gan(name, weights_path=None, precision="float32"):
    """(generator, discriminator) with the shipped weights, or those of `weights_path`, built to
    compute in `precision` (zoo.precision; the weights stay float32).

    The shipped file is verified against the sha256 in the manifest before it is read.
    """
    entry = get_entry(name)
    expected_sha256 = None
    if weights_path is None:
        record = entry.published
        if not record:
            raise ValueError(f"No weights are shipped for {name!r} yet; train them with "
                             f"`zoo train {name}` and `zoo publish {name} runs/{name}`.")
        weights_path, expected_sha256 = entry.weights_file, record["sha256"]
    with policy_scope(precision):
        generator, discriminator = build(name)
    load_gan_weights(weights_path, generator, discriminator, expected_sha256)
    return generator, discriminator


def load_hash_head(name):
    """The shipped, sha256-verified hash head of a registered model (None if none shipped)."""
    entry = get_entry(name)
    record = entry.published.get("hash_head")
    if not record:
        return None
    verify_sha256(entry.hash_head_file, record["sha256"])
    with np.load(entry.hash_head_file) as stored:
        return LinearHash.from_dict(dict(stored))


def encoder_of(name, discriminator, hash_head=None, precision="float32"):
    """The Encoder that registered model `name` reads out of `discriminator` (built as
    `build(name)` builds it, computing in `precision`)."""
    entry = get_entry(name)
    family = get_family(entry.family)
    return Encoder(name, family.build_feature_extractor(discriminator), entry,
                   hash_head=hash_head, margin=family.margin, precision=precision)


def load(name, weights_path=None, with_hash_head=True, precision="float32"):
    """The Encoder of a registered model with its shipped weights and hash head.

    `precision` "bfloat16" computes in bfloat16 (about 1.8x faster where the CPU has AVX512-BF16;
    embeddings within zoo.encoder.BFLOAT16_TOLERANCE of float32's); "auto" picks it where the
    CPU has native bfloat16 (zoo.precision). The default, float32, is the reference path.

    With `weights_path` (your own training run), a float encoder has no hash head until you
    fit one (`encoder.fit_hash_head(images)`): a head belongs to the weights it was fitted on.
    BinGAN encoders always hash with the signs of their code layer.
    """
    entry = get_entry(name)
    precision = resolve(precision)
    _, discriminator = load_gan(name, weights_path, precision)
    family = get_family(entry.family)
    hash_head = load_hash_head(name) if with_hash_head and weights_path is None else None
    encoder = encoder_of(name, discriminator, hash_head, precision)
    if with_hash_head and hash_head is None and family.hash_head == "sign":
        # A binarisation that does not depend on the weights (BinGAN's signs) is always there.
        encoder.set_hash_head(family.sign_hash_head(encoder.embedding_dim))
    return encoder

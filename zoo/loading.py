"""Build registered models and load their shipped, sha256-verified weights (offline)."""

import numpy as np

from zoo.encoder import Encoder
from zoo.hashing import LinearHash
from zoo.models import FAMILIES, get_family
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


# precision="int8": each quantised layer's activation ranges are calibrated on the float32
# network's activations on these procedural merchant marks (zoo.quantization.calibrate_ranges;
# ~1 s at load). The seed is not any corpus's or benchmark's.
INT8_CALIBRATION = {"num_identities": 128, "instances_per_identity": 4, "seed": 8}


def int8_calibration_images():
    """The default calibration images of precision="int8": [512, 64, 64, 1] float32 in [0, 1]."""
    from zoo.data.merchant_marks import make_corpus

    images = np.asarray(make_corpus(**INT8_CALIBRATION).images, np.float32)
    return images.reshape(len(images), images.shape[1], images.shape[2], 1)


def has_int8_encoder(name):
    """Whether registered model `name` has a precision="int8" encoder: its family builds one
    (the op it needs may still be missing: zoo.quantization.int8_available)."""
    return get_family(get_entry(name).family).build_int8_feature_extractor is not None


def _int8_encoder(name, weights_path, discriminator, hash_head, calibration_images):
    entry = get_entry(name)
    family = get_family(entry.family)
    if not has_int8_encoder(name):
        int8_families = sorted(f.name for f in FAMILIES.values()
                               if f.build_int8_feature_extractor is not None)
        raise ValueError(f"precision 'int8' is for the {', '.join(int8_families)} family's "
                         f"encoders; {name!r} is {entry.family}. Use 'bfloat16' or 'float32'.")
    if calibration_images is None:
        calibration_images = int8_calibration_images()
    _, fast = load_gan(name, weights_path, "bfloat16")
    extractor = family.build_int8_feature_extractor(discriminator, fast, calibration_images)
    return Encoder(name, extractor, entry, hash_head=hash_head, margin=family.margin,
                   precision="int8")


def load(name, weights_path=None, with_hash_head=True, precision="float32",
         calibration_images=None):
    """The Encoder of a registered model with its shipped weights and hash head.

    `precision` "bfloat16" computes in bfloat16 (about 1.8x faster where the CPU has AVX512-BF16;
    embeddings within zoo.encoder.BFLOAT16_TOLERANCE of float32's); "auto" picks it where the
    CPU has native bfloat16 (zoo.precision). The default, float32, is the reference path.
    "int8" (sketch-GAN+ encoders) runs the stride-2 convolutions in int8 (zoo.quantization;
    about 2x float32 where the CPU has AVX512-VNNI; embeddings within
    zoo.encoder.INT8_TOLERANCE), with activation ranges calibrated on `calibration_images`
    ([N, 64, 64, 1] in [0, 1]; default: 512 procedural merchant marks, INT8_CALIBRATION): pass
    images of your own collection if its marks look unlike those.

    With `weights_path` (your own training run), a float encoder has no hash head until you
    fit one (`encoder.fit_hash_head(images)`): a head belongs to the weights it was fitted on.
    BinGAN encoders always hash with the signs of their code layer.
    """
    entry = get_entry(name)
    precision = resolve(precision)
    if calibration_images is not None and precision != "int8":
        raise ValueError(f"calibration_images are for precision 'int8', not {precision!r}.")
    # The weights first: their verification is what a damaged install reports.
    _, discriminator = load_gan(name, weights_path,
                                "float32" if precision == "int8" else precision)
    family = get_family(entry.family)
    hash_head = load_hash_head(name) if with_hash_head and weights_path is None else None
    if precision == "int8":
        encoder = _int8_encoder(name, weights_path, discriminator, hash_head,
                                calibration_images)
    else:
        encoder = encoder_of(name, discriminator, hash_head, precision)
    if with_hash_head and hash_head is None and family.hash_head == "sign":
        # A binarisation that does not depend on the weights (BinGAN's signs) is always there.
        encoder.set_hash_head(family.sign_hash_head(encoder.embedding_dim))
    return encoder

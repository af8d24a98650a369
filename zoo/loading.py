"""Build registered models and load their shipped, sha256-verified weights (offline)."""

from zoo.encoder import Encoder
from zoo.models import get_family
from zoo.registry import get_entry
from zoo.weights import load_gan_weights


def build(name):
    """(generator, discriminator) of a registered model, freshly initialised (no weights)."""
    entry = get_entry(name)
    return get_family(entry.family).build_gan(**entry.architecture)


def load_gan(name, weights_path=None):
    """(generator, discriminator) with the shipped weights, or those of `weights_path`.

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
    generator, discriminator = build(name)
    load_gan_weights(weights_path, generator, discriminator, expected_sha256)
    return generator, discriminator


def load(name, weights_path=None):
    """The Encoder of a registered model with its shipped weights."""
    entry = get_entry(name)
    _, discriminator = load_gan(name, weights_path)
    family = get_family(entry.family)
    return Encoder(name, family.build_feature_extractor(discriminator), entry)

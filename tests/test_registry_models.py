"""Every registry entry, whatever its family: builds, runs a tiny batch, round-trips its
configuration (custom layers are registered serialisable, no Lambda) and its weights.

Exporting and reloading every shipped entry's SavedModel is tests/test_export.py's
`test_every_shipped_model_round_trips_through_its_savedmodel`; the paper-sized configurations
are the slow cases here (marked `slow`; `-m "not slow"` leaves them out).
"""

import keras
import numpy as np
import pytest

from zoo.loading import build
from zoo.models import get_family
from zoo.registry import REGISTRY
from zoo.weights import load_gan_weights, save_gan_weights


def _param(name):
    slow = REGISTRY[name].architecture.get("widths") == [96, 192]  # the paper-sized BinGAN
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


NAMES = [_param(name) for name in sorted(REGISTRY)]


def tiny_batch(generator, rng, count=2):
    latent = rng.uniform(size=(count, int(generator.input.shape[-1]))).astype(np.float32)
    return np.asarray(generator(latent, training=False))


def outputs_of(model, inputs):
    outputs = model(inputs, training=False)
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


@pytest.mark.parametrize("name", NAMES)
def test_builds_runs_a_tiny_batch_and_round_trips_its_config(name, rng):
    entry = REGISTRY[name]
    generator, discriminator = build(name)
    images = tiny_batch(generator, rng)
    assert images.shape[1:] == tuple(discriminator.input.shape[1:])
    assert np.all((images >= 0) & (images <= 1))
    encoder = get_family(entry.family).build_feature_extractor(discriminator)
    features = np.asarray(encoder(images, training=False))
    assert features.shape[0] == 2 and features.ndim == 2 and np.all(np.isfinite(features))
    for model, inputs in ((generator, rng.uniform(size=(2, int(generator.input.shape[-1])))
                           .astype(np.float32)), (discriminator, images)):
        config = model.get_config()
        clone = model.__class__.from_config(config)
        clone.set_weights(model.get_weights())
        for ours, theirs in zip(outputs_of(model, inputs), outputs_of(clone, inputs)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
        assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


@pytest.mark.parametrize("name", NAMES)
def test_weights_save_and_load_into_a_fresh_build(name, tmp_path, rng):
    generator, discriminator = build(name)
    path = str(tmp_path / f"{name}.weights.h5")
    save_gan_weights(path, generator, discriminator)
    fresh_generator, fresh_discriminator = build(name)
    load_gan_weights(path, fresh_generator, fresh_discriminator)
    images = tiny_batch(generator, rng)
    np.testing.assert_allclose(tiny_batch(fresh_generator, np.random.default_rng(0)),
                               tiny_batch(generator, np.random.default_rng(0)), atol=1e-6)
    for ours, theirs in zip(outputs_of(discriminator, images),
                            outputs_of(fresh_discriminator, images)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_every_family_declares_its_contract(name):
    from zoo.models.family import Family
    from zoo.training.wrapper import TrainingWrapper

    family = get_family(REGISTRY[name].family)
    assert isinstance(family, Family) and family.name == REGISTRY[name].family
    _, discriminator = build(name)
    assert tuple(discriminator.input.shape[1:3]) == (family.image_size, family.image_size)
    assert family.margin >= 0 and family.hash_head in ("itq", "sign")
    assert isinstance(family.training_wrapper(), TrainingWrapper)
    if family.hash_head == "sign":
        head = family.sign_hash_head(4)
        assert head.bits(np.array([[0.5, -0.1, 0.0, -2.0]], np.float32)).tolist() == [
            [1, 0, 1, 0]]
    else:
        with pytest.raises(ValueError, match="fitted head"):
            family.sign_hash_head(4)


def test_a_family_with_an_unknown_hash_head_is_refused():
    from zoo.models.family import Family

    with pytest.raises(ValueError, match="hash_head must be one of"):
        Family("x", build_gan=None, build_feature_extractor=None, image_size=8, margin=0,
               hash_head="pq")

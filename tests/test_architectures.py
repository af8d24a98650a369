"""Every registered model builds, runs, counts its parameters and round-trips."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.loading import build
from zoo.models import get_family, sketch_gan
from zoo.registry import REGISTRY
from zoo.weights import load_gan_weights, save_gan_weights

# (G, D, encoder) trainable parameters from the spec's table (weights + biases + BN gamma/beta).
PARAMETER_COUNTS = {"sketch": (22_225, 17_825, 16_800), "thin": (27_505, 25_633, 24_608)}


def trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if e.family == "sketch_gan"))
def test_build_forward_shapes_and_counts(name, rng):
    entry = REGISTRY[name]
    generator, discriminator = build(name)
    encoder = get_family(entry.family).build_feature_extractor(discriminator)
    g_count, d_count, encoder_count = PARAMETER_COUNTS[entry.architecture["architecture"]]
    assert (trainable(generator), trainable(discriminator), trainable(encoder)) == (
        g_count, d_count, encoder_count)

    latent = rng.standard_normal((3, entry.architecture["latent_dim"])).astype(np.float32)
    images = generator(latent, training=False).numpy()
    assert images.shape == (3, 64, 64, 1)
    assert np.all((images >= 0) & (images <= 1))
    logits = discriminator(images, training=False).numpy()
    features = encoder(images, training=False).numpy()
    assert logits.shape == (3, 1) and features.shape == (3, 1024)
    assert np.all(np.isfinite(logits)) and np.all(features >= 0)


def test_paper_totals():
    for architecture, total in (("sketch", 40_050), ("thin", 53_138)):
        generator, discriminator = sketch_gan.build_gan(architecture)
        assert trainable(generator) + trainable(discriminator) == total


@pytest.mark.parametrize("architecture", ["sketch", "thin"])
def test_config_round_trip(architecture, rng):
    import keras

    discriminator = sketch_gan.build_discriminator(architecture)
    clone = keras.Model.from_config(discriminator.get_config())
    clone.set_weights(discriminator.get_weights())
    images = rng.random((2, 64, 64, 1), dtype=np.float32)
    np.testing.assert_allclose(clone(images).numpy(), discriminator(images).numpy(), atol=1e-6)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_weights_save_load_allclose(name, tmp_path, rng):
    generator, discriminator = build(name)
    for variable in discriminator.non_trainable_weights:  # BN statistics must travel too
        variable.assign(rng.random(variable.shape).astype(np.float32) + 0.5)
    path = str(tmp_path / f"{name}.weights.h5")
    sha256 = save_gan_weights(path, generator, discriminator)
    new_generator, new_discriminator = build(name)
    load_gan_weights(path, new_generator, new_discriminator, expected_sha256=sha256)
    latent = rng.standard_normal((2, generator.input.shape[-1])).astype(np.float32)
    images = generator(latent, training=False)
    np.testing.assert_allclose(new_generator(latent, training=False), images, atol=1e-6)
    for new, old in zip(tf.nest.flatten(new_discriminator(images, training=False)),
                        tf.nest.flatten(discriminator(images, training=False))):
        np.testing.assert_allclose(new, old, atol=1e-5)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = str(tmp_path / "thin.weights.h5")
    save_gan_weights(path, *sketch_gan.build_gan("thin"))
    with pytest.raises(ValueError, match="shape|no variable"):
        load_gan_weights(path, *sketch_gan.build_gan("sketch"))


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="expected one of"):
        sketch_gan.build_discriminator("wide")


@pytest.mark.parametrize("kernel_size, block", [(9, 4), (9, 2), (5, 4), (3, 2)])
def test_space_to_depth_conv_computes_the_conv2d_and_its_gradients(kernel_size, block, rng):
    """The generator's last layer runs as SpaceToDepthConv2D (issue 16): it must be the same
    function of the same kernel as Conv2D, forward and backward, or training results change."""
    import keras

    inputs = tf.constant(rng.standard_normal((2, 16, 16, 5)).astype(np.float32))
    reference = keras.layers.Conv2D(3, kernel_size, padding="same", activation="sigmoid")
    fast = sketch_gan.SpaceToDepthConv2D(3, kernel_size, block=block, padding="same",
                                         activation="sigmoid")
    reference.build(inputs.shape)
    fast.build(inputs.shape)
    assert [w.shape for w in fast.weights] == [w.shape for w in reference.weights]
    fast.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.1
                      for w in reference.weights])
    reference.set_weights(fast.get_weights())
    gradients = []
    for layer in (reference, fast):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(layer(inputs) ** 2)
        gradients.append([g.numpy() for g in tape.gradient(loss, [inputs, layer.kernel])])
    np.testing.assert_allclose(fast(inputs).numpy(), reference(inputs).numpy(), atol=1e-5)
    for got, expected in zip(gradients[1], gradients[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    clone = sketch_gan.SpaceToDepthConv2D.from_config(fast.get_config())
    assert clone.block == block and clone.kernel_size == (kernel_size, kernel_size)
    with pytest.raises(ValueError, match="stride-1 'same'"):
        sketch_gan.SpaceToDepthConv2D(1, 9, strides=2, padding="same")
    with pytest.raises(ValueError, match="multiples"):
        sketch_gan.SpaceToDepthConv2D(1, 9, block=4, padding="same").build((1, 18, 18, 1))


@pytest.mark.parametrize("channels", [1, 3])
def test_input_gradient_by_blocks_is_the_conv2d_gradient(channels, rng):
    """sketch-GAN+'s first discriminator layer computes its input gradient on space-to-depth
    blocks in training (issue 16): forward pass and both gradients must be Conv2D's, and
    outside training it must be the plain Conv2D, bit for bit (encoders, exports)."""
    import keras

    inputs = tf.constant(rng.random((2, 16, 16, channels)).astype(np.float32))
    reference = keras.layers.Conv2D(8, 9, padding="same")
    fast = sketch_gan.SpaceToDepthInputGradientConv2D(8, 9, padding="same")
    reference.build(inputs.shape)
    fast.build(inputs.shape)
    fast.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.1
                      for w in reference.weights])
    reference.set_weights(fast.get_weights())
    upstream = tf.constant(rng.standard_normal((2, 16, 16, 8)).astype(np.float32))
    gradients = []
    for layer, kwargs in ((reference, {}), (fast, {"training": True})):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, **kwargs)
        gradients.append(tape.gradient(outputs, [inputs, layer.kernel, layer.bias], upstream))
    np.testing.assert_allclose(fast(inputs, training=True).numpy(), reference(inputs).numpy(),
                               atol=1e-6)
    for got, expected in zip(gradients[1], gradients[0]):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fast(inputs, training=False).numpy(),
                                  reference(inputs).numpy())
    clone = sketch_gan.SpaceToDepthInputGradientConv2D.from_config(fast.get_config())
    assert clone.block == 4 and clone.kernel_size == (9, 9)
    with pytest.raises(ValueError, match="multiples"):
        sketch_gan.SpaceToDepthInputGradientConv2D(1, 9, padding="same").build((1, 18, 18, 1))


def test_sketch_gan_plus_first_layer_computes_its_input_gradient_by_blocks():
    from zoo.models import sketch_gan_plus

    discriminator = sketch_gan_plus.build_discriminator()
    assert isinstance(discriminator.get_layer("d0_conv"),
                      sketch_gan.SpaceToDepthInputGradientConv2D)

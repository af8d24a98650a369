"""BinGAN+: the multi-head discriminator, its augmentation, pixel-neighbour partners, the
straight-through sign, calibration and the training wrapper (tiny sizes)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.models import bingan_plus
from zoo.training import bingan_plus as training
from zoo.recipes import BinGANPlusRecipe
from zoo.training.train import train_gan

TINY = dict(heads=(4, 8), widths=(4, 8), generator_widths=(16, 8, 4), latent_dim=10)


def tiny_recipe(**changes):
    return BinGANPlusRecipe(iterations=4, batch_size=8, checkpoint_every=2, sample_every=2,
                            latent_dim=10, init_count=32, neighbour_k=2).replace(**changes)


def test_each_head_is_an_output_and_the_entry_reads_its_own():
    _, discriminator = bingan_plus.build_gan(num_bits=8, **TINY)
    outputs = dict(zip(discriminator.output_names,
                       discriminator(np.random.default_rng(0).uniform(
                           size=(3, 32, 32, 1)).astype(np.float32))))
    assert outputs["out_logits"].shape == (3, 2) and outputs["out_high"].shape == (3, 8)
    assert outputs["out_code_4"].shape == (3, 4) and outputs["out_code_8"].shape == (3, 8)
    assert bingan_plus.code_heads(discriminator) == [4, 8]
    extractor = bingan_plus.build_feature_extractor(discriminator)
    np.testing.assert_array_equal(extractor(np.zeros((1, 32, 32, 1), np.float32)),
                                  discriminator(np.zeros((1, 32, 32, 1), np.float32))[3])
    assert extractor.output_shape == (None, 8)
    _, narrow = bingan_plus.build_gan(num_bits=4, **TINY)
    assert bingan_plus.build_feature_extractor(narrow).output_shape == (None, 4)
    with pytest.raises(ValueError, match="Expected a BinGAN\\+ discriminator"):
        bingan_plus.build_feature_extractor(keras.Sequential([keras.Input((2,))], name="other"))


def test_entries_that_differ_only_in_num_bits_share_their_weights(tmp_path):
    keras.utils.set_random_seed(0)
    _, wide = bingan_plus.build_gan(num_bits=8, **TINY)
    _, narrow = bingan_plus.build_gan(num_bits=4, **TINY)
    path = str(tmp_path / "d.weights.h5")
    wide.save_weights(path)
    narrow.load_weights(path)
    images = np.random.default_rng(1).uniform(size=(2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(bingan_plus.build_feature_extractor(narrow)(images),
                               dict(zip(wide.output_names, wide(images)))["out_code_4"],
                               rtol=1e-5, atol=1e-6)


def test_bad_heads_are_refused_with_the_expected_values():
    with pytest.raises(ValueError, match="must be one of the code heads"):
        bingan_plus.build_discriminator(num_bits=32, heads=(16, 64))
    with pytest.raises(ValueError, match="distinct positive"):
        bingan_plus.build_discriminator(num_bits=16, heads=(16, 16))
    with pytest.raises(ValueError, match="three rates"):
        bingan_plus.build_discriminator(num_bits=16, heads=(16,), dropout=(0.1,))


def test_straight_through_sign_is_the_sign_forward_and_tanh_backward():
    code = tf.constant([[-2.0, -0.1, 0.0, 0.3]])
    with tf.GradientTape() as tape:
        tape.watch(code)
        out = training.straight_through_sign(code)
        total = tf.reduce_sum(out * tf.constant([[1.0, 2.0, 3.0, 4.0]]))
    np.testing.assert_array_equal(out.numpy(), [[-1.0, -1.0, 1.0, 1.0]])
    expected = (1.0 - np.tanh(code.numpy()) ** 2) * [[1.0, 2.0, 3.0, 4.0]]
    np.testing.assert_allclose(tape.gradient(total, code).numpy(), expected, rtol=1e-6)


def test_augment_flips_about_half_and_is_the_identity_when_switched_off(rng):
    images = rng.uniform(size=(64, 32, 32, 1)).astype(np.float32)
    seed = tf.constant([3, 4], tf.int64)
    identity = training.augment(images, seed, shift_pixels=0.0, scale_range=0.0, flip=False)
    np.testing.assert_allclose(identity.numpy(), images, atol=1e-5)
    flipped = training.augment(images, seed, shift_pixels=0.0, scale_range=0.0, flip=True).numpy()
    mirrored = np.array([np.allclose(f, i[:, ::-1], atol=1e-5) for f, i in zip(flipped, images)])
    unchanged = np.array([np.allclose(f, i, atol=1e-5) for f, i in zip(flipped, images)])
    assert np.all(mirrored | unchanged) and 16 < mirrored.sum() < 48
    again = training.augment(images, seed, shift_pixels=0.0, scale_range=0.0, flip=True).numpy()
    np.testing.assert_array_equal(flipped, again)  # a stateless seed draws the same views


def test_pixel_neighbours_are_the_nearest_other_images():
    # Images of constant intensity 0, 0.1, 0.25, 0.7, 0.72: neighbours by |difference|.
    values = np.array([0.0, 0.1, 0.25, 0.7, 0.72], np.float32)
    images = np.ones((5, 4, 4, 1), np.float32) * values[:, None, None, None]
    neighbours = training.pixel_neighbours(images, k=2, batch_size=2)
    np.testing.assert_array_equal(neighbours, [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]])


def test_partners_are_the_image_itself_or_one_of_its_pixel_neighbours(rng):
    images = rng.uniform(size=(40, 32, 32, 1)).astype(np.float32)
    alone = next(iter(training.batch_dataset(images, tiny_recipe(neighbours=0.0), 0, 1))).numpy()
    np.testing.assert_array_equal(alone[:8], alone[8:])
    recipe = tiny_recipe(neighbours=1.0)
    neighbours = training.pixel_neighbours(images, k=2)
    first = [b.numpy() for b in training.batch_dataset(images, recipe, 0, 3)]
    for batch in first:
        real, partner = batch[:8], batch[8:]
        for x, p in zip(real, partner):
            index = int(np.argmin(np.abs(images - x).sum(axis=(1, 2, 3))))
            partner_index = int(np.argmin(np.abs(images - p).sum(axis=(1, 2, 3))))
            assert partner_index in neighbours[index]
    resumed = [b.numpy() for b in training.batch_dataset(images, recipe, 2, 3)]
    np.testing.assert_array_equal(resumed[0], first[2])  # batch s depends only on (seed, s)


def test_calibration_balances_every_head(rng):
    images = (rng.uniform(size=(200, 32, 32, 1)) ** 3).astype(np.float32)
    generator, discriminator = bingan_plus.build_gan(num_bits=4, **TINY)
    medians = bingan_plus.calibrate(discriminator, images)
    assert sorted(medians) == [4, 8]
    outputs = dict(zip(discriminator.output_names, discriminator(images, training=False)))
    for bits in (4, 8):
        ones = (np.asarray(outputs[f"out_code_{bits}"]) >= 0).mean(axis=0)
        np.testing.assert_allclose(ones, 0.5, atol=0.01)


def test_training_logs_its_losses_resumes_and_without_the_gan_leaves_g_alone(tmp_path, rng):
    images = (rng.uniform(size=(64, 32, 32, 1)) ** 3).astype(np.float32)

    def run(out, iterations, **changes):
        tf.keras.utils.set_random_seed(0)
        nets = bingan_plus.build_gan(num_bits=8, **TINY)
        trainer, _ = train_gan(*nets, images, tiny_recipe(iterations=iterations, **changes),
                               str(tmp_path / out), progress=False, wrapper=training.TRAINING)
        return nets, trainer

    (generator, discriminator), trainer = run("straight", 4)
    log = open(tmp_path / "straight" / "log.csv").read().splitlines()
    header = log[0].split(",")
    for name in ("con", "dmr", "bre", "gan_loss", "g_loss", "bit_balance"):
        assert name in header
    assert all(math.isfinite(float(v)) for v in log[-1].split(","))
    assert int(trainer.g_optimizer.iterations) == 4
    run("resumed", 2)
    (_, resumed), _ = run("resumed", 4)
    for a, b in zip(discriminator.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    _, alone = run("contrastive_only", 2, lambda_gan=0.0)
    assert int(alone.g_optimizer.iterations) == 0 and int(alone.d_optimizer.iterations) == 2


def test_bingan_plus_recipe_rejects_bad_values():
    with pytest.raises(ValueError, match="neighbours"):
        tiny_recipe(neighbours=1.5)
    with pytest.raises(ValueError, match="two different views"):
        tiny_recipe(augment=False, neighbours=0.0)
    with pytest.raises(ValueError, match="lambda_gan"):
        tiny_recipe(lambda_gan=-1.0)
    assert tiny_recipe(augment=False, neighbours=0.0, lambda_con=0.0).lambda_con == 0

"""BinGAN: layers, regularisers on hand-computed cases, training wrapper, data loaders."""

import gzip
import io
import math
import pickle
import tarfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.data.cifar10 import load_cifar10
from zoo.data.fashion_mnist import load_fashion_mnist, read_idx
from zoo.models import bingan
from zoo.training import bingan as training
from zoo.recipes import BinGANRecipe
from zoo.training.train import train_gan

TINY = dict(num_bits=8, widths=(4, 8), generator_widths=(16, 8, 4), latent_dim=10)


def trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


# ----------------------------------------------------------------------------- architecture


def test_paper_sized_configuration_matches_the_spec():
    generator, discriminator = bingan.build_gan(num_bits=16, channels=3)
    assert trainable(discriminator) == 1_408_004  # spec: ~1.41M at K = 16
    assert trainable(generator) == 4_933_382  # spec: ~4.93M (no bias before a BatchNorm)
    logits, code, high, matched = discriminator(np.zeros((2, 32, 32, 3), np.float32))
    assert logits.shape == (2, 2) and code.shape == (2, 16) and high.shape == (2, 192)
    assert matched.shape == (2, 16)  # retrieval: feature matching on the code layer


def test_matching_variant_taps():
    _, discriminator = bingan.build_gan(num_bits=256, variant="matching", widths=(96, 128))
    logits, code, high, matched = discriminator(np.zeros((1, 32, 32, 1), np.float32))
    assert code.shape == (1, 256) and high.shape == (1, 6 * 6 * 128) and matched.shape == (1, 128)


def test_only_the_final_dense_layers_train_their_scale():
    _, discriminator = bingan.build_gan(**TINY)
    trained = {v.path.split("/")[0] for v in discriminator.trainable_weights
               if v.path.endswith("scale")}
    assert trained == {"code", "logits"}


def test_generator_output_is_in_the_unit_range():
    generator, _ = bingan.build_gan(**TINY)
    images = generator(np.random.default_rng(0).uniform(size=(3, 10)).astype(np.float32)).numpy()
    assert images.shape == (3, 32, 32, 1) and images.min() >= 0 and images.max() <= 1


def test_weight_norm_dense_data_dependent_init_standardises_units():
    layer = bingan.WeightNormDense(5, init_scale=1.0)
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(400, 7)).astype(np.float32)
    layer(x)
    layer.initialize_from(x)
    out = layer(x).numpy()
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-3)
    # w = g v / ||v||: rescaling v leaves the layer unchanged
    layer.kernel.assign(layer.kernel * 3.0)
    np.testing.assert_allclose(layer(x).numpy(), out, atol=1e-4)


def test_initialisation_balances_the_training_mode_bits(rng):
    images = rng.uniform(size=(300, 32, 32, 1)).astype(np.float32) ** 4
    generator, discriminator = bingan.build_gan(**TINY)
    _, code, _, _ = discriminator(images, training=True)
    before = training.code_statistics(tf.constant(code))[0].numpy()
    bingan.initialize(generator, discriminator, images, seed=0, count=300)
    _, code, _, _ = discriminator(images, training=True)
    balance, _ = training.code_statistics(tf.constant(code))
    assert balance.numpy() < 0.15 < before or balance.numpy() < before


def test_calibration_centres_inference_mode_bits(rng):
    images = rng.uniform(size=(200, 32, 32, 1)).astype(np.float32)
    _, discriminator = bingan.build_gan(**TINY)
    discriminator.get_layer("code").bias.assign(np.full(8, 5.0, np.float32))  # all bits 1
    bingan.calibrate(discriminator, images)
    codes = bingan.build_feature_extractor(discriminator)(images, training=False).numpy()
    np.testing.assert_allclose((codes >= 0).mean(axis=0), 0.5, atol=0.01)


# ----------------------------------------------------------------------------- regularisers


def test_dmr_is_zero_when_codes_reproduce_the_high_dim_inner_products():
    h = tf.constant([[1.0, 1.0, -1.0, 1.0], [1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, 1.0]])
    assert float(training.distance_matching(h, h)) == pytest.approx(0.0)
    # pair (0, 1): h.h / M = 2 / 2 = 1; b.b / K = 0 / 2 = 0  -> mean |1 - 0| over 2 ordered pairs
    high = tf.constant([[1.0, 1.0], [1.0, 1.0]])
    code = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    assert float(training.distance_matching(code, high)) == pytest.approx(1.0)


def test_bre_marginal_term_is_zero_for_balanced_bits():
    code = tf.constant([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])
    high = tf.constant([[1.0, -1.0], [1.0, 1.0]])
    _, marginal, _ = training.bit_entropy(code, high)
    assert float(marginal) == pytest.approx(0.0)
    _, marginal, _ = training.bit_entropy(tf.ones((2, 3)), high)
    assert float(marginal) == pytest.approx(1.0)  # constant bits: (batch mean)^2 = 1 per bit


def test_bre_correlation_weights_follow_the_formula():
    # B = 2, K = 2, M = 2, beta = 2: |h0.h1| = 2 -> w = exp(-2 / (2 * 2)) = exp(-0.5);
    # |b0.b1| = 2 -> AC = 2 pairs * w * 2 / (B (B - 1) K) = exp(-0.5)
    high = tf.constant([[1.0, 1.0], [1.0, 1.0]])
    code = tf.constant([[1.0, 1.0], [1.0, 1.0]])
    total, marginal, activation = training.bit_entropy(code, high, beta=2.0)
    assert float(activation) == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert float(total) == pytest.approx(float(marginal) + math.exp(-0.5), rel=1e-6)
    orthogonal = tf.constant([[1.0, 1.0], [1.0, -1.0]])
    assert float(training.bit_entropy(orthogonal, high)[2]) == pytest.approx(0.0)


def test_relaxed_code_approaches_the_sign():
    values = tf.constant([-2.0, -0.5, 0.5, 3.0])
    np.testing.assert_allclose(training.relaxed_code(values, 0.001).numpy(),
                               [-1, -1, 1, 1], atol=2e-3)


# ----------------------------------------------------------------------------- training


def test_train_step_logs_every_loss_and_code_statistic_and_resumes(tmp_path, rng):
    images = (rng.uniform(size=(64, 32, 32, 1)) ** 3).astype(np.float32)
    recipe = BinGANRecipe(iterations=4, batch_size=8, checkpoint_every=2, sample_every=2,
                          latent_dim=10, init_count=32, precision="float32")

    def run(out, iterations):
        tf.keras.utils.set_random_seed(0)
        nets = bingan.build_gan(**TINY)
        trainer, _ = train_gan(*nets, images, recipe.replace(iterations=iterations),
                               str(tmp_path / out), progress=False, wrapper=training.TRAINING)
        return nets, trainer

    (generator, discriminator), trainer = run("straight", 4)
    log = open(tmp_path / "straight" / "log.csv").read().splitlines()
    header = log[0].split(",")
    for name in ("d_loss", "g_loss", "dmr", "bre", "bit_balance", "bit_correlation"):
        assert name in header
    assert all(math.isfinite(float(v)) for v in log[-1].split(","))
    assert (tmp_path / "straight" / "samples" / "step_000002.png").exists()
    run("resumed", 2)
    (g2, d2), _ = run("resumed", 4)
    for a, b in zip(discriminator.weights, d2.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_generator_init_is_the_official_codes_unless_undone_for_the_ablation():
    keras.utils.set_random_seed(0)
    official = bingan.build_generator(latent_dim=100, widths=(64, 32, 16))
    dense = official.get_layer("g_dense")
    assert dense.bias is None and official.get_layer("g_deconv1").bias is None  # BN shifts
    assert np.std(dense.kernel.numpy()) == pytest.approx(0.05, rel=0.05)  # N(0, 0.05)
    before = bingan.build_generator(latent_dim=100, widths=(64, 32, 16), init="keras")
    assert before.get_layer("g_dense").bias is not None
    with pytest.raises(ValueError, match="init 'official' or 'keras'"):
        bingan.build_generator(init="lasagne")


def test_official_adam_keeps_epsilon_inside_the_square_root():
    """nn.adam_updates: p -= lr m_hat / sqrt(v_hat + 1e-8), hand-computed for one step."""
    from zoo.training.bingan import OfficialAdam

    for gradient, expected_step in ((0.5, 0.1 * 0.5 / np.sqrt(0.25 + 1e-8)),
                                    (1e-6, 0.1 * 1e-6 / np.sqrt(1e-12 + 1e-8))):
        variable = keras.Variable(np.float32(1.0))
        optimizer = OfficialAdam(0.1, beta_1=0.5)
        optimizer.apply_gradients([(np.float32(gradient), variable)])
        # bias-corrected moments after one step: m_hat = g, v_hat = g^2
        assert float(variable.numpy()) == pytest.approx(1.0 - expected_step, rel=1e-5, abs=1e-9)
    # A tiny gradient moves the parameter by about 1% of lr, not Keras Adam's ~90%.
    assert 0.1 * 1e-6 / np.sqrt(1e-12 + 1e-8) < 0.0011


def test_learning_rate_is_constant_by_default_or_decays_linearly_at_the_end():
    assert training.learning_rate_schedule(BinGANRecipe()) == pytest.approx(3e-4)  # official
    schedule = training.learning_rate_schedule(
        BinGANRecipe(iterations=300, checkpoint_every=100, decay_fraction=1 / 3))
    assert float(schedule(0)) == pytest.approx(3e-4)
    assert float(schedule(200)) == pytest.approx(3e-4)
    assert float(schedule(250)) == pytest.approx(1.5e-4)
    assert float(schedule(300)) == pytest.approx(0.0)


def test_collapse_guard_stops_a_collapsed_run():
    guard = training.CollapseGuard(threshold=0.9, patience=2, after_steps=0, steps_per_epoch=1)
    guard.on_epoch_end(0, {"bit_correlation": 0.95})
    with pytest.raises(RuntimeError, match="collapsed"):
        guard.on_epoch_end(1, {"bit_correlation": 0.97})
    healthy = training.CollapseGuard(threshold=0.9, patience=2, after_steps=0, steps_per_epoch=1)
    for epoch, value in enumerate([0.95, 0.3, 0.95]):
        healthy.on_epoch_end(epoch, {"bit_correlation": value})


def test_bingan_recipe_rejects_bad_values():
    with pytest.raises(ValueError, match="d_steps"):
        BinGANRecipe(d_steps=2)
    with pytest.raises(ValueError, match="lambda_bre"):
        BinGANRecipe(lambda_bre=-1.0)
    with pytest.raises(ValueError, match="Unknown recipe keys"):
        BinGANRecipe.from_dict({"lambda_dmrr": 0.1})


# ----------------------------------------------------------------------------- data


def _idx(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_fashion_mnist_idx_reader(tmp_path, rng):
    images = rng.integers(0, 256, size=(5, 28, 28))
    labels = np.arange(5)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images, 2051)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(labels, 2049))
    x, y = load_fashion_mnist(str(tmp_path), "train")
    assert x.shape == (5, 32, 32, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 2:30, 2:30, 0], images / 255.0, atol=1e-7)
    assert x[:, :2].max() == 0 and y.tolist() == labels.tolist()
    (tmp_path / "bad").write_bytes(_idx(images, 2051)[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path), "test")


def test_cifar10_python_archive_reader(tmp_path, rng):
    data = rng.integers(0, 256, size=(4, 3072)).astype(np.uint8)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            raw = pickle.dumps({b"data": data, b"labels": [1, 2, 3, 4]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    images, labels = load_cifar10(str(archive), "train")
    assert images.shape == (20, 32, 32, 3) and labels.shape == (20,)
    np.testing.assert_allclose(images[0, 0, 0], data[0, [0, 1024, 2048]] / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match="cifar-10-python"):
        load_cifar10(str(tmp_path / "missing.tar.gz"))

"""sketch-GAN+ (issue 8): read-out and whitening, augmentation, the contrastive loss, training."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.data.merchant_marks import make_corpus
from zoo.encoder import Encoder
from zoo.apps.evaluation.transforms import rotate
from zoo.models import sketch_gan_plus
from zoo.training import sketch_gan_plus as training
from zoo.recipes import SketchGANPlusRecipe
from zoo.training.run import float32_networks
from zoo.training.train import batch_dataset, train_gan

TINY = dict(widths=(4, 4, 8, 8), latent_dim=4, projection_dim=8, embedding_dim=16)


def test_discriminator_outputs_and_pooled_multi_layer_readout():
    _, discriminator = sketch_gan_plus.build_gan(**TINY)
    logit, projection, features = discriminator(np.zeros((2, 64, 64, 1), np.float32))
    assert logit.shape == (2, 1) and projection.shape == (2, 8) and features.shape == (2, 16)
    readout = discriminator.get_layer("readout").output
    assert readout.shape[-1] == (4 + 8 + 8) * 16  # three blocks, each pooled to a 4x4 grid
    encoder = Encoder("tiny", sketch_gan_plus.build_feature_extractor(discriminator))
    assert encoder.embedding_dim == 16


def test_registered_size_and_parameter_counts():
    from zoo.registry import SKETCH_PLUS_ARCHITECTURE

    generator, discriminator = sketch_gan_plus.build_gan(**SKETCH_PLUS_ARCHITECTURE)
    encoder = sketch_gan_plus.build_feature_extractor(discriminator)

    def trainable(model):
        return sum(int(np.prod(v.shape)) for v in model.trainable_weights)

    assert (trainable(generator), trainable(discriminator), trainable(encoder)) == (
        26_065, 1_212_737, 270_336)  # as in MODELS.md
    assert encoder.output_shape == (None, 256)
    assert discriminator.get_layer("readout").output.shape[-1] == (32 + 64 + 128) * 16


def test_bad_widths_are_refused():
    with pytest.raises(ValueError, match="four positive widths"):
        sketch_gan_plus.build_discriminator(widths=(8, 16, 32))


def test_whitening_transform_decorrelates_and_unit_scales(rng):
    mixing = rng.normal(size=(6, 6))
    features = rng.normal(size=(2000, 6)) @ mixing + 5.0
    mean, projection = sketch_gan_plus.whitening_transform(features, 4, epsilon=0.0)
    whitened = (features - mean) @ projection
    np.testing.assert_allclose(np.cov(whitened, rowvar=False), np.eye(4), atol=1e-6)
    # The components are the leading ones: their variance before scaling is the largest.
    variances = np.var((features - mean) @ np.linalg.eigh(np.cov(features, rowvar=False))[1],
                       axis=0)
    kept = np.var((features - mean) @ (projection / np.linalg.norm(projection, axis=0)), axis=0)
    np.testing.assert_allclose(np.sort(kept)[::-1], np.sort(variances)[::-1][:4], rtol=1e-6)


def test_calibrate_fits_the_whitening_layer_inside_the_encoder(small_corpus):
    tf.keras.utils.set_random_seed(0)
    _, discriminator = sketch_gan_plus.build_gan(**TINY)
    images = small_corpus.images
    sketch_gan_plus.calibrate(discriminator, images)
    features = sketch_gan_plus.build_feature_extractor(discriminator)(images).numpy()
    assert features.shape == (len(images), 16)
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-3)
    # The leading component has variance lambda / (lambda + eps * lambda): 1 / (1 + eps).
    variances = features.var(axis=0, ddof=1)
    epsilon = sketch_gan_plus.WHITENING_EPSILON
    assert variances[0] == pytest.approx(1 / (1 + epsilon), rel=1e-3)
    assert np.all(variances <= 1 / (1 + epsilon) + 1e-3)


def test_augment_identity_when_every_range_is_zero(small_corpus):
    images = tf.constant(small_corpus.images[:4])
    out = training.augment(images, tf.constant([1, 2], tf.int64), 0.0, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(out.numpy(), images.numpy(), atol=1e-5)


def test_augment_rotation_matches_the_evaluation_transform(small_corpus):
    # With only rotation on and a range of 10 degrees, each image is rotated by some angle in
    # [-10, 10]; the best-matching evaluation rotation must reproduce it closely.
    images = small_corpus.images[:3]
    out = training.augment(tf.constant(images), tf.constant([3, 4], tf.int64), 10.0, 0.0, 0.0,
                           0.0).numpy()
    angles = np.arange(-10.0, 10.5, 0.5)
    for image, augmented in zip(images, out):
        errors = [np.abs(rotate(image[None], a)[0] - augmented).mean() for a in angles]
        assert min(errors) < 0.2 * np.abs(image - augmented).mean() + 1e-3


def test_augment_is_seeded_bounded_and_differentiable(small_corpus):
    images = tf.constant(small_corpus.images[:8])
    seed = tf.constant([5, 6], tf.int64)
    first, again = training.augment(images, seed), training.augment(images, seed)
    other = training.augment(images, tf.constant([5, 7], tf.int64))
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.allclose(first.numpy(), other.numpy())
    assert first.numpy().min() >= 0 and first.numpy().max() <= 1
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(training.augment(images, seed) ** 2)
    gradient = tape.gradient(total, images)
    assert gradient is not None and float(tf.reduce_sum(tf.abs(gradient))) > 0


HAND_AND_SCAN = {"elastic_pixels": 2.0, "shear": 0.1, "break_fraction": 0.1,
                 "blur_probability": 1.0, "ink_noise": 0.2}


def test_hand_and_scan_augment_is_the_identity_when_off(small_corpus):
    images = tf.constant(small_corpus.images[:4])
    out = training.hand_and_scan_augment(images, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(out.numpy(), images.numpy())


@pytest.mark.parametrize("field", sorted(HAND_AND_SCAN))
def test_each_hand_and_scan_change_is_seeded_bounded_and_differentiable(small_corpus, field):
    images = tf.constant(small_corpus.images[:6])
    seed, other = tf.constant([5, 6], tf.int64), tf.constant([5, 7], tf.int64)
    change = {field: HAND_AND_SCAN[field]}
    first = training.hand_and_scan_augment(images, seed, **change).numpy()
    np.testing.assert_array_equal(
        first, training.hand_and_scan_augment(images, seed, **change).numpy())
    assert not np.allclose(first, images.numpy(), atol=1e-3)
    if field != "blur_probability":  # blurring every view (probability 1) draws nothing
        assert not np.allclose(first, training.hand_and_scan_augment(images, other, **change))
    assert first.min() >= 0 and first.max() <= 1
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(training.hand_and_scan_augment(images, seed, **change) ** 2)
    assert float(tf.reduce_sum(tf.abs(tape.gradient(total, images)))) > 0


def test_hand_and_scan_changes_do_what_they_say(small_corpus):
    images = small_corpus.images[:8]
    seed = tf.constant([3, 9], tf.int64)

    def apply(source=images, **change):
        return training.hand_and_scan_augment(tf.constant(source), seed, **change).numpy()

    # Broken strokes take away that share of the sheet (on a sheet of ink: of the ink).
    ones = np.ones_like(images)
    assert apply(ones, break_fraction=0.1).mean() == pytest.approx(0.9, abs=0.01)
    broken = apply(break_fraction=0.1)
    assert np.all(broken <= images + 1e-6) and broken.sum() < 0.95 * images.sum()
    # Grain and blots only add ink; blur keeps the ink's total and spreads it.
    noisy = apply(ink_noise=0.2)
    assert np.all(noisy >= images - 1e-6) and noisy.sum() > images.sum()
    blurred = apply(blur_probability=1.0)
    assert abs(blurred.sum() / images.sum() - 1) < 0.03
    assert (blurred > 0.05).sum() > (images > 0.05).sum()
    # An elastic field of 2 px moves ink but keeps it in place within a few pixels.
    bent = apply(elastic_pixels=2.0)
    assert abs(bent.sum() / images.sum() - 1) < 0.05
    near_ink = tf.nn.max_pool2d(tf.constant(images), 7, 1, "SAME").numpy() > 0.5
    assert ((bent > 0.5) & ~near_ink).sum() < 0.01 * (bent > 0.5).sum()


def test_training_draws_hand_and_scan_views_when_a_field_is_set():
    images = make_corpus(num_identities=4, instances_per_identity=2, seed=3).images
    nets = sketch_gan_plus.build_gan(**TINY)
    base = SketchGANPlusRecipe(latent_dim=4, precision="float32", lambda_gan=0.0)
    plain = training.ContrastiveGANTrainer(*nets, base)
    scanned = training.ContrastiveGANTrainer(*nets, base.replace(break_fraction=0.2))
    assert not base.hand_and_scan and scanned.recipe.hand_and_scan
    for trainer in (plain, scanned):
        trainer.compile(keras.optimizers.Adam(), keras.optimizers.Adam())
    # Same step, same stream: the affine views agree; the break mask takes ink away.
    view, broken = plain._augment(images, 1).numpy(), scanned._augment(images, 1).numpy()
    assert np.all(broken <= view + 1e-6) and broken.sum() < 0.9 * view.sum()


def test_nt_xent_on_hand_computed_cases():
    # Orthogonal items, identical views: the positive has logit 1/t, every negative 0.
    views = np.eye(3, dtype=np.float32)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 4))
    assert float(training.nt_xent(views, views, t)) == pytest.approx(expected, rel=1e-5)
    # Every view the same: the positive is one of 2N - 1 equal candidates.
    same = np.ones((4, 5), np.float32)
    assert float(training.nt_xent(same, same, 0.1)) == pytest.approx(math.log(7), rel=1e-5)
    # Extra negatives join every view's denominator: one orthogonal to all views adds a 0 logit,
    # one equal to the first item adds 1/t to that item's two views only.
    padded = np.pad(views, ((0, 0), (0, 1)))
    orthogonal, alike = np.eye(4, dtype=np.float32)[3:], np.eye(4, dtype=np.float32)[:1]
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 5))
    assert float(training.nt_xent(padded, padded, t, orthogonal)) == pytest.approx(
        expected, rel=1e-5)
    first = -math.log(math.exp(1 / t) / (2 * math.exp(1 / t) + 4))
    expected = (2 * first + 4 * -math.log(math.exp(1 / t) / (math.exp(1 / t) + 5))) / 6
    assert float(training.nt_xent(padded, padded, t, alike)) == pytest.approx(expected, rel=1e-5)


def test_fake_negatives_put_the_generated_batch_into_the_contrastive_loss():
    """With fake_negatives the NT-Xent of a step depends on the generator's output; without,
    it does not (the same real batch, views and weights)."""
    images = make_corpus(num_identities=4, instances_per_identity=2, seed=3).images[:8]

    def con_loss(fake_negatives, generator_seed):
        tf.keras.utils.set_random_seed(0)
        discriminator = sketch_gan_plus.build_gan(**TINY)[1]
        tf.keras.utils.set_random_seed(generator_seed)
        generator = sketch_gan_plus.build_gan(**TINY)[0]
        recipe = SketchGANPlusRecipe(latent_dim=4, precision="float32",
                                     fake_negatives=fake_negatives, learning_rate=1e-12)
        trainer = training.ContrastiveGANTrainer(generator, discriminator, recipe)
        trainer.compile(keras.optimizers.Adam(1e-12), keras.optimizers.Adam(1e-12))
        return float(trainer.train_step(tf.constant(images))["con_loss"])

    assert con_loss(False, 1) == pytest.approx(con_loss(False, 2), rel=1e-6)
    with_fakes = con_loss(True, 1)
    assert with_fakes > con_loss(False, 1)  # more negatives, larger denominator
    assert with_fakes != pytest.approx(con_loss(True, 2), rel=1e-6)


@pytest.fixture(scope="module")
def marks():
    """Merchant marks never trained on: 12 identities x 4 drawings."""
    return make_corpus(num_identities=12, instances_per_identity=4, seed=11)


def test_embedding_neighbours_are_other_drawings_of_the_same_mark(marks):
    neighbours = training.embedding_neighbours("sketch_contrastive_merchant", marks.images, 3)
    assert neighbours.shape == (48, 3)
    assert not np.any(neighbours == np.arange(48)[:, None])  # never the image itself
    # The shipped encoder's nearest neighbours are mostly the mark's other drawings (3 each).
    same = marks.identities[neighbours] == marks.identities[:, None]
    assert same[:, 0].mean() > 0.9 and same.mean() > 0.75


def test_neighbour_batches_pair_each_image_with_itself_or_a_neighbour(marks):
    recipe = SketchGANPlusRecipe(batch_size=8, seed=3, neighbours=1.0, neighbour_k=2,
                                 neighbours_from="sketch_contrastive_merchant",
                                 neighbours_after=2)
    images = marks.images
    neighbours = training.embedding_neighbours("sketch_contrastive_merchant", images, 2)
    generic = list(batch_dataset(images, 8, 3, 0, 4))
    for step, batch in enumerate(training.batch_dataset(images, recipe, 0, 4)):
        batch = batch.numpy()
        assert batch.shape == (16, 64, 64, 1)
        np.testing.assert_array_equal(batch[:8], generic[step].numpy())  # the same sample
        index = [int(np.flatnonzero((images == image).all(axis=(1, 2, 3)))[0])
                 for image in batch]
        if step < recipe.neighbours_after:
            assert index[8:] == index[:8]
        else:
            assert all(p in neighbours[i] for i, p in zip(index[:8], index[8:]))
    # Without neighbour partners, the generic seeded sample.
    plain = training.batch_dataset(images, recipe.replace(neighbours=0.0), 0, 2)
    for batch, expected in zip(plain, generic):
        np.testing.assert_array_equal(batch.numpy(), expected.numpy())


def test_the_second_view_is_drawn_from_the_partners(marks):
    images = tf.constant(marks.images[:8])
    recipe = SketchGANPlusRecipe(latent_dim=4, precision="float32", lambda_gan=0.0,
                                 neighbours=0.5, neighbours_from="sketch_contrastive_merchant")
    trainer = training.ContrastiveGANTrainer(*sketch_gan_plus.build_gan(**TINY), recipe)
    x, p = trainer._images_and_partners(tf.concat([images[:4], images[4:]], 0))
    np.testing.assert_array_equal(x.numpy(), marks.images[:4])
    np.testing.assert_array_equal(p.numpy(), marks.images[4:8])
    plain = training.ContrastiveGANTrainer(*sketch_gan_plus.build_gan(**TINY),
                                           recipe.replace(neighbours=0.0))
    x, p = plain._images_and_partners(images)
    assert x is p


def test_training_with_neighbour_partners_runs_and_resumes(tmp_path, marks):
    recipe = SketchGANPlusRecipe(iterations=4, batch_size=8, checkpoint_every=2,
                                 sample_every=2, latent_dim=4, precision="float32",
                                 lambda_gan=0.0, neighbours=0.5, neighbours_after=2,
                                 neighbours_from="sketch_contrastive_merchant")

    def run(out, iterations):
        tf.keras.utils.set_random_seed(0)
        nets = sketch_gan_plus.build_gan(**TINY)
        train_gan(*nets, marks.images, recipe.replace(iterations=iterations),
                  str(tmp_path / out), progress=False, wrapper=training.TRAINING)
        return nets[1]

    straight = run("straight", 4)
    run("resumed", 2)
    resumed = run("resumed", 4)
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    log = open(tmp_path / "straight" / "log.csv").read().splitlines()
    assert math.isfinite(float(dict(zip(log[0].split(","), log[-1].split(",")))["con_loss"]))


def test_training_logs_the_contrastive_loss_resumes_and_calibrates(tmp_path):
    images = make_corpus(num_identities=8, instances_per_identity=2, seed=3).images
    recipe = SketchGANPlusRecipe(iterations=4, batch_size=8, checkpoint_every=2, sample_every=2,
                                 latent_dim=4, precision="float32")

    def run(out, iterations):
        tf.keras.utils.set_random_seed(0)
        nets = sketch_gan_plus.build_gan(**TINY)
        trainer, _ = train_gan(*nets, images, recipe.replace(iterations=iterations),
                               str(tmp_path / out), progress=False, wrapper=training.TRAINING)
        return nets

    generator, discriminator = run("straight", 4)
    log = open(tmp_path / "straight" / "log.csv").read().splitlines()
    assert "con_loss" in log[0].split(",")
    assert all(math.isfinite(float(v)) for v in log[-1].split(","))
    run("resumed", 2)
    _, resumed = run("resumed", 4)
    for a, b in zip(discriminator.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    # The published encoder is whitened on the training corpus.
    _, calibrated = float32_networks(sketch_gan_plus, TINY, (generator, discriminator), images)
    features = sketch_gan_plus.build_feature_extractor(calibrated)(images).numpy()
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-3)


def test_plain_gan_ablation_skips_the_contrastive_loss(tmp_path):
    images = make_corpus(num_identities=8, instances_per_identity=2, seed=3).images
    recipe = SketchGANPlusRecipe(iterations=2, batch_size=8, checkpoint_every=2, sample_every=2,
                                 latent_dim=4, precision="float32", lambda_con=0.0,
                                 augment=False)
    nets = sketch_gan_plus.build_gan(**TINY)
    train_gan(*nets, images, recipe, str(tmp_path), progress=False, wrapper=training.TRAINING)
    log = open(tmp_path / "log.csv").read().splitlines()
    row = dict(zip(log[0].split(","), log[-1].split(",")))
    assert float(row["con_loss"]) == 0.0 and math.isfinite(float(row["d_loss"]))


def test_contrastive_only_ablation_trains_the_encoder_without_the_gan(tmp_path):
    """lambda_gan=0 (issue 18's "what does the GAN add?" row): D learns from NT-Xent alone;
    the generator and the real/fake head are never updated."""
    images = make_corpus(num_identities=8, instances_per_identity=2, seed=3).images
    recipe = SketchGANPlusRecipe(iterations=3, batch_size=8, checkpoint_every=3, sample_every=3,
                                 latent_dim=4, precision="float32", lambda_gan=0.0)
    generator, discriminator = sketch_gan_plus.build_gan(**TINY)
    before = {w.path: w.numpy().copy() for w in generator.weights + discriminator.weights}
    train_gan(generator, discriminator, images, recipe, str(tmp_path), progress=False,
              wrapper=training.TRAINING)
    changed = {w.path for w in generator.weights + discriminator.weights
               if not np.array_equal(before[w.path], w.numpy())}
    assert not any(path in changed for path in (w.path for w in generator.weights))
    assert not any("real_fake_logit" in path for path in changed)
    assert any("d1_conv" in path for path in changed) and any("projection" in path
                                                                for path in changed)
    log = open(tmp_path / "log.csv").read().splitlines()
    row = dict(zip(log[0].split(","), log[-1].split(",")))
    assert float(row["con_loss"]) > 0 and float(row["g_loss"]) == 0.0


@pytest.mark.parametrize("changes, message", [
    ({"lambda_gan": 0.0, "lambda_con": 0.0}, "contrastive task is all"),
    ({"lambda_gan": -1.0}, "lambda_gan"),
    ({"temperature": 0.0}, "temperature"),
    ({"lambda_con": -1.0}, "lambda_con"),
    ({"stroke_probability": 0.7}, "stroke_probability"),
    ({"d_steps": 2}, "d_steps"),
    ({"augment": 0}, "needs augmentation"),
    ({"bogus": 1}, "Unknown recipe keys"),
    ({"elastic_pixels": -1.0}, "elastic_pixels"),
    ({"break_fraction": 1.0}, "break_fraction < 1"),
    ({"fake_negatives": 1, "lambda_gan": 0.0}, "fake_negatives needs the generator"),
    ({"neighbours": 1.5, "neighbours_from": "x"}, "share of the batch"),
    ({"neighbours": 0.5}, "needs neighbours_from"),
    ({"neighbour_k": 0}, "neighbour_k"),
    ({"neighbours_after": -1}, "neighbours_after"),
])
def test_recipe_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        SketchGANPlusRecipe().replace(**changes)


def test_max_pool_3x3_routes_gradients_as_tensorflows_max_pool(rng):
    """The stroke augmentation's 3x3 maximum (issue 16: faster gradient) must give the values
    of tf.nn.max_pool2d and route each output's gradient to the same input, ties included
    (line drawings are full of them)."""
    levels = rng.choice(np.float32([0.0, 0.5, 1.0]), size=(4, 16, 16, 1), p=[0.6, 0.2, 0.2])
    images = tf.constant(levels)
    upstream = tf.constant(rng.standard_normal((4, 16, 16, 1)).astype(np.float32))
    results = []
    for pool in (training.reference_max_pool_3x3, training.max_pool_3x3):
        with tf.GradientTape() as tape:
            tape.watch(images)
            pooled = pool(images)
        results.append((pooled.numpy(), tape.gradient(pooled, images, upstream).numpy()))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    # the same routing: only the order of summing an input's shares differs
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6, atol=1e-6)


def test_augment_without_stroke_changes_skips_the_pools(small_corpus):
    images = tf.constant(small_corpus.images[:8])
    seed = tf.constant([3, 4])
    skipped = training.augment(images, seed, stroke_probability=0.0)
    selected = training.augment(images, seed, stroke_probability=tf.constant(0.0))
    np.testing.assert_array_equal(skipped.numpy(), selected.numpy())

"""sketch-GAN+ training: the adversarial game plus a contrastive auxiliary task in D (issue 8).

Each step:

1. Two random views of the same real batch (`augment`: rotation, scale, shift, stroke width,
   the transformations the encoder should ignore) and one augmented generated batch.
2. Discriminator loss = lambda_gan x GAN loss on view 1 vs the augmented fakes (non-saturating,
   as in sketch-GAN; the same augmentation on both sides, so D cannot tell real from fake by it)
   + lambda_con x NT-Xent between the projections of the two real views (SimCLR, Chen et al.
   2020; in a discriminator as in ContraD, Jeong & Shin 2021); with `fake_negatives` the fakes'
   projections are extra negatives of every real view (issue 18: a use for the generator).
3. Generator loss = non-saturating loss on its augmented batch (gradients flow through the
   differentiable augmentation, as in DiffAugment, Zhao et al. 2020).

No labels are used. lambda_con = 0 and augmentation off give the plain GAN ablation rows;
lambda_gan weighs the GAN loss in step 2; lambda_gan = 0 gives the contrastive task alone (step
2 without the GAN loss, no step 3): the same network and read-out, trained without a generator.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from zoo.training.batches import neighbour_partners, seeded_sample, step_dataset
from zoo.training.gan import GANTrainer, _bce_with_logits, compile_with_adam
from zoo.training.wrapper import TrainingWrapper


_WINDOW_3X3 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # row-major window order


def _shifted(x, dy, dx, fill):
    """y[:, i, j] = x[:, i + dy, j + dx], `fill` where that falls outside x (|dy|, |dx| <= 1)."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=fill)
    return padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width, :]


@tf.autograph.experimental.do_not_convert
@tf.custom_gradient
def max_pool_3x3(x):
    """tf.nn.max_pool2d(x, 3, 1, "SAME") with the same gradient, computed faster.

    Each output's gradient goes to the first input of its window (row-major) that holds the
    maximum, as TensorFlow's MaxPoolGrad routes it; only the order in which an input's shares
    are summed differs (float32 rounding). The gradient is nine shifted selects instead of
    MaxPoolGrad, slow on the single-channel 64 x 64 images of a training batch: sketch-GAN+'s
    bf16 step took 0.669 s with the op's gradient and 0.645 s with this one
    (`python -m benchmarks.training_speed`, MODELS.md "Speed").
    """
    pooled = tf.nn.max_pool2d(x, 3, 1, "SAME")

    def gradient(upstream):
        lowest = tf.constant(-np.inf, x.dtype)
        taken = tf.zeros_like(x, dtype=tf.bool)
        result = tf.zeros_like(x)
        for dy, dx in _WINDOW_3X3:  # output (i, j) reads input (i + dy, j + dx)
            first = tf.logical_and(tf.equal(_shifted(x, dy, dx, lowest), pooled),
                                   tf.logical_not(taken))
            taken = tf.logical_or(taken, first)
            result += _shifted(tf.where(first, upstream, tf.zeros_like(upstream)), -dy, -dx, 0.0)
        return result

    return pooled, gradient


def reference_max_pool_3x3(x):
    """TensorFlow's own op, which max_pool_3x3 replaces in training (benchmarks, tests)."""
    return tf.nn.max_pool2d(x, 3, 1, "SAME")


def augment(images, seed, rotation_degrees=10.0, scale_range=0.15, shift_pixels=4.0,
            stroke_probability=0.3, max_pool=max_pool_3x3):
    """Random per-image rotation, scale and shift (one bilinear affine warp about the centre),
    then stroke width: thicken (3x3 max) or thin (3x3 min) with `stroke_probability` each.

    `seed` is a stateless seed [2] int; images [N, H, W, 1] in [0, 1]. Differentiable in images.
    `max_pool` computes the 3x3 maximum (max_pool_3x3, or reference_max_pool_3x3).
    """
    images = tf.convert_to_tensor(images)
    dtype = images.dtype
    images = tf.cast(images, tf.float32)
    count = tf.shape(images)[0]
    size = tf.cast(tf.shape(images)[1], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 5)
    angle = tf.random.stateless_uniform([count], seeds[0], -1.0, 1.0) * (
        rotation_degrees * math.pi / 180.0)
    scale = 1.0 + tf.random.stateless_uniform([count], seeds[1], -scale_range, scale_range)
    shift = tf.random.stateless_uniform([count, 2], seeds[2], -shift_pixels, shift_pixels)
    # Output pixel p samples input pixel A (p - c - t) + c, with A = R(-angle) / scale.
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    centre = (size - 1.0) / 2.0
    qx, qy = centre + shift[:, 0], centre + shift[:, 1]
    transforms = tf.stack([
        cos, -sin, centre - cos * qx + sin * qy,
        sin, cos, centre - sin * qx - cos * qy,
        tf.zeros_like(cos), tf.zeros_like(cos)], axis=1)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    if isinstance(stroke_probability, (int, float)) and stroke_probability <= 0:
        out = warped  # what the selects below give: no image is thickened or thinned
    else:
        choice = tf.random.stateless_uniform([count, 1, 1, 1], seeds[3])
        thick = max_pool(warped)
        thin = -max_pool(-warped)
        out = tf.where(choice < stroke_probability, thick,
                       tf.where(choice > 1.0 - stroke_probability, thin, warped))
    return tf.cast(tf.clip_by_value(out, 0.0, 1.0), dtype)


def _bilinear_sample(images, x, y):
    """images [N, H, W, 1] sampled at pixel coordinates x, y [N, H, W] (bilinear, 0 outside).
    Differentiable in images."""
    shape = tf.shape(images)
    count, height, width = shape[0], shape[1], shape[2]
    flat = tf.reshape(images, [count, height * width])
    x0, y0 = tf.floor(x), tf.floor(y)
    result = tf.zeros_like(x)
    for dx, dy in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1.0 - tf.abs(x - xi)) * (1.0 - tf.abs(y - yi))
        inside = ((xi >= 0) & (xi <= tf.cast(width - 1, tf.float32))
                  & (yi >= 0) & (yi <= tf.cast(height - 1, tf.float32)))
        index = (tf.clip_by_value(tf.cast(yi, tf.int32), 0, height - 1) * width
                 + tf.clip_by_value(tf.cast(xi, tf.int32), 0, width - 1))
        values = tf.gather(flat, tf.reshape(index, [count, -1]), batch_dims=1)
        result += tf.where(inside, weight, 0.0) * tf.reshape(values, tf.shape(x))
    return result[..., None]


def _smooth_field(seed, count, size, grid, shape=()):
    """Uniform noise in [-1, 1] on a coarse grid x grid, bilinearly upsampled to size x size:
    [count, size, size, *shape] varying smoothly over about size / grid pixels."""
    channels = int(np.prod(shape)) if shape else 1
    coarse = tf.random.stateless_uniform([count, grid, grid, channels], seed, -1.0, 1.0)
    fine = tf.image.resize(coarse, [size, size], method="bilinear")
    return tf.reshape(fine, [count, size, size, *shape]) if shape else fine


def _highest(field, fraction):
    """1 where field [N, H, W, 1] is among each image's highest `fraction` of pixels, else 0."""
    flat = tf.reshape(field, [tf.shape(field)[0], -1])
    count = tf.maximum(1, tf.cast(tf.round(fraction * tf.cast(tf.shape(flat)[1], tf.float32)),
                                  tf.int32))
    threshold = tf.math.top_k(flat, count).values[:, -1]
    return tf.cast(field >= threshold[:, None, None, None], tf.float32)


def hand_and_scan_augment(images, seed, elastic_pixels=0.0, shear=0.0, break_fraction=0.0,
                          blur_probability=0.0, ink_noise=0.0):
    """How two drawings of one mark differ between two hands and two scans, beyond `augment`'s
    rotation, scale, shift and stroke width. Each is off at 0:

    - `elastic_pixels`: a smooth random displacement field (up to that many pixels), the pen's
      waver and the sheet's bend;
    - `shear`: shear and aspect-ratio change, each drawn from [-shear, shear];
    - `break_fraction`: that fraction of the ink, in blobs of a few pixels, taken away (broken
      and faded strokes);
    - `blur_probability`: that share of the images blurred (Gaussian, sigma 1 px: a soft scan);
    - `ink_noise`: paper grain of up to that intensity on the ground, and ink blots.

    `seed` is a stateless seed [2] int; images [N, H, W, 1] in [0, 1]. Differentiable in images.
    """
    images = tf.convert_to_tensor(images)
    dtype = images.dtype
    out = tf.cast(images, tf.float32)
    count, size = tf.shape(out)[0], tf.shape(out)[1]
    seeds = tf.random.experimental.stateless_split(seed, 8)
    if elastic_pixels > 0 or shear > 0:
        coordinates = tf.cast(tf.range(size), tf.float32)
        centre = (tf.cast(size, tf.float32) - 1.0) / 2.0
        px = tf.broadcast_to(coordinates[None, None, :], [count, size, size]) - centre
        py = tf.broadcast_to(coordinates[None, :, None], [count, size, size]) - centre
        skew = tf.random.stateless_uniform([count, 2], seeds[0], -shear, shear)
        aspect = tf.exp(skew[:, 1])[:, None, None]
        x = (px + skew[:, 0, None, None] * py) * aspect + centre
        y = py / aspect + centre
        if elastic_pixels > 0:
            field = _smooth_field(seeds[1], count, size, 4, (2,)) * elastic_pixels
            x, y = x + field[..., 0], y + field[..., 1]
        out = _bilinear_sample(out, x, y)
    if break_fraction > 0:
        # Gaps: the pixels where a fine noise field is lowest, `break_fraction` of them.
        out = out * (1.0 - _highest(-_smooth_field(seeds[2], count, size, 16), break_fraction))
    if blur_probability > 0:
        taps = tf.exp(-0.5 * tf.square(tf.range(-2.0, 3.0)))
        kernel = taps[:, None] * taps[None, :]
        kernel = tf.reshape(kernel / tf.reduce_sum(kernel), [5, 5, 1, 1])
        blurred = tf.nn.conv2d(out, kernel, 1, "SAME")
        chosen = tf.random.stateless_uniform([count, 1, 1, 1], seeds[3]) < blur_probability
        out = tf.where(chosen, blurred, out)
    if ink_noise > 0:
        grain = tf.abs(tf.random.stateless_normal(tf.shape(out), seeds[4])) * (
            tf.random.stateless_uniform([count, 1, 1, 1], seeds[5], 0.0, ink_noise))
        blots = _highest(_smooth_field(seeds[6], count, size, 16), 0.02 * ink_noise)
        out = tf.maximum(out, tf.maximum(tf.minimum(grain, 0.3), blots))
    return tf.cast(tf.clip_by_value(out, 0.0, 1.0), dtype)


def nt_xent(first, second, temperature, negatives=None):
    """SimCLR's normalized temperature-scaled cross-entropy over 2N views (first[i] and
    second[i] are the positives; every other view in the batch is a negative). `negatives`
    [M, D], when given, are extra negatives of every view (generated images, issue 18)."""
    views = tf.math.l2_normalize(tf.cast(tf.concat([first, second], 0), tf.float32), axis=1)
    count = tf.shape(first)[0]
    logits = tf.matmul(views, views, transpose_b=True) / temperature
    logits = logits - 1e9 * tf.eye(2 * count)  # a view is not its own negative
    if negatives is not None:
        negatives = tf.math.l2_normalize(tf.cast(negatives, tf.float32), axis=1)
        logits = tf.concat([logits, tf.matmul(views, negatives, transpose_b=True) / temperature],
                           1)
    targets = tf.concat([tf.range(count) + count, tf.range(count)], 0)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))


def embedding_neighbours(name, images, k, batch_size=2048):
    """[N, k] indices of each image's k nearest other images by the cosine of registered model
    `name`'s embeddings (no labels)."""
    from zoo.loading import load

    embeddings = load(name, with_hash_head=False).encode(np.asarray(images, np.float32))
    rows = []
    for start in range(0, len(embeddings), batch_size):
        similarity = embeddings[start:start + batch_size] @ embeddings.T
        own = np.arange(start, start + len(similarity))
        similarity[own - start, own] = -np.inf  # not its own neighbour
        rows.append(np.argsort(-similarity, axis=1, kind="stable")[:, :k])
    return np.concatenate(rows).astype(np.int32)


def batch_dataset(images, recipe, first_step, last_step):
    """Batches for steps [first_step, last_step). Without neighbour partners, the generic
    seeded sample (zoo.training.train.batch_dataset). With them, [x; p] of 2B images: x that
    same sample and p its partners, each x itself or, from step recipe.neighbours_after on and
    with probability recipe.neighbours, one of its recipe.neighbour_k embedding neighbours.
    Batch s depends only on (seed, s), so a resumed run sees the batches an uninterrupted one
    would have."""
    from zoo.training.train import batch_dataset as generic

    if not recipe.neighbours > 0:
        return generic(images, recipe.batch_size, recipe.seed, first_step, last_step)
    corpus = tf.constant(images)
    neighbours = tf.constant(embedding_neighbours(recipe.neighbours_from, images,
                                                  recipe.neighbour_k))

    def sample(step):
        seed = tf.stack([tf.cast(recipe.seed, tf.int64), step])
        index = seeded_sample(len(images), recipe.batch_size, seed)
        seeds = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(seed, 1), 2)
        share = tf.where(step >= recipe.neighbours_after, recipe.neighbours, 0.0)
        partner = neighbour_partners(neighbours, index, seeds, share)
        return tf.gather(corpus, tf.concat([index, partner], 0))

    return step_dataset(sample, first_step, last_step)


class ContrastiveGANTrainer(GANTrainer):
    """GANTrainer whose discriminator has (logit, projection, embedding) outputs. With neighbour
    partners (recipe.neighbours > 0) a batch is [x; p] and the second view is drawn from p."""

    def __init__(self, generator, discriminator, recipe, **kwargs):
        super().__init__(generator, discriminator, recipe.latent_dim, 1, recipe.seed, **kwargs)
        self.recipe = recipe
        self.con_loss_tracker = keras.metrics.Mean(name="con_loss")

    @property
    def metrics(self):
        return [*super().metrics, self.con_loss_tracker]

    stroke_max_pool = staticmethod(max_pool_3x3)  # benchmarks.training_speed swaps it

    def _augment(self, images, stream):
        if not self.recipe.augment:
            return images
        # The optimizer's step count is checkpointed, so a resumed run draws the same views.
        seed = tf.stack([tf.cast(self.recipe.seed, tf.int64) * 7919 + stream,
                         tf.cast(self.d_optimizer.iterations, tf.int64)])
        recipe = self.recipe
        images = augment(images, seed, recipe.rotation_degrees, recipe.scale_range,
                         recipe.shift_pixels, recipe.stroke_probability, self.stroke_max_pool)
        if not recipe.hand_and_scan:
            return images
        return hand_and_scan_augment(
            images, tf.random.experimental.stateless_fold_in(seed, 1), recipe.elastic_pixels,
            recipe.shear, recipe.break_fraction, recipe.blur_probability, recipe.ink_noise)

    def _images_and_partners(self, batch):
        """(x, p): the real images and the images their second views are drawn from."""
        if not self.recipe.neighbours > 0:
            return batch, batch
        half = tf.shape(batch)[0] // 2
        return batch[:half], batch[half:]

    def _contrastive_step(self, batch):
        """D (encoder and projection head) trained on NT-Xent alone; the generator idles."""
        real_images, partners = self._images_and_partners(batch)
        with tf.GradientTape() as tape:
            _, first, _ = self.discriminator(self._augment(real_images, 1), training=True)
            _, second, _ = self.discriminator(self._augment(partners, 2), training=True)
            con_loss = nt_xent(first, second, self.recipe.temperature)
            total = self.recipe.lambda_con * con_loss
        variables = self.discriminator.trainable_variables
        gradients = tape.gradient(total, variables)
        # The real/fake head has no part in this loss (no gradient): it is left as it is.
        self.d_optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None])
        self.con_loss_tracker.update_state(con_loss)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, batch):
        recipe = self.recipe
        if not recipe.lambda_gan > 0:
            return self._contrastive_step(batch)
        real_images, partners = self._images_and_partners(batch)
        batch_size = tf.shape(real_images)[0]
        generated = self.generator(self.sample_latent(batch_size), training=True)
        first, second = self._augment(real_images, 1), self._augment(partners, 2)
        fake = self._augment(generated, 3)
        with tf.GradientTape() as tape:
            real_logits, real_projection, _ = self.discriminator(first, training=True)
            fake_logits, fake_projection, _ = self.discriminator(fake, training=True)
            d_loss = _bce_with_logits(real_logits, 1.0) + _bce_with_logits(fake_logits, 0.0)
            if recipe.lambda_con > 0:
                _, second_projection, _ = self.discriminator(second, training=True)
                con_loss = nt_xent(real_projection, second_projection, recipe.temperature,
                                   fake_projection if recipe.fake_negatives else None)
            else:
                con_loss = tf.constant(0.0)
            total = recipe.lambda_gan * d_loss + recipe.lambda_con * con_loss
        variables = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))

        with tf.GradientTape() as tape:
            generated = self.generator(self.sample_latent(batch_size), training=True)
            logits, _, _ = self.discriminator(self._augment(generated, 4), training=True)
            g_loss = _bce_with_logits(logits, 1.0)
        variables = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, variables), variables))

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.d_real_tracker.update_state(tf.sigmoid(tf.cast(real_logits, tf.float32)))
        self.d_fake_tracker.update_state(tf.sigmoid(tf.cast(fake_logits, tf.float32)))
        self.con_loss_tracker.update_state(con_loss)
        return {m.name: m.result() for m in self.metrics}


def make_trainer(generator, discriminator, recipe, jit_compile=False):
    """A compiled ContrastiveGANTrainer with the recipe's Adam optimizers."""
    return compile_with_adam(ContrastiveGANTrainer(generator, discriminator, recipe), recipe,
                             jit_compile)


TRAINING = TrainingWrapper(make_trainer, batch_dataset=batch_dataset)

"""sketch-GAN+ training: the adversarial game plus a contrastive auxiliary task in D (issue 8).

Each step:

1. Two random views of the same real batch (`augment`: rotation, scale, shift, stroke width,
   the transformations the encoder should ignore) and one augmented generated batch.
2. Discriminator loss = lambda_gan x GAN loss on view 1 vs the augmented fakes (non-saturating,
   as in sketch-GAN; the same augmentation on both sides, so D cannot tell real from fake by it)
   + lambda_con x NT-Xent between the projections of the two real views (SimCLR, Chen et al.
   2020; in a discriminator as in ContraD, Jeong & Shin 2021).
3. Generator loss = non-saturating loss on its augmented batch (gradients flow through the
   differentiable augmentation, as in DiffAugment, Zhao et al. 2020).

No labels are used. lambda_con = 0 and augmentation off give the plain GAN ablation rows;
lambda_gan weighs the GAN loss in step 2; lambda_gan = 0 gives the contrastive task alone (step
2 without the GAN loss, no step 3): the same network and read-out, trained without a generator.
"""

import math

import keras
import tensorflow as tf

from zoo.training.gan import GANTrainer, _bce_with_logits, compile_with_adam
from zoo.training.wrapper import TrainingWrapper


def augment(images, seed, rotation_degrees=10.0, scale_range=0.15, shift_pixels=4.0,
            stroke_probability=0.3):
    """Random per-image rotation, scale and shift (one bilinear affine warp about the centre),
    then stroke width: thicken (3x3 max) or thin (3x3 min) with `stroke_probability` each.

    `seed` is a stateless seed [2] int; images [N, H, W, 1] in [0, 1]. Differentiable in images.
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
    choice = tf.random.stateless_uniform([count, 1, 1, 1], seeds[3])
    thick = tf.nn.max_pool2d(warped, 3, 1, "SAME")
    thin = -tf.nn.max_pool2d(-warped, 3, 1, "SAME")
    out = tf.where(choice < stroke_probability, thick,
                   tf.where(choice > 1.0 - stroke_probability, thin, warped))
    return tf.cast(tf.clip_by_value(out, 0.0, 1.0), dtype)


def nt_xent(first, second, temperature):
    """SimCLR's normalized temperature-scaled cross-entropy over 2N views (first[i] and
    second[i] are the positives; every other view in the batch is a negative)."""
    views = tf.math.l2_normalize(tf.cast(tf.concat([first, second], 0), tf.float32), axis=1)
    count = tf.shape(first)[0]
    logits = tf.matmul(views, views, transpose_b=True) / temperature
    logits = logits - 1e9 * tf.eye(2 * count)  # a view is not its own negative
    targets = tf.concat([tf.range(count) + count, tf.range(count)], 0)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))


class ContrastiveGANTrainer(GANTrainer):
    """GANTrainer whose discriminator has (logit, projection, embedding) outputs."""

    def __init__(self, generator, discriminator, recipe, **kwargs):
        super().__init__(generator, discriminator, recipe.latent_dim, 1, recipe.seed, **kwargs)
        self.recipe = recipe
        self.con_loss_tracker = keras.metrics.Mean(name="con_loss")

    @property
    def metrics(self):
        return [*super().metrics, self.con_loss_tracker]

    def _augment(self, images, stream):
        if not self.recipe.augment:
            return images
        # The optimizer's step count is checkpointed, so a resumed run draws the same views.
        seed = tf.stack([tf.cast(self.recipe.seed, tf.int64) * 7919 + stream,
                         tf.cast(self.d_optimizer.iterations, tf.int64)])
        return augment(images, seed, self.recipe.rotation_degrees, self.recipe.scale_range,
                       self.recipe.shift_pixels, self.recipe.stroke_probability)

    def _contrastive_step(self, real_images):
        """D (encoder and projection head) trained on NT-Xent alone; the generator idles."""
        with tf.GradientTape() as tape:
            _, first, _ = self.discriminator(self._augment(real_images, 1), training=True)
            _, second, _ = self.discriminator(self._augment(real_images, 2), training=True)
            con_loss = nt_xent(first, second, self.recipe.temperature)
            total = self.recipe.lambda_con * con_loss
        variables = self.discriminator.trainable_variables
        gradients = tape.gradient(total, variables)
        # The real/fake head has no part in this loss (no gradient): it is left as it is.
        self.d_optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None])
        self.con_loss_tracker.update_state(con_loss)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, real_images):
        recipe = self.recipe
        if not recipe.lambda_gan > 0:
            return self._contrastive_step(real_images)
        batch_size = tf.shape(real_images)[0]
        generated = self.generator(self.sample_latent(batch_size), training=True)
        first, second = self._augment(real_images, 1), self._augment(real_images, 2)
        fake = self._augment(generated, 3)
        with tf.GradientTape() as tape:
            real_logits, real_projection, _ = self.discriminator(first, training=True)
            fake_logits, _, _ = self.discriminator(fake, training=True)
            d_loss = _bce_with_logits(real_logits, 1.0) + _bce_with_logits(fake_logits, 0.0)
            if recipe.lambda_con > 0:
                _, second_projection, _ = self.discriminator(second, training=True)
                con_loss = nt_xent(real_projection, second_projection, recipe.temperature)
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


TRAINING = TrainingWrapper(make_trainer)

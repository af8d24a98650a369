"""BinGAN+ training (issue 14, part 2): BinGAN's game and regularisers plus a contrastive task on
the binary codes of two augmented views, no labels anywhere.

Each step takes B real images x and B partners p (p = x, or, with probability
`recipe.neighbours`, one of x's `neighbour_k` nearest neighbours by raw pixels: see
`pixel_neighbours`):

1. views v1 = A(x), v2 = A(p) and fakes A(G(z)), A an identity-keeping augmentation for
   Fashion-MNIST (`augment`: small shift and scale, horizontal flip), the same on real and
   generated batches (as in DiffAugment, so D cannot tell real from fake by it);
2. D loss = lambda_gan x BinGAN's unsupervised GAN loss on v1 vs the fakes
          + mean over code heads of  lambda_con x NT-Xent(s(c1), s(c2))        (contrastive)
                                    + lambda_dmr x DMR(b1, h1) + lambda_bre x BRE(b1, h1)
   with c the head's pre-activations, s the straight-through sign (forward sign(c), backward
   tanh') or tanh, b = c / (|c| + gamma) BinGAN's relaxed code and h the signs of the centred
   HIGH-DIM layer (zoo.training.bingan's regularisers, unchanged);
3. G loss = BinGAN's feature matching on the HIGH-DIM layer of v1 vs new augmented fakes.

lambda_gan = 0 trains the same network without the generator (the "what does the GAN add"
row): G is then never run.
"""

import keras
import numpy as np
import tensorflow as tf

from zoo.recipes import BinGANPlusRecipe  # noqa: F401  (re-exported)
from zoo.training import bingan
from zoo.training.batches import neighbour_partners, seeded_sample, step_dataset
from zoo.training.bingan import OfficialAdam, learning_rate_schedule
from zoo.training.sketch_gan_plus import augment as affine_augment
from zoo.training.sketch_gan_plus import nt_xent
from zoo.training.wrapper import TrainingWrapper


def augment(images, seed, shift_pixels=2.0, scale_range=0.1, rotation_degrees=0.0, flip=True):
    """Per-image random shift, scale and rotation (one bilinear warp), then a horizontal flip
    with probability 1/2. `seed` is a stateless seed [2]; differentiable in images."""
    first, second = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    out = affine_augment(images, first, rotation_degrees, scale_range, shift_pixels, 0.0)
    if flip:
        count = tf.shape(out)[0]
        mask = tf.random.stateless_uniform([count, 1, 1, 1], second) < 0.5
        out = tf.where(mask, tf.reverse(out, axis=[2]), out)
    return out


def straight_through_sign(code):
    """sign(code) forward (zeros as +1), tanh's gradient backward."""
    soft = tf.tanh(code)
    return soft + tf.stop_gradient(tf.where(code >= 0.0, 1.0, -1.0) - soft)


def pixel_neighbours(images, k=5, batch_size=2000):
    """[N, k] indices of each image's k nearest other images by Euclidean distance of raw pixels
    (no labels). About a minute for Fashion-MNIST's 60,000 on 2 cores."""
    flat = tf.reshape(tf.constant(np.asarray(images, np.float32)), [len(images), -1])
    norms = tf.reduce_sum(tf.square(flat), axis=1)
    rows = []
    for start in range(0, len(images), batch_size):
        block = flat[start:start + batch_size]
        distance = (norms[None, :] - 2.0 * tf.matmul(block, flat, transpose_b=True)
                    + tf.reduce_sum(tf.square(block), axis=1)[:, None])
        own = tf.range(start, start + tf.shape(block)[0])
        distance = distance + tf.one_hot(own, len(images)) * 1e9  # not its own neighbour
        rows.append(tf.math.top_k(-distance, k).indices.numpy())
    return np.concatenate(rows).astype(np.int32)


def batch_dataset(images, recipe, first_step, last_step):
    """Batches for steps [first_step, last_step): [x; p] of 2B images, each x a seeded sample
    without replacement and p its partner (itself, or with probability recipe.neighbours one of
    its pixel neighbours). Batch s depends only on (seed, s), so a resumed run sees the batches
    an uninterrupted one would have."""
    corpus = tf.constant(images)
    neighbours = (tf.constant(pixel_neighbours(images, recipe.neighbour_k))
                  if recipe.neighbours > 0 else None)

    def sample(step):
        seed = tf.stack([tf.cast(recipe.seed, tf.int64), step])
        index = seeded_sample(len(images), recipe.batch_size, seed)
        partner = index
        if neighbours is not None:
            partner = neighbour_partners(neighbours, index,
                                         tf.random.experimental.stateless_split(seed, 2),
                                         recipe.neighbours)
        return tf.gather(corpus, tf.concat([index, partner], 0))

    return step_dataset(sample, first_step, last_step)


class BinGANPlusTrainer(bingan.BinGANTrainer):
    """BinGAN's trainer (G, D, optimizers, latent draws) for a zoo.models.bingan_plus
    discriminator; `train_step` takes [x; p] (images and their partners)."""

    TRACKED = ("d_loss", "g_loss", "gan_loss", "con", "dmr", "bre", "d_real", "d_fake",
               "bit_balance", "bit_correlation")

    def __init__(self, generator, discriminator, recipe, **kwargs):
        super().__init__(generator, discriminator, recipe, **kwargs)
        self.heads = [name for name in discriminator.output_names if name.startswith("out_code_")]

    def _augment(self, images, stream):
        recipe = self.recipe
        if not recipe.augment:
            return images
        # The optimizer's step count is checkpointed, so a resumed run draws the same views.
        seed = tf.stack([tf.cast(recipe.seed, tf.int64) * 7919 + stream,
                         tf.cast(self.d_optimizer.iterations, tf.int64)])
        return augment(images, seed, recipe.shift_pixels, recipe.scale_range,
                       recipe.rotation_degrees, recipe.flip)

    def _outputs(self, images):
        """(logits, high, [code per head]) of D in training mode."""
        outputs = dict(zip(self.discriminator.output_names,
                           self.discriminator(images, training=True)))
        return outputs["out_logits"], outputs["out_high"], [outputs[h] for h in self.heads]

    def _code_losses(self, first_codes, second_codes, high):
        recipe = self.recipe
        relax = straight_through_sign if recipe.straight_through else tf.tanh
        con = dmr = bre = tf.constant(0.0)
        centred = high - tf.reduce_mean(high, axis=0, keepdims=True)
        h = bingan.high_signs(centred if recipe.center_high else high)
        for first, second in zip(first_codes, second_codes):
            if recipe.lambda_con:
                con += nt_xent(relax(first), relax(second), recipe.temperature)
            b = bingan.relaxed_code(first, recipe.gamma)
            dmr += bingan.distance_matching(b, h)
            bre += bingan.bit_entropy(b, h, recipe.beta)[0]
        heads = float(len(first_codes))
        return con / heads, dmr / heads, bre / heads

    def train_step(self, images):
        recipe = self.recipe
        real, partner = tf.split(images, 2)
        batch_size = tf.shape(real)[0]
        first, second = self._augment(real, 1), self._augment(partner, 2)
        use_gan = recipe.lambda_gan > 0
        if use_gan:
            fake = self._augment(self.generator(self.sample_latent(batch_size), training=True), 3)
        with tf.GradientTape() as tape:
            real_logits, real_high, first_codes = self._outputs(first)
            _, _, second_codes = self._outputs(second)
            con, dmr, bre = self._code_losses(first_codes, second_codes, real_high)
            real_s = tf.reduce_logsumexp(real_logits, axis=-1)
            if use_gan:
                fake_logits, _, _ = self._outputs(fake)
                fake_s = tf.reduce_logsumexp(fake_logits, axis=-1)
                gan_loss = (0.5 * tf.reduce_mean(tf.nn.softplus(-real_s))
                            + 0.5 * tf.reduce_mean(tf.nn.softplus(fake_s)))
            else:
                fake_s, gan_loss = tf.zeros_like(real_s), tf.constant(0.0)
            d_loss = (recipe.lambda_gan * gan_loss + recipe.lambda_con * con
                      + recipe.lambda_dmr * dmr + recipe.lambda_bre * bre)
        variables = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, variables), variables))
        g_loss = tf.constant(0.0)
        if use_gan:
            with tf.GradientTape() as tape:
                fake = self._augment(self.generator(self.sample_latent(batch_size),
                                                    training=True), 4)
                _, fake_high, _ = self._outputs(fake)
                g_loss = tf.reduce_mean(tf.square(
                    tf.reduce_mean(tf.stop_gradient(real_high), 0) - tf.reduce_mean(fake_high, 0)))
            variables = self.generator.trainable_variables
            self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, variables), variables))
        balance, correlation = bingan.code_statistics(first_codes[-1])
        values = {"d_loss": d_loss, "g_loss": g_loss, "gan_loss": gan_loss, "con": con,
                  "dmr": dmr, "bre": bre, "d_real": tf.reduce_mean(tf.sigmoid(real_s)),
                  "d_fake": tf.reduce_mean(tf.sigmoid(fake_s)), "bit_balance": balance,
                  "bit_correlation": correlation}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def make_trainer(generator, discriminator, recipe, jit_compile=False):
    """A compiled BinGANPlusTrainer with the official code's Adam (built, ready to checkpoint)."""
    trainer = BinGANPlusTrainer(generator, discriminator, recipe)
    d_optimizer = OfficialAdam(learning_rate_schedule(recipe), beta_1=recipe.beta_1,
                               name="d_adam")
    g_optimizer = OfficialAdam(learning_rate_schedule(recipe), beta_1=recipe.beta_1,
                               name="g_adam")
    d_optimizer.build(discriminator.trainable_variables)
    g_optimizer.build(generator.trainable_variables)
    trainer.compile(d_optimizer, g_optimizer, jit_compile=jit_compile)
    return trainer


# Each step takes B images and their B partners (`batch_dataset`).
TRAINING = TrainingWrapper(make_trainer, images_per_step=bingan.two_batches_per_step,
                           initialize=bingan.initialize, callbacks=bingan.training_callbacks,
                           batch_dataset=batch_dataset)

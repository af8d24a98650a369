"""The adversarial training wrapper (Creswell & Bharath, Alg. 1).

`GANTrainer` is a `keras.Model` whose `train_step` runs k discriminator updates and one
generator update with the non-saturating generator loss; it works with `fit` and callbacks.
It is the training wrapper only: what the zoo exports is the discriminator's feature extractor.
"""

import keras
import numpy as np
import tensorflow as tf

from zoo.training.wrapper import TrainingWrapper


def _bce_with_logits(logits, label):
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label),
                                                logits=logits)
    )


class GANTrainer(keras.Model):
    """Holds a generator and a discriminator and trains them adversarially.

    `fit` is given batches of real images of size `batch_size * d_steps`; each chunk of
    `batch_size` feeds one discriminator update.
    """

    def __init__(self, generator, discriminator, latent_dim, d_steps=1, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.d_steps = d_steps
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="latent_seed")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")  # mean D(x) on real images
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")  # mean D(G(z)) before the D update
        self.built = True

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "d_steps": self.d_steps, "seed": self.seed}

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker,
                self.d_fake_tracker]

    def sample_latent(self, batch_size):
        return keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def _discriminator_step(self, real_images):
        batch_size = tf.shape(real_images)[0]
        generated_images = self.generator(self.sample_latent(batch_size), training=True)
        with tf.GradientTape() as tape:
            # D sees the real and the fake batch separately (own BatchNorm statistics each).
            real_logits = self.discriminator(real_images, training=True)
            fake_logits = self.discriminator(generated_images, training=True)
            d_loss = _bce_with_logits(real_logits, 1.0) + _bce_with_logits(fake_logits, 0.0)
        variables = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, variables), variables))
        return d_loss, tf.sigmoid(real_logits), tf.sigmoid(fake_logits)

    def _generator_step(self, batch_size):
        random_latent_vectors = self.sample_latent(batch_size)
        with tf.GradientTape() as tape:
            generated_images = self.generator(random_latent_vectors, training=True)
            fake_logits = self.discriminator(generated_images, training=True)
            g_loss = _bce_with_logits(fake_logits, 1.0)  # non-saturating: -log D(G(z))
        variables = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, variables), variables))
        return g_loss

    def train_step(self, real_images):
        # 1. k discriminator updates, one chunk of real images each.
        for real_chunk in tf.split(real_images, self.d_steps):
            d_loss, d_real, d_fake = self._discriminator_step(real_chunk)
        # 2. one generator update on fresh latent vectors.
        g_loss = self._generator_step(tf.shape(real_images)[0] // self.d_steps)
        # 3. trackers.
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.d_real_tracker.update_state(d_real)
        self.d_fake_tracker.update_state(d_fake)
        return {m.name: m.result() for m in self.metrics}


def make_trainer(generator, discriminator, recipe, jit_compile=True):
    """A compiled GANTrainer with the recipe's Adam optimizers (built, ready to checkpoint)."""
    trainer = GANTrainer(generator, discriminator, recipe.latent_dim, recipe.d_steps, recipe.seed)
    return compile_with_adam(trainer, recipe, jit_compile)


def compile_with_adam(trainer, recipe, jit_compile):
    """Give `trainer` (holding .generator and .discriminator) the recipe's two Adam optimizers,
    built so that a checkpoint can be restored before the first step, and compile it."""
    generator, discriminator = trainer.generator, trainer.discriminator
    # Explicit names keep checkpoint variable paths the same in every process.
    d_optimizer = keras.optimizers.Adam(recipe.learning_rate, beta_1=recipe.beta_1,
                                        name="d_adam")
    g_optimizer = keras.optimizers.Adam(recipe.learning_rate, beta_1=recipe.beta_1,
                                        name="g_adam")
    d_optimizer.build(discriminator.trainable_variables)
    g_optimizer.build(generator.trainable_variables)
    trainer.compile(d_optimizer, g_optimizer, jit_compile=jit_compile)
    return trainer


def reestimate_batchnorm(model, images, batch_size=500):
    """Set every BatchNorm layer's moving statistics to the population statistics of `images`.

    The running averages kept during GAN training mix real and generated batches; the encoder
    should normalise real data with real-data statistics. Layers are refitted in order, each
    one seeing the outputs of the already refitted layers before it.
    """
    images = np.asarray(images, np.float32)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.input, layer.input)
        total, total_sq, count = 0.0, 0.0, 0
        for start in range(0, len(images), batch_size):
            x = probe(images[start : start + batch_size], training=False).numpy().astype(np.float64)
            axes = tuple(range(x.ndim - 1))
            total = total + x.sum(axis=axes)
            total_sq = total_sq + (x**2).sum(axis=axes)
            count += int(np.prod([x.shape[a] for a in axes]))
        mean = total / count
        variance = np.maximum(total_sq / count - mean**2, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))


TRAINING = TrainingWrapper(make_trainer)

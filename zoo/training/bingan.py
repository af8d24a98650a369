"""BinGAN's training wrapper: Salimans' unsupervised GAN loss, feature matching for G, and the
two regularisers on D's real batch (Zieba et al. 2018, section 3; the official code's losses).

With D's logits l in R^2, s(x) = logsumexp(l) and D(x) = sigmoid(s):

    L_D = 0.5 E_real softplus(-s) + 0.5 E_fake softplus(s) + lambda_DMR DMR + lambda_BRE BRE
    L_G = || mean_real f(x) - mean_fake f(G(z)) ||^2 / dim f      (feature matching)

The regularisers act on the relaxed code b = f_low / (|f_low| + gamma) of the real batch and on
the high-dimensional layer's signs h = sign(f_high) (no gradient through h):

    DMR = mean over pairs i != j of | h_i.h_j / M - b_i.b_j / K |
    BRE = ME + AC,  ME = mean over bits of (batch mean of b)^2,
          AC = sum over i != j of w_ij |b_i.b_j| / (B (B - 1) K),  w_ij = exp(-|h_i.h_j| / (M beta))

Each step takes 2B real images: the first B train D, the other B (an independent draw) are
G's feature-matching target. The learning rate is constant (the official code's schedule never
decays within its 400 epochs), or decays linearly at the end if the recipe asks for it. Bit
balance and the mean |correlation| of the codes are logged, and `CollapseGuard` stops a run
whose codes collapse (nearly every image gets the same code).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from zoo.recipes import BinGANRecipe  # noqa: F401  (re-exported)
from zoo.training.wrapper import TrainingWrapper


# ----------------------------------------------------------------------------- the regularisers


def relaxed_code(low, gamma=0.001):
    """b = f / (|f| + gamma): a differentiable stand-in for sign(f)."""
    return low / (tf.abs(low) + gamma)


def _off_diagonal_mean(matrix):
    count = tf.cast(tf.shape(matrix)[0], matrix.dtype)
    off = matrix - tf.linalg.diag(tf.linalg.diag_part(matrix))
    return tf.reduce_sum(off) / (count * (count - 1.0))


def distance_matching(code, high_signs):
    """DMR: mean over pairs i != j of | h_i.h_j / M - b_i.b_j / K |."""
    m = tf.cast(tf.shape(high_signs)[1], code.dtype)
    k = tf.cast(tf.shape(code)[1], code.dtype)
    high = tf.matmul(high_signs, high_signs, transpose_b=True) / m
    low = tf.matmul(code, code, transpose_b=True) / k
    return _off_diagonal_mean(tf.abs(high - low))


def bit_entropy(code, high_signs, beta=2.0):
    """BRE = ME + AC (marginal entropy and weighted absolute code correlation); also returns
    (ME, AC) so they can be logged."""
    m = tf.cast(tf.shape(high_signs)[1], code.dtype)
    k = tf.cast(tf.shape(code)[1], code.dtype)
    marginal = tf.reduce_mean(tf.square(tf.reduce_mean(code, axis=0)))
    weights = tf.exp(-tf.abs(tf.matmul(high_signs, high_signs, transpose_b=True)) / (m * beta))
    correlation = tf.abs(tf.matmul(code, code, transpose_b=True))
    activation = _off_diagonal_mean(weights * correlation) / k
    return marginal + activation, marginal, activation


def high_signs(high):
    """h = sign(f_high) with no gradient (zeros count as +1, as the code's >= 0 bits do)."""
    return tf.stop_gradient(tf.where(high >= 0.0, 1.0, -1.0))


def code_statistics(code):
    """(bit balance, mean |correlation|): mean |fraction of ones - 0.5| over bits (0 = balanced,
    0.5 = constant bits) and the mean over pairs i != j of |b_i.b_j| / K for b = sign(code)."""
    signs = tf.where(code >= 0.0, 1.0, -1.0)
    balance = tf.reduce_mean(tf.abs(tf.reduce_mean((signs + 1.0) / 2.0, axis=0) - 0.5))
    k = tf.cast(tf.shape(code)[1], code.dtype)
    correlation = _off_diagonal_mean(tf.abs(tf.matmul(signs, signs, transpose_b=True))) / k
    return balance, correlation


# ----------------------------------------------------------------------------- the trainer


class BinGANTrainer(keras.Model):
    """Holds G and D; `train_step` takes 2 x batch_size real images (D's batch, then G's)."""

    # What train_step logs (one running mean each).
    TRACKED = ("d_loss", "g_loss", "gan_loss", "dmr", "bre", "bre_me", "bre_ac", "d_real",
               "d_fake", "bit_balance", "bit_correlation")


    def __init__(self, generator, discriminator, recipe, dropout_passes="separate", **kwargs):
        super().__init__(**kwargs)
        if dropout_passes not in ("separate", "shared"):
            raise ValueError(f"Expected dropout_passes 'separate' or 'shared'; got "
                             f"{dropout_passes!r}.")
        self.generator = generator
        self.discriminator = discriminator
        self.recipe = recipe
        self.dropout_passes = dropout_passes
        self.latent_dim = recipe.latent_dim
        self.seed_generator = keras.random.SeedGenerator(recipe.seed, name="latent_seed")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.TRACKED}
        self.built = True

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    @property
    def metrics(self):
        return list(self.trackers.values())

    def sample_latent(self, batch_size):
        return keras.random.uniform((batch_size, self.latent_dim), seed=self.seed_generator)

    def fixed_latent(self, count, seed):
        """Latent vectors for sample grids (numpy, reproducible)."""
        return np.random.default_rng(seed).uniform(size=(count, self.latent_dim)).astype(
            np.float32)

    def regularisers(self, code, high):
        b = relaxed_code(code, self.recipe.gamma)
        if self.recipe.center_high:
            high = high - tf.reduce_mean(high, axis=0, keepdims=True)
        h = high_signs(high)
        dmr = distance_matching(b, h)
        bre, marginal, activation = bit_entropy(b, h, self.recipe.beta)
        return dmr, bre, marginal, activation

    def train_step(self, real_images):
        recipe = self.recipe
        real_d, real_g = tf.split(real_images, 2)
        batch_size = tf.shape(real_d)[0]
        # 1. discriminator. As in the official code, the GAN term, the code and the high-dim
        #    features each come from their own pass, so each sees its own dropout masks.
        fake = self.generator(self.sample_latent(batch_size), training=True)
        #    ("shared": one pass for all three, the port before issue 14, for its ablation.)
        with tf.GradientTape() as tape:
            real_logits, real_code, real_high, _ = self.discriminator(real_d, training=True)
            if self.dropout_passes == "separate":
                _, real_code, _, _ = self.discriminator(real_d, training=True)
                _, _, real_high, _ = self.discriminator(real_d, training=True)
            fake_logits, _, _, _ = self.discriminator(fake, training=True)
            real_s = tf.reduce_logsumexp(real_logits, axis=-1)
            fake_s = tf.reduce_logsumexp(fake_logits, axis=-1)
            gan_loss = (0.5 * tf.reduce_mean(tf.nn.softplus(-real_s))
                        + 0.5 * tf.reduce_mean(tf.nn.softplus(fake_s)))
            dmr, bre, marginal, activation = self.regularisers(real_code, real_high)
            d_loss = gan_loss + recipe.lambda_dmr * dmr + recipe.lambda_bre * bre
        variables = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, variables), variables))
        # 2. generator: feature matching against an independent real batch.
        _, _, _, real_matched = self.discriminator(real_g, training=True)
        with tf.GradientTape() as tape:
            fake = self.generator(self.sample_latent(batch_size), training=True)
            _, _, _, fake_matched = self.discriminator(fake, training=True)
            g_loss = tf.reduce_mean(tf.square(tf.reduce_mean(tf.stop_gradient(real_matched), 0)
                                              - tf.reduce_mean(fake_matched, 0)))
        variables = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, variables), variables))
        # 3. what is logged.
        balance, correlation = code_statistics(real_code)
        values = {"d_loss": d_loss, "g_loss": g_loss, "gan_loss": gan_loss, "dmr": dmr,
                  "bre": bre, "bre_me": marginal, "bre_ac": activation,
                  "d_real": tf.reduce_mean(tf.sigmoid(real_s)),
                  "d_fake": tf.reduce_mean(tf.sigmoid(fake_s)),
                  "bit_balance": balance, "bit_correlation": correlation}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def learning_rate_schedule(recipe):
    """Constant, then linear decay to 0 over the last `decay_fraction` of the iterations
    (0: constant, as in the official code)."""
    decay_steps = int(round(recipe.iterations * recipe.decay_fraction))
    constant_steps = recipe.iterations - decay_steps
    if decay_steps == 0:
        return recipe.learning_rate
    return _ConstantThenLinear(recipe.learning_rate, constant_steps, decay_steps)


class _ConstantThenLinear(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, learning_rate, constant_steps, decay_steps):
        self.learning_rate = learning_rate
        self.constant_steps = constant_steps
        self.decay_steps = decay_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        fraction = tf.clip_by_value((step - self.constant_steps) / self.decay_steps, 0.0, 1.0)
        return self.learning_rate * (1.0 - fraction)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "constant_steps": self.constant_steps,
                "decay_steps": self.decay_steps}


class OfficialAdam(keras.optimizers.Adam):
    """Adam as the official code writes it (nn.adam_updates): p -= lr m_hat / sqrt(v_hat + eps)
    with eps = 1e-8 inside the square root, so a step is at most lr m_hat / 1e-4 when gradients
    are tiny. Keras's Adam adds its epsilon outside the root and lets such parameters (G's inner
    layers early in training) take steps of up to a full lr."""

    def __init__(self, learning_rate, beta_1=0.5, beta_2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        from keras import ops

        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        m_hat = m / (1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = v / (1 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        self.assign_sub(variable, lr * m_hat / ops.sqrt(v_hat + self.epsilon))


def make_trainer(generator, discriminator, recipe, jit_compile=False, adam="official",
                 dropout_passes="separate"):
    """A compiled BinGANTrainer with the official code's Adam (built, ready to checkpoint).

    adam="keras" and dropout_passes="shared" give the port as it was before issue 14, for the
    ablation of its fixes (`benchmarks.bingan_curve --undo`); shipped recipes use neither."""
    if adam not in ("official", "keras"):
        raise ValueError(f"Expected adam 'official' or 'keras'; got {adam!r}.")
    trainer = BinGANTrainer(generator, discriminator, recipe, dropout_passes=dropout_passes)
    optimizer = OfficialAdam if adam == "official" else keras.optimizers.Adam
    d_optimizer = optimizer(learning_rate_schedule(recipe), beta_1=recipe.beta_1, name="d_adam")
    g_optimizer = optimizer(learning_rate_schedule(recipe), beta_1=recipe.beta_1, name="g_adam")
    d_optimizer.build(discriminator.trainable_variables)
    g_optimizer.build(generator.trainable_variables)
    trainer.compile(d_optimizer, g_optimizer, jit_compile=jit_compile)
    return trainer


def initialize(generator, discriminator, images, recipe):
    """The weight-norm layers' data-dependent initialisation on `recipe.init_count` images."""
    from zoo.models.bingan import initialize as initialize_weight_norm

    initialize_weight_norm(generator, discriminator, images, seed=recipe.seed,
                           count=recipe.init_count)


def training_callbacks(recipe):
    return [CollapseGuard(steps_per_epoch=recipe.checkpoint_every)]


class CollapseGuard(keras.callbacks.Callback):
    """Stops a run whose codes collapse: after `patience` checks (one per epoch) with the mean
    |code correlation| above `threshold` (1.0 = every image has the same code), raise."""

    def __init__(self, threshold=0.9, patience=2, after_steps=1000, steps_per_epoch=500):
        super().__init__()
        self.threshold, self.patience = threshold, patience
        self.after_epochs = math.ceil(after_steps / steps_per_epoch)
        self.strikes = 0

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get("bit_correlation", 0.0))
        if epoch + 1 < self.after_epochs:
            return
        self.strikes = self.strikes + 1 if value > self.threshold else 0
        if self.strikes >= self.patience:
            raise RuntimeError(
                f"BinGAN codes collapsed: mean |code correlation| {value:.3f} > "
                f"{self.threshold} for {self.patience} checks (nearly every image gets the same "
                f"code). Check the data-dependent initialisation and the regulariser weights."
            )


def two_batches_per_step(recipe):
    """Real images a step takes: D's batch, then G's independent feature-matching batch."""
    return 2 * recipe.batch_size


TRAINING = TrainingWrapper(make_trainer, images_per_step=two_batches_per_step,
                           initialize=initialize, callbacks=training_callbacks)

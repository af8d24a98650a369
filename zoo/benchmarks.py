"""Speed benchmarks: ratios against a baseline measured in the same process (not tests).

`benchmark_training` times the zoo's `GANTrainer.fit` against a plain reference loop of the same
model and algorithm (eager GradientTape, one D update on separate real and fake batches, one
non-saturating G update, Adam), alternating the two so machine load affects both alike.
"""

import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from zoo.loading import build
from zoo.registry import get_entry
from zoo.training.gan import make_trainer
from zoo.training.train import batch_dataset


def machine_description():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {model}"


def reference_train_step(generator, discriminator, d_optimizer, g_optimizer, real_images,
                         latent_dim):
    """Alg. 1, written the plain way: eager TensorFlow, no tf.function."""
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    batch_size = real_images.shape[0]
    fake_images = generator(tf.random.normal((batch_size, latent_dim)), training=True)
    with tf.GradientTape() as tape:
        real_logits = discriminator(real_images, training=True)
        fake_logits = discriminator(fake_images, training=True)
        d_loss = bce(tf.ones_like(real_logits), real_logits) + bce(tf.zeros_like(fake_logits),
                                                                   fake_logits)
    gradients = tape.gradient(d_loss, discriminator.trainable_variables)
    d_optimizer.apply_gradients(zip(gradients, discriminator.trainable_variables))
    with tf.GradientTape() as tape:
        fake_logits = discriminator(generator(tf.random.normal((batch_size, latent_dim)),
                                              training=True), training=True)
        g_loss = bce(tf.ones_like(fake_logits), fake_logits)
    gradients = tape.gradient(g_loss, generator.trainable_variables)
    g_optimizer.apply_gradients(zip(gradients, generator.trainable_variables))
    return float(d_loss), float(g_loss)


def benchmark_training(name, steps=10, batch_size=128, rounds=2, jit_compile=False):
    """Seconds per training step of the zoo loop and of the reference loop, and their ratio."""
    entry = get_entry(name)
    recipe = entry.recipe.replace(batch_size=batch_size)
    images = np.random.default_rng(0).random((max(batch_size * 2, 512), 64, 64, 1),
                                             dtype=np.float32)

    generator, discriminator = build(name)
    trainer = make_trainer(generator, discriminator, recipe, jit_compile=jit_compile)
    dataset = batch_dataset(images, batch_size, 0, 0, 10**9)
    trainer.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up

    ref_generator, ref_discriminator = build(name)
    ref_d_optimizer = keras.optimizers.Adam(recipe.learning_rate, beta_1=recipe.beta_1)
    ref_g_optimizer = keras.optimizers.Adam(recipe.learning_rate, beta_1=recipe.beta_1)
    batch = tf.constant(images[:batch_size])

    def reference(count):
        for _ in range(count):
            reference_train_step(ref_generator, ref_discriminator, ref_d_optimizer,
                                 ref_g_optimizer, batch, recipe.latent_dim)

    reference(2)  # warm up
    timings = {"zoo": [], "reference": []}
    for _ in range(rounds):
        started = time.perf_counter()
        trainer.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
        timings["zoo"].append((time.perf_counter() - started) / steps)
        started = time.perf_counter()
        reference(steps)
        timings["reference"].append((time.perf_counter() - started) / steps)
    zoo_seconds = float(np.median(timings["zoo"]))
    reference_seconds = float(np.median(timings["reference"]))
    return {"model": name, "batch_size": batch_size, "steps": steps * rounds,
            "zoo_s_per_step": zoo_seconds, "reference_s_per_step": reference_seconds,
            "speedup": reference_seconds / zoo_seconds, "machine": machine_description()}

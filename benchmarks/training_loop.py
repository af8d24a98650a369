"""The zoo's training loop against a plain reference loop, measured in the same process.

    python -m benchmarks.training_loop sketch_gan_merchant [--steps 10] [--rounds 2]
                                       [--batch-size 128] [--jit]

`benchmark_training` times the zoo's `GANTrainer.fit` (in float32 and in the recipe's precision)
against a plain reference loop of the same model and algorithm (eager GradientTape, float32, one
D update on separate real and fake batches, one non-saturating G update, Adam), taking turns so
that machine load affects all of them alike.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from zoo.loading import build
from zoo.machine import machine_description
from zoo.models import get_family
from zoo.registry import get_entry
from zoo.training.gan import TRAINING as GAN_TRAINING
from zoo.precision import policy_scope
from zoo.training.train import batch_dataset


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
    """Seconds per training step and batch images per second: the zoo loop in float32 and in the
    recipe's precision, and (for the sketch-GAN family) a plain reference loop, measured
    alternately in one process; speed-ups are against the reference, or against the zoo's
    float32 loop for families with their own training wrapper (BinGAN)."""
    entry = get_entry(name)
    recipe = entry.recipe.replace(batch_size=batch_size)
    wrapper = get_family(entry.family).training_wrapper()
    image_shape = tuple(build(name)[1].input.shape[1:])
    images = np.random.default_rng(0).random((max(batch_size * 4, 512), *image_shape),
                                             dtype=np.float32)

    def zoo_loop(precision):
        with policy_scope(precision):
            nets = build(name)
        if wrapper.initialize is not None:
            wrapper.initialize(*nets, images, recipe.replace(init_count=min(recipe.init_count,
                                                                            len(images))))
        trainer = wrapper.make_trainer(*nets, recipe, jit_compile=jit_compile)
        dataset = (wrapper.batch_dataset(images, recipe, 0, 10**9) if wrapper.batch_dataset
                   else batch_dataset(images, wrapper.images_per_step(recipe), 0, 0, 10**9))
        trainer.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up
        return lambda count: trainer.fit(dataset, steps_per_epoch=count, epochs=1, verbose=0)

    loops = {}
    if wrapper is GAN_TRAINING:  # Alg. 1's loop has a plain reference to compare with
        ref_generator, ref_discriminator = build(name)
        ref_d_optimizer = keras.optimizers.Adam(recipe.learning_rate, beta_1=recipe.beta_1)
        ref_g_optimizer = keras.optimizers.Adam(recipe.learning_rate, beta_1=recipe.beta_1)
        batch = tf.constant(images[:batch_size])

        def reference(count):
            for _ in range(count):
                reference_train_step(ref_generator, ref_discriminator, ref_d_optimizer,
                                     ref_g_optimizer, batch, recipe.latent_dim)

        reference(2)  # warm up
        loops["reference"] = reference
    loops["zoo_float32"] = zoo_loop("float32")
    if recipe.precision != "float32":
        loops[f"zoo_{recipe.precision}"] = zoo_loop(recipe.precision)
    timings = {key: [] for key in loops}
    for _ in range(rounds):
        for key, loop in loops.items():
            started = time.perf_counter()
            loop(steps)
            timings[key].append((time.perf_counter() - started) / steps)
    seconds = {key: float(np.median(values)) for key, values in timings.items()}
    baseline = "reference" if "reference" in seconds else "zoo_float32"
    return {"model": name, "batch_size": batch_size, "steps": steps * rounds,
            "s_per_step": seconds, "machine": machine_description(),
            "images_per_s": {key: batch_size / value for key, value in seconds.items()},
            "baseline": baseline,
            "speedup": {key: seconds[baseline] / value for key, value in seconds.items()
                        if key != baseline}}


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="training speed vs. a plain reference loop")
    parser.add_argument("name")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--jit", action="store_true", help="compile the zoo loop with XLA")
    args = parser.parse_args(argv)
    result = benchmark_training(args.name, steps=args.steps, batch_size=args.batch_size,
                                rounds=args.rounds, jit_compile=args.jit)
    print(f"machine: {result['machine']}")
    baseline = result["baseline"]
    described = {"reference": "eager GradientTape, float32", "zoo_float32": "the zoo loop, "
                 "float32"}[baseline]
    print(f"{args.name}, batch {result['batch_size']}, {result['steps']} steps each "
          f"(median s/step; speed-up = {baseline} / loop):")
    for loop, seconds in result["s_per_step"].items():
        speedup = result["speedup"].get(loop)
        ratio = f"  {speedup:.2f}x" if speedup else f"  (baseline: {described})"
        print(f"  {loop:24s} {seconds:7.3f} s/step  {result['images_per_s'][loop]:7.1f} "
              f"batch images/s{ratio}")


if __name__ == "__main__":
    main()

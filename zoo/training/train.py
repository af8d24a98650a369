"""Run a GAN recipe end to end: sample batches, fit with callbacks, checkpoint, resume, finish.

The trainer knows nothing about a particular architecture or corpus: it takes a generator, a
discriminator, a float32 image array [N, 64, 64, 1] and a Recipe.
"""

import os

import numpy as np
import tensorflow as tf

from zoo.training.batches import seeded_sample, step_dataset
from zoo.training.callbacks import (Checkpoint, ProgressBar, SampleGrid, Snapshots, StepLogger,
                                    StopOnNaN)
from zoo.training.checkpoint import load_checkpoint
from zoo.training.gan import TRAINING as GAN_TRAINING


def batch_dataset(images, batch_size, seed, first_step, last_step):
    """Batches for steps [first_step, last_step): each a seeded sample without replacement.

    Batch s depends only on (seed, s), so a resumed run sees exactly the batches a run that
    was never interrupted would have seen.
    """
    corpus = tf.constant(images)

    def sample(step):
        return tf.gather(corpus, seeded_sample(len(images), batch_size,
                                               tf.stack([tf.cast(seed, tf.int64), step])))

    return step_dataset(sample, first_step, last_step)


def truncate_log(path, step):
    """Drop the rows of the run's log.csv after `step` (the checkpoint a run resumes from; 0 for
    a restart), so that no step is logged twice and none is skipped."""
    if not os.path.exists(path):
        return
    from zoo.atomic import write_text

    lines = open(path, encoding="utf-8").read().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= step]
    if len(kept) < len(lines):
        write_text(path, "".join(kept))


def validate_training_images(images, batch_size, image_shape=(64, 64, 1)):
    images = np.asarray(images)
    image_shape = tuple(image_shape)
    if images.ndim != 4 or images.shape[1:] != image_shape:
        raise ValueError(f"Expected training images of shape [N, {', '.join(map(str, image_shape))}], "
                         f"got {images.shape}.")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"Expected float training images in [0, 1], got dtype {images.dtype}.")
    if len(images) < batch_size:
        raise ValueError(f"Need at least batch_size={batch_size} training images, got {len(images)}.")
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
        raise ValueError("Training images must be finite and within [0, 1].")
    return images.astype(np.float32)


def train_gan(generator, discriminator, images, recipe, out_dir, resume=True, progress=True,
              jit_compile=False, wrapper=GAN_TRAINING):
    """Train to `recipe.iterations` generator updates, resuming from `out_dir` if possible.

    Writes to `out_dir`: checkpoint.npz (every recipe.checkpoint_every steps), log.csv,
    samples/step_*.png and snapshots/step_*.weights.h5 (the discriminator's weights, for
    learning curves; every recipe.sample_every steps). Returns the trainer and the
    total training wall time in seconds over all sessions of the run. The networks are
    trained in the precision they were built with (see `zoo.precision.policy_scope`).

    `wrapper` is the family's zoo.training.wrapper.TrainingWrapper (`Family.training_wrapper()`;
    default: zoo.training.gan's GANTrainer): its trainer, data-dependent initialisation (run
    before any checkpoint is restored), extra callbacks (run before the checkpoint is saved)
    and, if it has its own, its batches (BinGAN+: image and partner pairs).
    """
    images = validate_training_images(images, recipe.batch_size,
                                      discriminator.input.shape[1:])
    tf.keras.utils.set_random_seed(recipe.seed)
    if wrapper.initialize is not None:
        wrapper.initialize(generator, discriminator, images, recipe)
    trainer = wrapper.make_trainer(generator, discriminator, recipe, jit_compile=jit_compile)
    extra_callbacks = wrapper.callbacks(recipe)
    images_per_step = wrapper.images_per_step(recipe)
    first_step, extra = 0, {}
    if resume:
        first_step, extra = load_checkpoint(trainer, out_dir)
    elif os.path.exists(os.path.join(out_dir, "checkpoint.npz")):
        os.remove(os.path.join(out_dir, "checkpoint.npz"))
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "log.csv")
    truncate_log(log_path, first_step)
    steps_per_epoch = recipe.checkpoint_every
    if first_step < recipe.iterations:
        if wrapper.batch_dataset is not None:
            dataset = wrapper.batch_dataset(images, recipe, first_step, recipe.iterations)
        else:
            dataset = batch_dataset(images, images_per_step, recipe.seed, first_step,
                                    recipe.iterations)
        checkpoint = Checkpoint(out_dir, steps_per_epoch, extra.get("train_seconds", 0.0))
        # The log row first, then the checkpoint: a run killed between the two leaves a row
        # past its checkpoint, which truncate_log drops when the run resumes.
        callbacks = [StopOnNaN(), *extra_callbacks, StepLogger(log_path, steps_per_epoch),
                     checkpoint,
                     SampleGrid(os.path.join(out_dir, "samples"), recipe.sample_every, first_step),
                     Snapshots(os.path.join(out_dir, "snapshots"), recipe.sample_every,
                               first_step)]
        if progress:
            callbacks.append(ProgressBar(recipe.iterations, first_step))
        trainer.fit(dataset, epochs=recipe.iterations // steps_per_epoch,
                    initial_epoch=first_step // steps_per_epoch, steps_per_epoch=steps_per_epoch,
                    callbacks=callbacks, verbose=0)
        extra["train_seconds"] = round(checkpoint.train_seconds, 1)
    return trainer, extra.get("train_seconds", 0.0)

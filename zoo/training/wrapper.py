"""The contract of a training wrapper: how `zoo.training.train.train_gan` trains one family.

Each training module (zoo/training/gan.py, sketch_gan_plus.py, bingan.py, bingan_plus.py)
declares one `TRAINING`; a Family names its module (`Family.training`). No TensorFlow import.
"""

import dataclasses
from typing import Callable, Optional


def _no_callbacks(recipe):
    return []


def _one_batch_per_d_step(recipe):
    return recipe.batch_size * recipe.d_steps


@dataclasses.dataclass(frozen=True)
class TrainingWrapper:
    # (generator, discriminator, recipe, jit_compile=False) -> a compiled keras.Model trainer
    # whose `fit` takes batches of real images (optimizers built, ready to checkpoint)
    make_trainer: Callable
    # recipe -> real images one train_step takes (default: batch_size per D update)
    images_per_step: Callable = _one_batch_per_d_step
    # (generator, discriminator, images, recipe): a data-dependent initialisation, run before any
    # checkpoint is restored. None: Keras's initialisers are the start.
    initialize: Optional[Callable] = None
    # recipe -> extra Keras callbacks (run before the checkpoint is saved)
    callbacks: Callable = _no_callbacks
    # (images, recipe, first_step, last_step) -> tf.data batches for those steps; None: the
    # generic seeded sample of images_per_step(recipe) images a step (train.batch_dataset)
    batch_dataset: Optional[Callable] = None

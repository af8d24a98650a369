"""Callbacks that make a long CPU training observable and resumable."""

import csv
import math
import os
import time

import keras
import numpy as np

from zoo.training.checkpoint import save_checkpoint
from zoo.visualize import save_grid


class ProgressBar(keras.callbacks.Callback):
    """One tqdm bar over all generator updates, with the latest losses."""

    def __init__(self, total_steps, initial_step=0):
        super().__init__()
        self.total_steps = total_steps
        self.initial_step = initial_step

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total_steps, initial=self.initial_step, unit="step",
                        desc="training", dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs:
            self.bar.set_postfix({k: f"{float(v):.3f}" for k, v in logs.items()}, refresh=False)

    def on_train_end(self, logs=None):
        self.bar.close()


class StepLogger(keras.callbacks.Callback):
    """Appends the running losses to `log.csv` every epoch (one epoch = one checkpoint period)."""

    def __init__(self, path, steps_per_epoch):
        super().__init__()
        self.path = path
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        new_file = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["step", *sorted(logs)])
            if new_file:
                writer.writeheader()
            writer.writerow({"step": (epoch + 1) * self.steps_per_epoch, **logs})


class Checkpoint(keras.callbacks.Callback):
    """Saves the full training state at the end of every epoch (= every `checkpoint_every`)."""

    def __init__(self, directory, steps_per_epoch, seconds_before=0.0):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.seconds_before = seconds_before

    def on_train_begin(self, logs=None):
        self.started = time.time()

    @property
    def train_seconds(self):
        """Wall time of all sessions of this run so far."""
        return self.seconds_before + time.time() - self.started

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.model, self.directory, (epoch + 1) * self.steps_per_epoch,
                        extra={"train_seconds": round(self.train_seconds, 1)})


class StopOnNaN(keras.callbacks.Callback):
    """Stops a diverged run before it overwrites a good checkpoint with NaN weights."""

    def on_train_batch_end(self, batch, logs=None):
        if logs and any(not math.isfinite(float(v)) for v in logs.values()):
            raise FloatingPointError(f"Training diverged (non-finite losses {logs}); the last "
                                     f"checkpoint is kept. Try the stable recipe.")


class _EveryNSteps(keras.callbacks.Callback):
    """Calls `at_step(step)` after every `every`-th generator update, counting from
    `initial_step` (a resumed run keeps the cadence of one never interrupted)."""

    def __init__(self, directory, every, initial_step=0):
        super().__init__()
        self.directory = directory
        self.every = every
        self.step = initial_step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self.at_step(self.step)


class Snapshots(_EveryNSteps):
    """Keeps the discriminator's weights every `every` steps as
    `directory/step_NNNNNN.weights.h5`, for learning curves of the encoder's quality
    (`zoo evaluate curve`). Written to a temporary file and renamed (Keras takes a path)."""

    def at_step(self, step):
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"step_{step:06d}.weights.h5")
        temporary = path[:-len(".weights.h5")] + ".tmp.weights.h5"
        self.model.discriminator.save_weights(temporary)
        os.replace(temporary, path)


class SampleGrid(_EveryNSteps):
    """Writes a PNG grid of generated samples from fixed latent vectors every `every` steps."""

    def __init__(self, directory, every, initial_step=0, rows=8, columns=8, seed=1234):
        super().__init__(directory, every, initial_step)
        self.count = rows * columns
        self.rows = rows
        self.seed = seed

    def on_train_begin(self, logs=None):
        if hasattr(self.model, "fixed_latent"):  # the trainer knows its latent distribution
            self.latent = self.model.fixed_latent(self.count, self.seed)
        else:
            rng = np.random.default_rng(self.seed)
            self.latent = rng.standard_normal((self.count, self.model.latent_dim)).astype(
                np.float32)

    def at_step(self, step):
        self.write(f"step_{step:06d}.png")

    def write(self, name):
        images = self.model.generator(self.latent, training=False).numpy()
        return save_grid(os.path.join(self.directory, name), images, rows=self.rows)

"""Resumable training checkpoints: every variable of the trainer and both optimizers, one file.

A checkpoint is an .npz of the variables' values keyed by position, with their paths stored
beside them so a checkpoint from another architecture is refused instead of loaded wrongly.
It is written to a temporary file and renamed, so a run killed mid-write keeps the last good one.
"""

import json
import os
import re

import numpy as np

from zoo.atomic import atomic_file
CHECKPOINT_NAME = "checkpoint.npz"


def _tracked_variables(trainer):
    return (list(trainer.variables) + list(trainer.d_optimizer.variables)
            + list(trainer.g_optimizer.variables))


def _path(variable):
    """A variable's path with Keras's per-process counter removed from auto-named seed
    generators (e.g. a Dropout layer's "seed_generator_12"), so paths match across models."""
    return re.sub(r"seed_generator_\d+", "seed_generator", variable.path)


def save_checkpoint(trainer, directory, step, extra=None):
    """Atomically write the trainer's full state after `step` generator updates."""
    os.makedirs(directory, exist_ok=True)
    variables = _tracked_variables(trainer)
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    header = {"step": int(step), "paths": [_path(v) for v in variables], "extra": extra or {}}
    path = os.path.join(directory, CHECKPOINT_NAME)
    with atomic_file(path) as stream:
        np.savez(stream, header=np.array(json.dumps(header)), **arrays)
    return path


def load_checkpoint(trainer, directory):
    """Restore the trainer from `directory`; return (step, extra), or (0, {}) with no checkpoint."""
    path = os.path.join(directory, CHECKPOINT_NAME)
    if not os.path.exists(path):
        return 0, {}
    try:
        with np.load(path) as stored:
            header = json.loads(str(stored["header"]))
            values = [stored[f"v{i}"] for i in range(len(header["paths"]))]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"Checkpoint {path!r} is unreadable ({error}); delete it to "
                         f"start over.") from error
    variables = _tracked_variables(trainer)
    paths = [_path(v) for v in variables]
    if paths != header["paths"]:
        raise ValueError(
            f"Checkpoint {path!r} was written by a different model or recipe "
            f"({len(header['paths'])} variables, this trainer has {len(paths)}); "
            f"use another output folder or delete it to start over."
        )
    for variable, value in zip(variables, values):
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"Checkpoint {path!r}: {variable.path} has shape {value.shape}, "
                             f"the trainer expects {tuple(variable.shape)}.")
        variable.assign(value)
    return header["step"], header["extra"]

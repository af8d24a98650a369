"""Train a registry entry with its recipe, and publish finished weights into the package."""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from zoo.data.corpora import load_corpus
from zoo.atomic import atomic_file
from zoo.machine import machine_description
from zoo.models import get_family
from zoo.registry import get_corpus, get_entry, read_manifest, write_manifest
from zoo.training.gan import reestimate_batchnorm
from zoo.precision import policy_scope
from zoo.training.train import train_gan
from zoo.weights import PACKAGE_WEIGHTS_DIR, save_gan_weights, sha256_of

SUMMARY_NAME = "summary.json"


def float32_networks(family, architecture, trained, images):
    """Copy trained (possibly bf16-computing) networks into float32 ones, refit the
    discriminator's BatchNorm statistics on `images` and, for a family that has one, run its
    calibration (sketch-GAN+: its whitening; BinGAN: centre the code bits on `images`)."""
    generator, discriminator = family.build_gan(**architecture)
    for target, source in zip((generator, discriminator), trained):
        target.set_weights(source.get_weights())
    reestimate_batchnorm(discriminator, images)
    if family.calibrate is not None:
        family.calibrate(discriminator, images)
    return generator, discriminator


def train_model(name, out_dir=None, data_dir=None, recipe_changes=None, resume=True,
                progress=True, corpus=None):
    """Train registry entry `name` to completion in `out_dir` (default runs/<name>), on its
    own corpus or on `corpus` (a name in CORPORA; such a run is for comparisons and cannot be
    published as the entry).

    Resumes from out_dir/checkpoint.npz when present. Writes out_dir/<name>.weights.h5 (G and
    D, BatchNorm re-estimated on the training corpus) and out_dir/summary.json. Returns the
    path of the weights file.
    """
    entry = get_entry(name)
    recipe = entry.recipe.replace(**(recipe_changes or {}))
    out_dir = out_dir or os.path.join("runs", name)
    os.makedirs(out_dir, exist_ok=True)
    corpus = corpus or entry.corpus
    images = load_corpus(get_corpus(corpus), data_dir).images
    family = get_family(entry.family)
    keras.utils.set_random_seed(recipe.seed)  # initial weights follow from the recipe's seed
    with policy_scope(recipe.precision):
        trained = family.build_gan(**entry.architecture)
    _, train_seconds = train_gan(*trained, images, recipe, out_dir, resume=resume,
                                 progress=progress, wrapper=family.training_wrapper())
    # The encoder runs in float32: copy the weights into float32 networks, then refit the
    # discriminator's BatchNorm statistics (and BinGAN's code thresholds) on the real corpus.
    generator, discriminator = float32_networks(family, entry.architecture, trained, images)
    weights_path = os.path.join(out_dir, f"{name}.weights.h5")
    sha256 = save_gan_weights(weights_path, generator, discriminator,
                              attributes={"model": name, "family": entry.family})
    summary = {
        "model": name, "recipe": recipe.to_dict(), "corpus": corpus, "sha256": sha256,
        "train_seconds": train_seconds,
        "machine": machine_description(),
    }
    with open(os.path.join(out_dir, SUMMARY_NAME), "w") as handle:
        json.dump(summary, handle, indent=2)
    return weights_path


def publish(name, run_dir, command=None):
    """Copy a finished run's weights into the package and record them in the manifest.

    The run is `zoo train NAME`'s, or that of another entry with the same family and
    architecture trained with NAME's recipe on NAME's corpus (the same training under another
    name, e.g. an ablation run that became an entry): its weights are then stored again,
    labelled as NAME's, and `command` should say how the run was made.
    """
    entry = get_entry(name)
    summary_path = os.path.join(run_dir, SUMMARY_NAME)
    if not os.path.isfile(summary_path):
        raise ValueError(f"{run_dir!r} holds no finished run of {name} (no {SUMMARY_NAME}); "
                         f"finish it with `zoo train {name} --out {run_dir}` first.")
    with open(summary_path) as handle:
        summary = json.load(handle)
    trained_as = summary.get("model", name)
    source = get_entry(trained_as)
    if (source.family, source.architecture) != (entry.family, entry.architecture):
        raise ValueError(f"Run {run_dir!r} trained {trained_as} ({source.family} "
                         f"{source.architecture}), not {name}'s network ({entry.family} "
                         f"{entry.architecture}).")
    # Read through the recipe class, so a run made before a field was added (at its default)
    # still matches.
    if type(entry.recipe).from_dict(summary["recipe"]) != entry.recipe:
        raise ValueError(f"Run {run_dir!r} used recipe {summary['recipe']}, but {name} is "
                         f"registered with {entry.recipe.to_dict()}; only the registered recipe "
                         f"is published.")
    if summary.get("corpus", entry.corpus) != entry.corpus:
        raise ValueError(f"Run {run_dir!r} was trained on {summary['corpus']!r}, but {name} is "
                         f"registered on {entry.corpus!r}; only its own corpus is published.")
    os.makedirs(PACKAGE_WEIGHTS_DIR, exist_ok=True)
    weights = os.path.join(run_dir, f"{trained_as}.weights.h5")
    if trained_as == name:
        with open(weights, "rb") as source_file, atomic_file(entry.weights_file) as stream:
            shutil.copyfileobj(source_file, stream)
        sha256 = summary["sha256"]
    else:  # the same weights, labelled as this entry's (save_gan_weights writes atomically)
        from zoo.loading import build
        from zoo.weights import load_gan_weights

        generator, discriminator = build(name)
        load_gan_weights(weights, generator, discriminator, summary["sha256"])
        sha256 = save_gan_weights(entry.weights_file, generator, discriminator, attributes={
            "model": name, "family": entry.family, "trained_as": trained_as})
    manifest = read_manifest()
    manifest["models"][name] = {
        **manifest["models"].get(name, {}),
        "file": os.path.basename(entry.weights_file),
        "sha256": sha256,
        "trained_with": command or f"zoo train {name}",
        "train_seconds": summary["train_seconds"],
        "machine": summary["machine"],
    }
    write_manifest(manifest)
    fit_hash_head(name)
    write_golden(name)
    return read_manifest()["models"][name]


def fit_hash_head(name, bits=None, seed=0, progress=True):
    """Fit the shipped encoder's hash head on its training corpus and ship it.

    Float encoders get PCA + ITQ with `bits` bits (default 64), or, when the entry has a
    `code_head` recipe, a learned code head (zoo.training.code_head); a family with its own
    binarisation (BinGAN: the signs of its code layer) ships that. The head (mean and projection
    over the L2-normalised embeddings) goes to zoo/weights/<name>.hash.npz, its sha256, code
    length and method to the manifest.
    """
    import time

    from zoo import load
    from zoo.training.code_head import fit_entry_head

    entry = get_entry(name)
    encoder = load(name, with_hash_head=False)
    images = load_corpus(get_corpus(entry.corpus)).images
    started = time.perf_counter()
    head, method = fit_entry_head(encoder, get_family(entry.family), images, bits=bits,
                                  seed=seed, progress=progress)
    seconds = round(time.perf_counter() - started, 1)
    path = entry.hash_head_file
    with atomic_file(path) as stream:
        np.savez(stream, **head.to_dict())
    manifest = read_manifest()
    manifest["models"][name]["hash_head"] = {
        "file": os.path.basename(path), "sha256": sha256_of(path), "bits": head.num_bits,
        "method": method, "fitted_with": f"zoo hash-head {name}", "fit_seconds": seconds,
        "machine": machine_description(),
    }
    write_manifest(manifest)
    return head


def golden_path(name):
    return os.path.join(PACKAGE_WEIGHTS_DIR, f"{name}.golden.npz")


def write_golden(name):
    """Store a fixed input and what the shipped weights make of it, for the golden test."""
    from zoo import load
    from zoo.data.merchant_marks import make_corpus

    encoder = load(name)
    images = make_corpus(num_identities=4, instances_per_identity=1, seed=99).images
    if encoder.image_size != images.shape[1]:
        images = tf.image.resize(images, (encoder.image_size,) * 2, antialias=True).numpy()
    images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    with atomic_file(golden_path(name)) as stream:
        np.savez(stream, images=images, embeddings=encoder.encode(images),
                 bits=encoder.hash(images).bits)

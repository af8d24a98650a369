"""Transfer a zoo model to a new archive: continue its adversarial training there, export it.

`transfer(base, source, steps)` starts from a registered model's shipped generator and
discriminator, continues the GAN training of Creswell & Bharath (Alg. 1) for `steps` generator
updates on the new archive's images (no labels), then, as `zoo train` does, copies the networks
into float32 and re-estimates the discriminator's BatchNorm statistics (sketch-GAN+: refits its
whitening) on the archive, fits a new hash head (PCA + ITQ) on the archive's embeddings and
exports the encoder as a new SavedModel version. Labels, where the archive has them, only score retrieval before and after.

The source is a folder of images (corrupt files are skipped and reported; images in
subfolders take the subfolder as their label for scoring) or a named corpus of
`zoo.registry.CORPORA` (e.g. `omniglot_background`).

The run folder (default runs/<name>) holds the training checkpoint, so an interrupted transfer
continues where it stopped when called again with the same arguments; it also keeps the
fine-tuned weights (<name>.weights.h5, loadable with `zoo.load(base, weights_path=...)`) and
the report (transfer.json).

Fine-tuning uses the registered recipe with the authors' later learning rate 2e-4
(`zoo.recipes.STABLE`) rather than the paper's 2e-3. Measured for sketch_gan_merchant ->
Omniglot background, 500 steps (MODELS.md, "Transfer to a new archive"): 2e-3 gained nothing
(P@8 0.365 against 0.367 with 2e-4; 64-bit codes 0.278 against 0.286) and changed the neighbour
lists more (0.551 of the top 8 kept against 0.635), so the smaller step is the default;
`recipe_changes={"learning_rate": ...}` (`--set learning_rate=...`) overrides it.
"""

import dataclasses
import json
import os
import re

import numpy as np

from zoo.atomic import write_json
from zoo.registry import CORPORA, get_entry

TRANSFER_LEARNING_RATE = 2e-4
# Families trained by zoo.training.gan's GANTrainer. BinGAN needs its own trainer without its
# data-dependent initialisation (which would overwrite the pretrained weights), its own
# preprocessing and calibration: not supported yet.
REPORT_NAME = "transfer.json"
TOP_K = 8
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class Archive:
    """The images of a transfer's source, and what is known about them."""

    name: str  # corpus name, or the folder's base name
    description: str
    images: np.ndarray  # float32 [N, S, S, 1]
    labels: np.ndarray  # int64 [N], or None: used only to score retrieval
    labels_from: str  # where the labels come from ("" when there are none)
    skipped: tuple = ()  # (path, reason) of files that could not be used


@dataclasses.dataclass(frozen=True)
class TransferResult:
    encoder: object  # zoo.encoder.Encoder: fine-tuned, BatchNorm refitted, new hash head
    export_path: str  # out/<name>/<version>, or None when export=False
    version: int
    weights_path: str  # run_dir/<name>.weights.h5 (G and D, float32)
    report: dict  # also written to run_dir/transfer.json


# ----------------------------------------------------------------------------- the archive


def _folder_labels(folder, paths):
    """Label = the image's subfolder relative to `folder` (None when all share one folder)."""
    groups = [os.path.dirname(os.path.relpath(path, folder)) for path in paths]
    if len(set(groups)) < 2:
        return None
    names = sorted(set(groups))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[group] for group in groups], np.int64)


def load_archive(source, image_size=64, data_dir=None, progress=True):
    """The images of `source`: a folder of images or a named corpus (see module docstring)."""
    source = os.fspath(source)
    if os.path.isdir(source):
        from zoo.data.images import load_image_folder

        folder = load_image_folder(source, size=image_size, progress=progress)
        labels = _folder_labels(source, folder.paths)
        name = os.path.basename(os.path.normpath(os.path.abspath(source)))
        return Archive(name, f"image folder {source}", folder.images, labels,
                       "subfolders" if labels is not None else "", folder.errors)
    if source in CORPORA:
        from zoo.data.corpora import describe, load_corpus

        corpus = load_corpus(CORPORA[source], data_dir)
        if corpus.images.shape[1] != image_size:
            raise ValueError(f"Corpus {source!r} holds {corpus.images.shape[1]}-pixel images; "
                             f"the model takes {image_size}-pixel images.")
        return Archive(source, describe(CORPORA[source]), corpus.images,
                       np.asarray(corpus.labels, np.int64), "corpus labels")
    raise ValueError(f"Expected a folder of images or a named corpus ({', '.join(sorted(CORPORA))})"
                     f" as the transfer source; {source!r} is neither.")


# ----------------------------------------------------------------------------- the recipe


def _largest_divisor_at_most(number, limit):
    return max(d for d in range(1, min(number, limit) + 1) if number % d == 0)


def transfer_recipe(base_recipe, steps, recipe_changes=None):
    """The base model's recipe for `steps` more updates at the fine-tuning learning rate.

    `recipe_changes` override fields (e.g. batch_size, learning_rate); checkpoints fall every
    `checkpoint_every` steps or more often, on a divisor of `steps`.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"Expected steps to be a positive integer (generator updates); "
                         f"got {steps!r}.")
    changes = dict(recipe_changes or {})
    if "iterations" in changes:
        raise ValueError("Set the number of fine-tuning updates with steps (--steps), not "
                         "the recipe's iterations.")
    recipe = base_recipe.replace(**{"learning_rate": TRANSFER_LEARNING_RATE, **changes})
    return recipe.replace(
        iterations=int(steps),
        checkpoint_every=changes.get("checkpoint_every",
                                     _largest_divisor_at_most(int(steps), recipe.checkpoint_every)),
        sample_every=changes.get("sample_every", min(recipe.sample_every, int(steps))),
    )


# ----------------------------------------------------------------------------- the networks


def next_version(base_dir, name):
    """1 + the largest integer version under base_dir/<name>/ (1 when there is none)."""
    model_dir = os.path.join(os.fspath(base_dir), name)
    versions = [int(entry) for entry in (os.listdir(model_dir) if os.path.isdir(model_dir) else ())
                if entry.isdigit()]
    return max(versions, default=0) + 1


def default_name(base, archive_name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{base}_{archive_name}").strip("_.-")


def _check_run_dir(run_dir, identity, resume):
    """Refuse to resume a checkpoint written by a different transfer in the same folder."""
    path = os.path.join(run_dir, "started.json")
    if resume and os.path.exists(path):
        with open(path) as handle:
            started = json.load(handle)
        if started != identity:
            raise ValueError(
                f"Run folder {run_dir!r} holds a transfer of {started.get('base')} to "
                f"{started.get('source')} with recipe {started.get('recipe')}; this one is "
                f"{identity['base']} to {identity['source']} with {identity['recipe']}. Use "
                f"another run folder, or restart (--restart) to discard it.")
    os.makedirs(run_dir, exist_ok=True)
    write_json(path, identity)


# ----------------------------------------------------------------------------- scoring


def _neighbour_overlap(first, second, k=TOP_K):
    """Mean fraction of every item's top-k neighbours that two embeddings share."""
    from zoo.apps.evaluation.retrieval import rank_neighbours

    first, second = rank_neighbours(first, k), rank_neighbours(second, k)
    return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(first, second)]))


def score_retrieval(embeddings, archive, k=TOP_K):
    """{row: P@k, mAP, R@1, R@k} over the labelled images with at least one match, or {}
    when the archive has too few of them (see `scored_images`)."""
    from zoo.apps.evaluation.retrieval import retrieval_metrics

    keep = scored_images(archive, k)
    if keep is None:
        return {}
    return {row: retrieval_metrics(vectors[keep], archive.labels[keep], k=k)
            for row, vectors in embeddings.items()}


def scored_images(archive, k=TOP_K):
    """Indices of the images retrieval is scored on: those sharing their label with another."""
    if archive.labels is None:
        return None
    _, inverse, counts = np.unique(archive.labels, return_inverse=True, return_counts=True)
    keep = np.flatnonzero(counts[inverse] >= 2)
    if len(keep) <= k or len(np.unique(archive.labels[keep])) < 2:
        return None
    return keep


def _hash_vectors(encoder, images):
    """+-1 codes: ranking by their dot product = ranking by Hamming distance (same ties)."""
    return 2.0 * encoder.hash(images).bits.astype(np.float32) - 1.0


# ----------------------------------------------------------------------------- transfer


def transfer(base, source, steps=500, out="models", name=None, version=None, run_dir=None,
             data_dir=None, recipe_changes=None, hash_bits=None, resume=True, progress=True,
             export=True):
    """Fine-tune registered model `base` on `source` for `steps` generator updates.

    Returns a TransferResult: the fine-tuned Encoder, the exported SavedModel's path
    (out/<name>/<version>; `version` defaults to the next free one, `name` to
    "<base>_<archive name>"), the weights file and the report: retrieval on the archive
    (P@8, mAP, R@1, R@8 where it has labels) of the shipped model ("before"), of the shipped
    weights with BatchNorm refitted on the archive ("bn_refit"), of the fine-tuned encoder
    ("after"), their codes (`hash_bits`, default the base model's 64) and raw pixels, and the
    overlap of the before/after top-8 neighbours (label-free). Rerunning an interrupted
    transfer resumes from its checkpoint.
    """
    from zoo import load
    from zoo.encoder import Encoder
    from zoo.apps.evaluation.retrieval import raw_pixel_embeddings
    from zoo.loading import load_gan
    from zoo.machine import machine_description
    from zoo.models import FAMILIES, get_family
    from zoo.training.code_head import HASH_BITS, fit_entry_head
    from zoo.training.run import float32_networks
    from zoo.precision import policy_scope
    from zoo.training.train import train_gan
    from zoo.weights import save_gan_weights

    entry = get_entry(base)
    family = get_family(entry.family)
    if not family.transfer:
        supported = ", ".join(name for name, other in FAMILIES.items() if other.transfer)
        raise ValueError(f"Transfer supports models of the families {supported}; {base!r} is a "
                         f"{entry.family} model.")
    recipe = transfer_recipe(entry.recipe, steps, recipe_changes)
    for option, value in (("version", version), ("hash_bits", hash_bits)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"Expected {option} to be a positive integer; got {value!r}.")
    before = load(base)  # fails clearly when no weights are shipped
    archive = load_archive(source, before.image_size, data_dir, progress)
    if len(archive.images) < recipe.batch_size:
        raise ValueError(
            f"The archive has {len(archive.images)} usable images, fewer than the batch size "
            f"{recipe.batch_size}; pass a smaller one (recipe_changes={{'batch_size': N}}, "
            f"--set batch_size=N).")
    bits = hash_bits or entry.published.get("hash_head", {}).get("bits", HASH_BITS)
    if len(archive.images) < bits:
        raise ValueError(f"The archive has {len(archive.images)} usable images; a {bits}-bit "
                         f"hash head needs at least {bits} (pass hash_bits=K, --hash-bits K, "
                         f"with K <= {len(archive.images)}).")
    name = name or default_name(base, archive.name)
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"Expected a model name of letters, digits, '_', '.', '-' (it becomes "
                         f"a directory); got {name!r}.")
    if export and version is not None and os.path.lexists(os.path.join(out, name, str(version))):
        raise ValueError(f"Version {version} of {name} already exists under {out!r}; leave the "
                         f"version out to export the next free one.")
    run_dir = run_dir or os.path.join("runs", name)
    identity = {"base": base, "source": os.path.normpath(os.fspath(source)), "name": name,
                "recipe": recipe.to_dict()}
    _check_run_dir(run_dir, identity, resume)

    # 1. Continue the adversarial training from the shipped weights, in the recipe's precision
    #    (a checkpoint in run_dir, when there is one, replaces them with the interrupted run's).
    with policy_scope(recipe.precision):
        trained = load_gan(base)
    _, train_seconds = train_gan(*trained, archive.images, recipe, run_dir, resume=resume,
                                 progress=progress, wrapper=family.training_wrapper())

    # 2. float32 networks with BatchNorm statistics of the archive; a hash head fitted on it.
    generator, discriminator = float32_networks(family, entry.architecture, trained,
                                                archive.images)
    weights_path = os.path.join(run_dir, f"{name}.weights.h5")
    sha256 = save_gan_weights(weights_path, generator, discriminator,
                              attributes={"model": name, "family": entry.family,
                                          "fine_tuned_from": base})
    metadata = {
        "description": f"{entry.description}, fine-tuned for {recipe.iterations} adversarial "
                       f"steps on {archive.description}",
        "training_corpus": f"{entry.corpus}, then {archive.description} (no labels)",
        "fine_tuned_from": base,
        "transfer": {"steps": recipe.iterations, "recipe": recipe.to_dict(),
                     "weights_sha256": sha256},
    }
    encoder = Encoder(name, family.build_feature_extractor(discriminator), entry,
                      metadata=metadata, margin=family.margin)
    # The base's kind of head (PCA + ITQ, or its learned code head's recipe), fitted on the archive.
    head, _ = fit_entry_head(encoder, family, archive.images, bits=bits, seed=recipe.seed,
                             progress=progress)
    encoder.set_hash_head(head)

    # 3. Retrieval on the archive before and after (labels score, never train).
    _, refit_discriminator = float32_networks(family, entry.architecture, load_gan(base),
                                              archive.images)
    refit = Encoder(base, family.build_feature_extractor(refit_discriminator), entry,
                    margin=family.margin)
    embeddings = {
        "before": before.encode(archive.images),
        "bn_refit": refit.encode(archive.images),
        "after": encoder.encode(archive.images),
    }
    codes = {"before_hash": _hash_vectors(before, archive.images),
             "after_hash": _hash_vectors(encoder, archive.images)}
    keep = scored_images(archive)
    report = {
        "base": base, "name": name, "source": os.fspath(source), "archive": archive.description,
        "images": int(len(archive.images)), "labels": archive.labels_from or None,
        "scored_images": None if keep is None else int(len(keep)),
        "skipped": [list(error) for error in archive.skipped],
        "steps": recipe.iterations, "recipe": recipe.to_dict(),
        "train_seconds": train_seconds, "machine": machine_description(),
        "hash_bits": int(bits), "hash_kinds": [before.hash_head.kind, head.kind],
        "weights": weights_path, "weights_sha256": sha256,
        f"neighbour_overlap@{TOP_K}": _neighbour_overlap(embeddings["before"],
                                                         embeddings["after"]),
        "retrieval": score_retrieval({**embeddings, **codes,
                                      "raw pixels": raw_pixel_embeddings(archive.images)},
                                     archive),
    }

    # 4. Export as a new version.
    export_path = None
    if export:
        version = version or next_version(out, name)
        export_path = encoder.export(out, version)
        report.update(export=export_path, version=version)
    write_json(os.path.join(run_dir, REPORT_NAME), report)
    return TransferResult(encoder, export_path, version, weights_path, report)


# ----------------------------------------------------------------------------- reporting

ROWS = {  # report row -> how MODELS.md and the CLI name it
    "before": "{base} (shipped)",
    "bn_refit": "{base}, BatchNorm or whitening refitted on the archive (0 steps)",
    "after": "{name} (fine-tuned, {steps} steps)",
    "before_hash": "{base} (shipped, {bits}-bit {before_kind}, Hamming)",
    "after_hash": "{name} ({bits}-bit {after_kind} refitted, Hamming)",
    "raw pixels": "raw pixels",
}


def row_label(row, report):
    before_kind, after_kind = report.get("hash_kinds", ("ITQ", "ITQ"))  # older reports: ITQ
    return ROWS.get(row, row).format(base=report["base"], name=report["name"],
                                     steps=report["steps"], bits=report["hash_bits"],
                                     before_kind=before_kind, after_kind=after_kind)


def format_report(report):
    """Human-readable lines: what was trained, where it went, retrieval before and after."""
    lines = [f"{report['base']} -> {report['name']}: {report['steps']} steps on "
             f"{report['archive']} ({report['images']} images, "
             f"{report['train_seconds'] / 60:.1f} min of training)"]
    for path, reason in report["skipped"]:
        lines.append(f"  skipped {path}: {reason}")
    if report.get("export"):
        lines.append(f"exported version {report['version']} to {report['export']}")
    lines.append(f"weights: {report['weights']}")
    overlap = f"neighbour_overlap@{TOP_K}"
    lines.append(f"top-{TOP_K} neighbours shared before/after: {report[overlap]:.3f}")
    if not report["retrieval"]:
        lines.append("retrieval not scored: the archive has no labels (put images of the same "
                     "symbol in one subfolder to score P@8)")
        return "\n".join(lines)
    lines.append(f"retrieval on {report['scored_images']} images ({report['labels']}):")
    columns = list(next(iter(report["retrieval"].values())))
    labels = {row: row_label(row, report) for row in report["retrieval"]}
    width = max(map(len, labels.values())) + 2
    lines.append(" " * width + "".join(f"{c:>8s}" for c in columns))
    for row, metrics in report["retrieval"].items():
        lines.append(f"{labels[row]:{width}s}" + "".join(f"{metrics[c]:8.3f}" for c in columns))
    return "\n".join(lines)


def record_transfer(report, command):
    """Record a transfer's report as a "transfer" result keyed by the command that made it
    (rerunning it replaces the record; zoo.apps.evaluation.results, for MODELS.md); return the file
    it went to."""
    from zoo.apps.evaluation import results

    keys = ("base", "name", "source", "archive", "images", "labels", "scored_images", "steps",
            "recipe", "train_seconds", "machine", "hash_bits", f"neighbour_overlap@{TOP_K}",
            "retrieval")
    return results.record("transfer", {"command": command,
                                       **{key: report[key] for key in keys}})

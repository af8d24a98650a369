"""Learning curves: the encoder's quality at every snapshot of a training run (issue 18).

`train_gan` keeps the discriminator's weights every `sample_every` steps in
RUN/snapshots/step_NNNNNN.weights.h5. `run_curve` turns each into the encoder it would have
been had training stopped there (the family's calibration, e.g. sketch-GAN+'s whitening, fitted
on the training corpus as `zoo publish` does) and measures it on the ablation's four columns
(zoo.apps.evaluation.ablation.COLUMNS): so "was it still improving?" is answered with the numbers
users care about, not with the training loss. `save_curves` writes the PNG and CSV.

    zoo evaluate curve sketch_contrastive_merchant=runs/sketch_contrastive_merchant \
        --out reports/learning_curves/issue18 --record

`record_curves` stores them as a `learning_curve` result (zoo.apps.evaluation.results) for
MODELS.md.
"""

import csv
import glob
import io
import os
import re

from zoo.apps.evaluation.ablation import COLUMNS, measure
from zoo.apps.evaluation.plots import _save_figure, write_atomically

SNAPSHOT_PATTERN = re.compile(r"step_(\d+)\.weights\.h5$")


def snapshots(run_dir):
    """[(step, path)] of a run's snapshots, in step order."""
    found = []
    for path in glob.glob(os.path.join(run_dir, "snapshots", "step_*.weights.h5")):
        match = SNAPSHOT_PATTERN.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def snapshot_encoder(name, path, training_images):
    """The registered model `name`'s encoder with the discriminator weights of `path`,
    calibrated on `training_images` when its family calibrates."""
    from zoo.loading import build, encoder_of
    from zoo.models import get_family
    from zoo.registry import get_entry

    family = get_family(get_entry(name).family)
    _, discriminator = build(name)
    discriminator.load_weights(path)
    if family.calibrate is not None:
        family.calibrate(discriminator, training_images)
    return encoder_of(name, discriminator)


def curve_points(name, run_dir, training_images, evaluation, progress=print, label=None):
    """[{"step", **metrics}] of one run: each snapshot's encoder measured on `evaluation`
    = (one-shot runs, Omniglot corpus, merchant corpus), as `ablation.measure` takes them."""
    points = []
    for step, path in snapshots(run_dir):
        metrics = measure(snapshot_encoder(name, path, training_images), *evaluation)
        progress(f"{label or name} step {step}: "
                 + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        points.append({"step": step, **metrics})
    return points


def run_curve(runs, data_dir=None, corpus=None, progress=print):
    """{label: [{"step", **metrics}]} for runs {label: (registry name, run folder)}, measured
    on the ablation's yardsticks (the 20 one-shot runs, omniglot_background, merchant_eval).

    Each run's encoders are calibrated on its entry's training corpus (or `corpus`, a name in
    CORPORA, for runs made with `zoo train --corpus`).
    """
    from zoo.data.corpora import load_corpus
    from zoo.apps.evaluation.oneshot import load_runs
    from zoo.registry import get_corpus, get_entry

    empty = [run_dir for _, run_dir in runs.values() if not snapshots(run_dir)]
    if empty:
        raise ValueError(f"No snapshots (snapshots/step_*.weights.h5) in {', '.join(empty)}; "
                         f"`zoo train` writes them every sample_every steps.")
    evaluation = (load_runs(data_dir), load_corpus(get_corpus("omniglot_background"), data_dir),
                  load_corpus(get_corpus("merchant_eval")))
    return {label: curve_points(name, run_dir, load_corpus(
                get_corpus(corpus or get_entry(name).corpus), data_dir).images, evaluation,
                progress, label)
            for label, (name, run_dir) in runs.items()}


def save_curves(curves, out_prefix, title=""):
    """OUT_PREFIX.png (one panel per column, one line per run) and OUT_PREFIX.csv."""
    from matplotlib.figure import Figure

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", "step", *COLUMNS])
    for label, points in curves.items():
        for point in points:
            writer.writerow([label, point["step"], *(f"{point[c]:.4f}" for c in COLUMNS)])
    csv_path = write_atomically(out_prefix + ".csv", buffer.getvalue())

    figure = Figure(figsize=(4.0 * len(COLUMNS), 3.4))
    axes = figure.subplots(1, len(COLUMNS))
    for axis, column in zip(axes, COLUMNS):
        for label, points in curves.items():
            axis.plot([p["step"] for p in points], [p[column] for p in points], marker="o",
                      markersize=3, label=label)
        axis.set_xlabel("training step")
        axis.set_title(column + (" (lower is better)" if column == "one-shot error" else ""))
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save_figure(figure, out_prefix + ".png"), csv_path


def record_curves(curves, figure, command):
    """Store curves as the `learning_curve` result named after the figure (OUT of --out)."""
    from zoo.apps.evaluation import results
    from zoo.machine import machine_description

    name = os.path.splitext(os.path.basename(figure))[0]
    return results.record("learning_curve", {
        "curve": name, "command": command, "machine": machine_description(),
        "figure": os.path.relpath(figure), "runs": curves})


def read_curves(csv_path):
    """{label: [{"step", **metrics}]} from a CSV written by `save_curves`."""
    curves = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            curves.setdefault(row["run"], []).append(
                {"step": int(row["step"]), **{c: float(row[c]) for c in COLUMNS}})
    return curves

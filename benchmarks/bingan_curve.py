"""Issue 14, part 1: does training help the faithful BinGAN at CPU scale? mAP@1000 along training.

    python -m benchmarks.bingan_curve bingan_fashion_32 --epochs 10

Trains the registered entry's recipe (the faithful port, CPU widths) from its data-dependent
initialisation for `--epochs` passes over Fashion-MNIST's 60,000 training images (an epoch =
60,000 / batch_size steps, as D sees batch_size real images a step), and every
`1 / --evals-per-epoch` epoch (and at step 0, the untrained initialised network) measures the
shipped protocol (`zoo evaluate hashing`: 1,000 seeded queries against the other 69,000 of
fashion_mnist_all, stable ties) on a float32 copy of D:

* `map_calibrated`: each code bit centred on its median over the training images, as shipped;
* `map_sign`: plain sign at 0 of the code layer in inference mode (dropout off);
* the training losses and code statistics logged over the preceding steps.

LSH and PCA-ITQ fitted on the pixels at the same length are computed once, in the same run.
Writes (atomically) <report>.csv, <report>.json and <report>.png; the run itself (resumable
checkpoint, log.csv, samples) lives in --out. `--set name=value` changes one recipe field, so
an ablation row of the port (e.g. `--set center_high=true`) is one command; `--undo FIX` trains
without one of issue 14's three port fixes (adam, dropout, generator_init) to measure it. `--record` keeps
the curve, as it grows, as a "bingan_curve" result (reports/results/; MODELS.md shows it);
`--record-report REPORT.json` records an existing report without training.
"""

import argparse
import dataclasses
import csv
import io
import json
import os
import shlex
import sys
import time

import numpy as np

from zoo.apps.evaluation.hashing import (TOP, average_precision_stable, baseline_codes,
                                    hamming_matrix, split_queries)
from zoo.apps.evaluation.plots import write_atomically

# The port fixes of issue 14 and how to undo each: (make_trainer / build_gan keyword, value).
UNDO = {"adam": ("adam", "keras"), "dropout": ("dropout_passes", "shared"),
        "generator_init": ("generator_init", "keras")}

FIELDS = ("step", "epoch", "map_calibrated", "map_sign", "bit_balance_sign", "dmr_target",
          "seconds", "d_real", "d_fake", "bit_correlation", "bre_me", "dmr", "g_loss", "con",
          "map_16", "map_32", "map_64")
LOGGED = ("d_real", "d_fake", "bit_correlation", "bre_me", "dmr", "g_loss", "con")


def mean_average_precision(bits, labels, queries, database):
    """mAP@1000 of the shipped protocol, stable ties (`zoo evaluate hashing`'s headline)."""
    distances = hamming_matrix(bits[queries], bits[database])
    return float(np.mean([average_precision_stable(row, labels[database] == label)
                          for row, label in zip(distances, labels[queries])]))


def code_bits(discriminator_weights, family, architecture, train_images, images):
    """{code length: (calibrated bits, sign-at-0 bits)} of `images` for a float32 copy of D, one
    item per code layer (BinGAN+ has several heads); the calibration (each bit centred on its
    median) uses `train_images`."""
    import keras

    _, discriminator = family.build_gan(**architecture)
    discriminator.set_weights(discriminator_weights)
    # The code layers: BinGAN's "code", BinGAN+'s "code_16", "code_32", ... (shortest first).
    code_layers = sorted((layer.units, layer.name) for layer in discriminator.layers
                         if layer.name == "code" or layer.name.startswith("code_"))
    heads, layers = [bits for bits, _ in code_layers], [name for _, name in code_layers]
    # Outputs by name: Keras returns a one-output list model's output bare, not in a list.
    extractor = keras.Model(discriminator.input,
                            {name: discriminator.get_layer(name).output for name in layers})

    def codes(batch_images):
        outputs = [extractor(batch_images[i:i + 2000], training=False)
                   for i in range(0, len(batch_images), 2000)]
        return [np.concatenate([np.asarray(batch[name]) for batch in outputs])
                for name in layers]

    result = {}
    for bits, raw, calibration in zip(heads, codes(images), codes(train_images)):
        median = np.median(calibration, axis=0)
        result[bits] = ((raw >= median).astype(np.uint8), (raw >= 0).astype(np.uint8))
    return result


def dmr_target(discriminator, images, seed=0):
    """Mean over pairs i != j of h_i.h_j / M, h = sign of the high-dim layer in training mode
    (dropout on), on 500 seeded images: the code inner product DMR asks of every pair (1 = the
    same code for all)."""
    import tensorflow as tf

    batch = images[np.random.default_rng(seed).choice(len(images), 500, replace=False)]
    tf.random.set_seed(seed)
    outputs = dict(zip(discriminator.output_names, discriminator(batch, training=True)))
    signs = np.where(np.asarray(outputs["out_high"], np.float32) >= 0, 1.0, -1.0)
    inner = signs @ signs.T / signs.shape[1]
    return float((inner.sum() - np.trace(inner)) / (len(inner) * (len(inner) - 1)))


def save_png(figure, path):
    """Write a matplotlib figure as PNG through a temporary file, and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_atomically(path, buffer.getvalue())


def save_plot(path, rows, baselines, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    epochs = [row["epoch"] for row in rows]
    axis.plot(epochs, [row["map_calibrated"] for row in rows], "o-", label="median-centred bits (shipped)")
    axis.plot(epochs, [row["map_sign"] for row in rows], "s--", label="sign at 0")
    for length, style in ((16, "v-"), (64, "^-")):
        if all(f"map_{length}" in row for row in rows):
            axis.plot(epochs, [row[f"map_{length}"] for row in rows], style, markersize=4,
                      label=f"the {length}-bit head, median-centred")
    for (method, value), style in zip(baselines.items(), (":", "-.", "--")):
        axis.axhline(value, color="grey", linestyle=style, label=f"{method} on pixels")
    axis.set_xlabel("epochs of training (0 = data-dependent initialisation, untrained)")
    axis.set_ylabel(f"mAP@{TOP}")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_png(figure, path)


def record_curve(summary, report, note):
    """Record a curve summary as the "bingan_curve" result named by its report's file name
    (zoo.apps.evaluation.results; MODELS.md); return the file it went to."""
    from zoo.apps.evaluation import results

    return results.record("bingan_curve", {
        "curve": os.path.basename(report),
        "command": summary["command"], "machine": summary["machine"], "note": note,
        "baselines": summary["baselines"], "figure": report + ".png",
        "model": summary.get("model"), "changes": summary.get("changes", {}),
        "all_baselines": summary.get("all_baselines", {}),
        "rows": [{k: row[k] for k in ("step", "epoch", "map_calibrated", "map_sign", "dmr_target",
                                      "d_real", "d_fake", "bit_correlation", "con", "map_16",
                                      "map_32", "map_64") if k in row}
                 for row in summary["rows"]]})


def save_comparison(path, reports):
    """One figure of the calibrated mAP@1000 of several curve reports (JSON), and their pixel
    baselines: the fixed port against the port before its fixes and each fix undone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.6), dpi=110)
    baselines = {}
    for report in reports:
        with open(report) as handle:
            summary = json.load(handle)
        label = os.path.basename(report)[:-len(".json")].replace("curve_", "")
        rows = summary["rows"]
        axis.plot([r["epoch"] for r in rows], [r["map_calibrated"] for r in rows], "o-",
                  markersize=3, label=label)
        baselines.update(summary["baselines"])
    for (method, value), style in zip(baselines.items(), (":", "-.")):
        axis.axhline(value, color="grey", linestyle=style, label=f"{method} on pixels")
    axis.set_xlabel("epochs of training (0 = data-dependent initialisation)")
    axis.set_ylabel(f"mAP@{TOP} (median-centred bits)")
    axis.set_title("faithful BinGAN (CPU widths), Fashion-MNIST: the port's fixes", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    save_png(figure, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="bingan_fashion_32")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", dest="changes",
                        help="change one recipe field (repeatable)")
    parser.add_argument("--arch", action="append", metavar="NAME=VALUE", dest="arch_changes",
                        help="change one architecture field (repeatable), e.g. high_grid=3")
    parser.add_argument("--undo", action="append", default=[], choices=sorted(UNDO),
                        help="train without one of issue 14's port fixes (repeatable)")
    parser.add_argument("--out", help="run directory (default runs/curve_MODEL[_changes])")
    parser.add_argument("--report", help="report path without extension "
                                         "(default reports/hashing/curve_MODEL[_changes])")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--data-dir")
    parser.add_argument("--record", action="store_true",
                        help="keep the curve as a result (reports/results/; MODELS.md)")
    parser.add_argument("--record-report", metavar="REPORT.json",
                        help="record an existing report as a result and exit")
    parser.add_argument("--note", default="the port as of this commit",
                        help="what the recorded run was (shown in MODELS.md)")
    parser.add_argument("--compare", nargs="+", metavar="REPORT.json",
                        help="plot these curve reports on one figure (--report + .png) and exit")
    args = parser.parse_args(argv)
    if args.compare:
        path = (args.report or os.path.join("reports", "hashing", "curves_compared")) + ".png"
        save_comparison(path, args.compare)
        print(f"wrote {path}")
        return
    if args.record_report:
        with open(args.record_report) as handle:
            record_curve(json.load(handle), args.record_report[:-len(".json")], args.note)
        return

    import keras

    from zoo.data.corpora import load_corpus
    from zoo.machine import machine_description
    from zoo.models import get_family
    from zoo.registry import get_corpus, get_entry
    from zoo.recipes import parse_recipe_changes
    from zoo.precision import policy_scope
    from zoo.training.train import train_gan

    entry = get_entry(args.model)
    if get_family(entry.family).hash_head != "sign":
        raise SystemExit(f"{args.model} is not a BinGAN or BinGAN+ entry (family "
                         f"{entry.family!r}): it has no binary code layer.")
    if args.undo and entry.family != "bingan":
        parser.error("--undo applies to the faithful BinGAN's port fixes only.")
    try:
        changes = parse_recipe_changes(args.changes)
        arch_changes = parse_recipe_changes(args.arch_changes)
    except ValueError as error:
        parser.error(str(error))
    unknown = sorted(set(arch_changes) - set(entry.architecture))
    if unknown:
        parser.error(f"unknown architecture fields {unknown}; {args.model} has "
                     f"{sorted(entry.architecture)}")
    suffix = "".join(f"_{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                     for k, v in sorted({**changes, **arch_changes}.items())) + "".join(
        f"_without_{fix}_fix" for fix in sorted(set(args.undo)))
    trainer_options = {UNDO[f][0]: UNDO[f][1] for f in args.undo if f != "generator_init"}
    architecture = {**entry.architecture, **arch_changes,
                    **{UNDO[f][0]: UNDO[f][1] for f in args.undo
                                             if f == "generator_init"}}
    train = load_corpus(get_corpus(entry.corpus), args.data_dir).images
    steps_per_epoch = len(train) // entry.recipe.batch_size
    steps_per_eval = steps_per_epoch // args.evals_per_epoch
    evals = int(round(args.epochs * args.evals_per_epoch))
    recipe = entry.recipe.replace(**changes, checkpoint_every=steps_per_eval,
                                  iterations=steps_per_eval * evals,
                                  sample_every=steps_per_eval * evals)
    out_dir = args.out or os.path.join("runs", f"curve_{args.model}{suffix}")
    report = args.report or os.path.join("reports", "hashing", f"curve_{args.model}{suffix}")
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(os.path.dirname(report) or ".", exist_ok=True)

    evaluation = load_corpus(get_corpus(entry.eval_corpus), args.data_dir)
    queries, database = split_queries(len(evaluation.images), args.queries, seed=0)
    labels = evaluation.labels
    machine = machine_description()
    print(f"machine: {machine}")
    print(f"{args.model}: {recipe.iterations} steps ({args.epochs:g} epochs of {steps_per_epoch} "
          f"steps), evaluated every {steps_per_eval}; changes {dict(changes, **arch_changes) or 'none'}")

    started = time.perf_counter()
    own_bits = entry.architecture["num_bits"]
    head_bits = sorted(entry.architecture.get("heads", [own_bits]))
    # The pixel baselines depend only on the protocol: kept in runs/ for the next curve.
    cache_path = os.path.join("runs", f"bingan_curve_baselines_{entry.eval_corpus}_"
                                      f"{args.queries}.json")
    all_baselines = {}
    if os.path.exists(cache_path):
        with open(cache_path) as handle:
            all_baselines = json.load(handle)
    for length in head_bits:
        if f"PCA-ITQ, {length} bits" in all_baselines:
            continue
        for method, (query_bits, database_bits) in baseline_codes(
                evaluation.images[database], evaluation.images[queries], length).items():
            if method != "PCAH":
                bits = np.concatenate([query_bits, database_bits])
                all_baselines[f"{method}, {length} bits"] = mean_average_precision(
                    bits, np.concatenate([labels[queries], labels[database]]),
                    np.arange(len(queries)), np.arange(len(queries), len(bits)))
        os.makedirs("runs", exist_ok=True)
        write_atomically(cache_path, json.dumps(all_baselines, indent=2) + "\n")
    all_baselines = {key: value for key, value in all_baselines.items()
                     if int(key.split(", ")[1].split()[0]) in head_bits}
    baselines = {key.split(",")[0]: value for key, value in all_baselines.items()
                 if key.endswith(f", {own_bits} bits")}
    print("baselines on pixels: " + ", ".join(f"{k} {v:.3f}" for k, v in baselines.items())
          + f" ({time.perf_counter() - started:.0f} s)", flush=True)

    family = get_family(entry.family)
    # The median calibration on a seeded 10,000 of the training images (the shipped encoders
    # use all 60,000; the medians agree to well within a bit's spread).
    calibration = train[np.sort(np.random.default_rng(0).choice(len(train), 10000, replace=False))]
    csv_path = report + ".csv"
    rows = []
    if os.path.exists(csv_path) and os.path.exists(os.path.join(out_dir, "checkpoint.npz")):
        with open(csv_path) as handle:
            rows = [{k: float(v) if k != "step" else int(v) for k, v in row.items() if v != ""}
                    for row in csv.DictReader(handle)]

    def record(step, discriminator, logs):
        if any(row["step"] == step for row in rows):
            return
        tick = time.perf_counter()
        heads = code_bits(discriminator.get_weights(), family, architecture,
                          calibration, evaluation.images)
        calibrated, sign = heads[own_bits]
        row = {"step": step, "epoch": round(step / steps_per_epoch, 3)}
        for name, bits in (("map_calibrated", calibrated), ("map_sign", sign)):
            row[name] = mean_average_precision(bits, labels, queries, database)
        if len(heads) > 1:
            for length, (bits, _) in heads.items():
                row[f"map_{length}"] = (row["map_calibrated"] if length == own_bits else
                                        mean_average_precision(bits, labels, queries, database))
        row["bit_balance_sign"] = float(np.abs(sign[database].mean(axis=0) - 0.5).mean())
        row["dmr_target"] = dmr_target(discriminator, calibration)
        row["seconds"] = round(time.perf_counter() - tick, 1)
        row.update({k: float(v) for k, v in (logs or {}).items() if k in LOGGED})
        rows.append(row)
        print(f"step {step:6d} (epoch {row['epoch']:.2f}): mAP@{TOP} {row['map_calibrated']:.3f} "
              f"calibrated, {row['map_sign']:.3f} sign at 0; "
              + ", ".join(f"{k} {row[k]:.3f}" for k in ("dmr_target", *LOGGED, "map_16",
                                                         "map_64") if k in row),
              flush=True)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomically(csv_path, buffer.getvalue())
        summary = {"model": args.model, "recipe": recipe.to_dict(),
                   "changes": {**changes, **arch_changes},
                   "without_fixes": sorted(set(args.undo)),
                   "machine": machine, "protocol": {"queries": args.queries, "seed": 0,
                                                    "top": TOP, "ties": "stable"},
                   "steps_per_epoch": steps_per_epoch, "baselines": baselines,
                   "all_baselines": all_baselines, "rows": rows,
                   "command": "python -m benchmarks.bingan_curve " + shlex.join(
                       sys.argv[1:] if argv is None else argv)}
        write_atomically(report + ".json", json.dumps(summary, indent=2) + "\n")
        if args.record:
            record_curve(summary, report, args.note)
        kind = "faithful BinGAN, CPU widths" if entry.family == "bingan" else "BinGAN+"
        title = (f"{args.model} ({kind}){' ' + suffix if suffix else ''}: "
                 f"Fashion-MNIST, {args.queries} queries")
        save_plot(report + ".png", rows, baselines, title)

    class Curve(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            # The initialised, untrained network (or the resumed checkpoint's, already recorded).
            step = int(self.model.d_optimizer.iterations.numpy())
            record(step, self.model.discriminator, {})

        def on_epoch_end(self, epoch, logs=None):
            record((epoch + 1) * steps_per_eval, self.model.discriminator, logs)

    training = family.training_wrapper()

    def make_trainer(generator, discriminator, recipe, jit_compile=False):
        return training.make_trainer(generator, discriminator, recipe, jit_compile,
                                     **trainer_options)

    wrapper = dataclasses.replace(
        training, make_trainer=make_trainer,
        callbacks=lambda recipe: [*training.callbacks(recipe), Curve()])
    keras.utils.set_random_seed(recipe.seed)
    with policy_scope(recipe.precision):
        generator, discriminator = family.build_gan(**architecture)
    train_gan(generator, discriminator, train, recipe, out_dir, wrapper=wrapper)
    print(f"wrote {report}.csv, .json, .png")


if __name__ == "__main__":
    main()

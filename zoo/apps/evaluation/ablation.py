"""The sketch-GAN+ ablation (issue 8): one row per change, measured on the same yardsticks.

Every row is an encoder trained on one corpus (merchant marks or Omniglot background, no
labels) and measured four ways in the same run:

- Omniglot 20-way one-shot error (zoo.apps.evaluation.oneshot, the 20 official runs);
- Omniglot P@8 (every image of `omniglot_background` against the others);
- merchant-mark P@8 and R@1 (`merchant_eval`, identities never trained on; R@1 = the query's
  top hit is another drawing of the query's mark, the exact-match rate issue 18 asks for).

So each row shows the in-domain number and the transfer to the other archive side by side.

Rows, in order, each adding one change to the row before it unless it says otherwise:

1. the faithful sketch-GAN, as shipped (flattened last block, 1024-d);
2. its BatchNorm in batch-statistics mode instead of the re-estimated population statistics;
3. the faithful weights with the pooled multi-layer read-out (no retraining);
4. the same read-out with PCA whitening fitted on the training corpus (256-d);
5. the sketch-GAN+ network trained as a plain GAN (no augmentation, no contrastive task);
6. + augmentation of real and generated batches;
7. + the contrastive task in D (the full recipe) at the same short length;
8. the same, whitened as `calibrate` whitens the exported encoder;
9. the contrastive task alone, whitened: row 8 without the generator and the real/fake loss
   (issue 18: what does the GAN add?);
10-16. row 9 with one change each (issue 18): the five hand-and-scan augmentations
   (`HAND_AND_SCAN`) one at a time, all five together, a batch of 256 instead of 64;
17. the shipped sketch-GAN+ entry (full recipe, full length);
18. the contrastive task alone at that full length (the exported encoder: whitening calibrated
    at the end of the run);
19. row 18 four times longer (issue 18: longer schedules; shipped as sketch_contrastive_<archive>);
20-22. row 19's weights read out differently: whitened to 128 or 512 dimensions, and test-time
    pooling over four shifted and scaled views;
23. row 19's recipe on both archives together (one model for both: the shipped
    sketch_contrastive_joint, the same row in both tables);
24. the shipped weights whitened with a lower floor (eps 0.001; the shipped floor is 0.03);
25. row 8 with the generated batch as extra negatives in the NT-Xent (issue 18: a use for the
    generator), read against rows 8 and 9;
26. row 9 again with seed 1 (how far two seeds of one short run differ: the noise level of
    rows 5-16);
27. row 19 twice as long (20,000 steps; issue 18's curve was still falling at 10,000; Omniglot
    only: the merchant run was not made);
28-29. row 19 trained 2,000 steps more, without and with neighbour partners (the second view of
    half of each batch is of one of the image's nearest neighbours in the corpus, ranked by row
    19's encoder: `neighbours_from=sketch_contrastive_<archive>`);
30-32. the neighbour row trained on to 16,000, 20,000 and 24,000 steps (merchant marks only;
    24,000 is shipped as sketch_neighbours_merchant, 12,000 on Omniglot as
    sketch_neighbours_omniglot).

Rows 5-16, 25 and 26 are short runs (`ABLATION_STEPS`) of the registered recipe with one field
changed, rows 18, 19 and 27-32 full-length and longer ones; `zoo evaluate ablation --train`
trains any that runs/ablation/ does not hold yet (seed 0).
"""

import dataclasses
import os

import keras
import numpy as np

from zoo.apps.evaluation.oneshot import one_shot_errors
from zoo.apps.evaluation.retrieval import l2_normalise, retrieval_metrics

ABLATION_STEPS = 400
TRAINED_ON = {"merchant": "merchant_train", "omniglot": "omniglot_background_repeated"}
COLUMNS = ("one-shot error", "Omniglot P@8", "merchant P@8", "merchant R@1")
COMMAND = "zoo evaluate ablation --trained-on {trained_on} --train --record"


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    family: str  # "sketch_gan" (the faithful entry) or "sketch_gan_plus"
    readout: str  # "flatten", "batch_statistics", "pooled", "pooled_whitened", "encoder"
    run: str = ""  # sub-folder of runs_dir for a short training run ("" = shipped weights)
    changes: tuple = ()  # recipe fields changed for the run, as (key, value) pairs
    epsilon: float = None  # whitening floor (None: sketch_gan_plus.WHITENING_EPSILON)
    steps: int = ABLATION_STEPS  # length of the run; None: the registered recipe's own
    dimension: int = 256  # whitened dimensions ("pooled_whitened")
    test_time_views: bool = False  # average the embeddings of TEST_TIME_VIEWS of each image
    # The shipped weights of this registry entry rather than FAMILY_<archive>'s (a row without
    # a run, the same in both tables: the joint model).
    model: str = None
    archives: tuple = tuple(TRAINED_ON)  # the tables the row is in


# The rows issue 18 compares: the contrastive run with the GAN, and the same without it.
_WITH_GAN_SHORT = Row("+ PCA whitening (as the exported encoder)", "sketch_gan_plus",
                      "pooled_whitened", "contrastive")
_ALONE_SHORT = Row("the contrastive task alone (no generator, no real/fake loss), whitened",
                   "sketch_gan_plus", "pooled_whitened", "contrastive_only", (("lambda_gan", 0),))
_WITH_GAN_FULL = Row("sketch-GAN+ shipped recipe (full length)", "sketch_gan_plus", "encoder")
_ALONE_FULL = Row("the contrastive task alone, full length (the recipe's 2,500 steps)",
                  "sketch_gan_plus", "encoder", "contrastive_only_full", (("lambda_gan", 0),),
                  steps=None)

# Issue 18: a use for the generator (read against both rows above), and the short row's noise.
_FAKE_NEGATIVES = Row(f"the contrastive task with the GAN, {ABLATION_STEPS} steps, whitened, + "
                      "generated images as extra negatives", "sketch_gan_plus",
                      "pooled_whitened", "contrastive_fake_negatives", (("fake_negatives", 1),))
_ALONE_SHORT_SEED_1 = Row(f"{_ALONE_SHORT.label}, seed 1 instead of 0", "sketch_gan_plus",
                          "pooled_whitened", "contrastive_only_seed1",
                          (("lambda_gan", 0), ("seed", 1)))

# Issue 18: row 19 (shipped as sketch_contrastive_<archive>) trained on, the neighbour rows'
# reference.
_PLAIN_12000 = Row("row 19 + 2,000 steps (12,000)", "sketch_gan_plus", "encoder",
                   "contrastive_only_12000_plain", (("lambda_gan", 0),), steps=12_000)
_NEIGHBOURS_12000 = Row(
    "row 19 + 2,000 steps with neighbour partners: half of each batch's second views are of one "
    "of the image's 3 nearest neighbours by row 19's encoder", "sketch_gan_plus", "encoder",
    "contrastive_only_12000_neighbours",
    (("lambda_gan", 0), ("neighbours", 0.5), ("neighbours_from", "sketch_contrastive_{archive}"),
     ("neighbours_after", 10_000)), steps=12_000)

# Issue 18: one change each to the contrastive task alone at the short length (_ALONE_SHORT),
# so each is read against that row: how two hands and two scans differ, then a larger batch.
HAND_AND_SCAN = (
    ("elastic_pixels", 2.0, "elastic deformation (up to 2 px)"),
    ("shear", 0.1, "shear and aspect change (up to 0.1)"),
    ("break_fraction", 0.1, "broken strokes (a tenth of the ink taken away)"),
    ("blur_probability", 0.3, "blur (sigma 1 px, 30% of views)"),
    ("ink_noise", 0.1, "paper grain and ink blots"),
)
_ALL_HAND_AND_SCAN = tuple((field, value) for field, value, _ in HAND_AND_SCAN)
_SHORT_CHANGES = (
    *((f"+ {label}", field.split("_")[0], ((field, value),))
      for field, value, label in HAND_AND_SCAN),
    ("+ all five hand-and-scan augmentations", "hand_and_scan", _ALL_HAND_AND_SCAN),
    ("+ batch 256 instead of 64", "batch256", (("batch_size", 256),)),
)
_ISSUE_18_SHORT = tuple(
    Row(f"the contrastive task alone, {ABLATION_STEPS} steps, {label}", "sketch_gan_plus",
        "pooled_whitened", f"contrastive_only_{run}", (("lambda_gan", 0), *changes))
    for label, run, changes in _SHORT_CHANGES)

ROWS = (
    Row("sketch-GAN as in the paper (shipped)", "sketch_gan", "flatten"),
    Row("BatchNorm with batch statistics instead of re-estimated ones", "sketch_gan",
        "batch_statistics"),
    Row("pooled multi-layer read-out, same weights", "sketch_gan", "pooled"),
    Row("+ PCA whitening (256-d) fitted on the training corpus", "sketch_gan",
        "pooled_whitened"),
    Row(f"sketch-GAN+ network, plain GAN, {ABLATION_STEPS} steps", "sketch_gan_plus", "pooled",
        "plain", (("augment", 0), ("lambda_con", 0.0))),
    Row("+ augmentation of real and generated batches", "sketch_gan_plus", "pooled",
        "augment", (("lambda_con", 0.0),)),
    Row("+ contrastive task in D", "sketch_gan_plus", "pooled", "contrastive"),
    _WITH_GAN_SHORT,
    _ALONE_SHORT,
    *_ISSUE_18_SHORT,
    _WITH_GAN_FULL,
    _ALONE_FULL,
    Row("the contrastive task alone, 4x longer (10,000 steps)", "sketch_gan_plus", "encoder",
        "contrastive_only_10k", (("lambda_gan", 0),), steps=10_000),
    *(Row(f"the 10,000-step weights, whitened to {dimension} dimensions instead of 256",
          "sketch_gan_plus", "pooled_whitened", "contrastive_only_10k", (("lambda_gan", 0),),
          steps=10_000, dimension=dimension) for dimension in (128, 512)),
    Row("the 10,000-step weights, + test-time pooling over 4 shifted and scaled views "
        "(5 encodings an image)", "sketch_gan_plus", "encoder", "contrastive_only_10k",
        (("lambda_gan", 0),), steps=10_000, test_time_views=True),
    Row("one model for both archives: the same recipe (10,000 steps) on merchant marks (x2) "
        "and Omniglot together (shipped: sketch_contrastive_joint)", "sketch_gan_plus",
        "encoder", model="sketch_contrastive_joint"),
    Row("the shipped weights, whitening floor eps 0.001 instead of 0.03", "sketch_gan_plus",
        "pooled_whitened", epsilon=0.001),
    _FAKE_NEGATIVES,
    _ALONE_SHORT_SEED_1,
    Row("the contrastive task alone, 8x longer (20,000 steps)", "sketch_gan_plus", "encoder",
        "contrastive_only_20k", (("lambda_gan", 0),), steps=20_000, archives=("omniglot",)),
    _PLAIN_12000,
    _NEIGHBOURS_12000,
    *(Row(f"the same with neighbour partners, {steps - 10_000:,} steps after row 19 "
          f"({steps:,})", "sketch_gan_plus", "encoder", f"contrastive_only_{steps}_neighbours",
          _NEIGHBOURS_12000.changes, steps=steps, archives=("merchant",))
      for steps in (16_000, 20_000, 24_000)),
)

# (label with the GAN, label without it, the runs' length) for MODELS.md's "what does the GAN
# add?" sentences.
GAN_PAIRS = ((_WITH_GAN_SHORT.label, _ALONE_SHORT.label, f"{ABLATION_STEPS} steps"),
             (_WITH_GAN_FULL.label, _ALONE_FULL.label, "full length"))
# (the generated-negatives row, the GAN row it changes, the row without the GAN) and (one short
# row, the same with another seed) for MODELS.md's sentences on them.
FAKE_NEGATIVES = (_FAKE_NEGATIVES.label, _WITH_GAN_SHORT.label, _ALONE_SHORT.label)
SEED_PAIR = (_ALONE_SHORT.label, _ALONE_SHORT_SEED_1.label)
# (2,000 more steps without neighbour partners, the same with them) for MODELS.md's sentence.
NEIGHBOUR_PAIR = (_PLAIN_12000.label, _NEIGHBOURS_12000.label)


# Test-time pooling: the image and small shifts and scales of it (the transforms of the
# invariance protocol), their embeddings averaged and renormalised. Five encodings an image.
TEST_TIME_VIEWS = (("scale", 0.92), ("scale", 1.08), ("shift", (2, 2)), ("shift", (-2, -2)))


class _FunctionEncoder:
    def __init__(self, function):
        self.encode = function


def _batched(model, images, training=False, batch_size=512):
    return np.concatenate([keras.ops.convert_to_numpy(model(images[s:s + batch_size],
                                                            training=training))
                           for s in range(0, len(images), batch_size)])


def pooled_readout(discriminator):
    """images -> every stride-2 block's activations pooled as sketch-GAN+ reads out its own
    (`sketch_gan_plus.pooled_unit_readout`), concatenated: that read-out on a faithful D."""
    from zoo.models.sketch_gan_plus import pooled_unit_readout

    blocks = [layer.output for layer in discriminator.layers
              if layer.name.endswith("_relu") and layer.name != "d0_relu"]
    return keras.Model(discriminator.input,
                       keras.layers.Concatenate()([pooled_unit_readout(b) for b in blocks]))


def _pooled_over_views(encoder):
    """The encoder with test-time pooling: embeddings of the image and of TEST_TIME_VIEWS of it
    averaged, then renormalised."""
    from zoo.apps.evaluation.invariance import apply_transform

    def encode(images):
        total = encoder.encode(images)
        for transform, setting in TEST_TIME_VIEWS:
            total = total + encoder.encode(apply_transform(transform, images, setting))
        return l2_normalise(total)

    return _FunctionEncoder(encode)


def row_encoder(row, name, weights_path, training_images):
    """An object with .encode(images) -> unit vectors for one ablation row."""
    encoder = _row_encoder(row, name, weights_path, training_images)
    return _pooled_over_views(encoder) if row.test_time_views else encoder


def _row_encoder(row, name, weights_path, training_images):
    from zoo import load
    from zoo.loading import load_gan
    from zoo.models.sketch_gan_plus import whitening_transform

    if row.readout == "encoder":
        return load(name, weights_path=weights_path, with_hash_head=False)
    _, discriminator = load_gan(name, weights_path)
    if row.readout in ("flatten", "batch_statistics"):
        features = keras.Model(discriminator.input,
                               discriminator.get_layer("features").output)
        # Batch statistics: each call normalises with the statistics of the images it is given
        # (the one-shot run's 20 images, or the whole retrieval corpus in batches of 512).
        training = row.readout == "batch_statistics"
        return _FunctionEncoder(lambda x: l2_normalise(_batched(features, x, training)))
    readout = (discriminator.get_layer("readout") if row.family == "sketch_gan_plus" else None)
    model = (keras.Model(discriminator.input, readout.output) if readout is not None
             else pooled_readout(discriminator))
    if row.readout == "pooled":
        return _FunctionEncoder(lambda x: l2_normalise(_batched(model, x)))
    # The same PCA whitening (and epsilon floor) as sketch_gan_plus.calibrate, refitted here so
    # that short runs made before a change of the floor are measured as shipped encoders are.
    mean, projection = whitening_transform(_batched(model, training_images), row.dimension,
                                           *([row.epsilon] if row.epsilon is not None else []))
    return _FunctionEncoder(lambda x: l2_normalise((_batched(model, x) - mean) @ projection))


def measure(encoder, runs, omniglot, merchant):
    """{column: value} for one encoder (see COLUMNS)."""
    one_shot = one_shot_errors({"row": encoder}, runs, baselines=False)
    merchant_metrics = retrieval_metrics(encoder.encode(merchant.images), merchant.labels)
    return {
        "one-shot error": one_shot["mean_error"]["row"],
        "Omniglot P@8": retrieval_metrics(encoder.encode(omniglot.images),
                                          omniglot.labels)["P@8"],
        "merchant P@8": merchant_metrics["P@8"],
        "merchant R@1": merchant_metrics["R@1"],
    }


def _length(row):
    """Recipe changes that set a run's length: none for a full-length row (the recipe's own)."""
    return {"iterations": row.steps, "checkpoint_every": 200} if row.steps else {}


def run_changes(row, trained_on):
    """The recipe changes of a row's run on `trained_on`: its length, then its own changes (text
    values name the archive as {archive}, e.g. the encoder that ranks neighbours)."""
    return {**_length(row), **{key: value.format(archive=trained_on) if isinstance(value, str)
                               else value for key, value in row.changes}}


def train_command(name, row, run_dir, trained_on):
    sets = [f"--set {key}={value}" for key, value in run_changes(row, trained_on).items()]
    return f"zoo train {name} --out {run_dir} " + " ".join(sets)


def recorded_rows(trained_on):
    """{label: recorded row} of the ablation table recorded for `trained_on` (empty if none)."""
    from zoo.apps.evaluation import results

    record = results.read("ablation").get(trained_on, {})
    return {row["label"]: row for row in record.get("rows", [])}


def new_rows(trained_on, rows=ROWS):
    """The rows of `rows` for `trained_on` that its recorded table does not hold yet."""
    recorded = recorded_rows(trained_on)
    return tuple(row for row in rows if row.label not in recorded and trained_on in row.archives)


def with_recorded_rows(result, rows=ROWS):
    """`result` (a run of some rows) completed with the recorded table's other rows, in the
    order of `rows`: a row's weights and protocol are fixed, so a recorded row stands."""
    measured = {row["label"]: row for row in result["rows"]}
    recorded = recorded_rows(result["trained_on"])
    return {**result, "rows": [measured.get(row.label) or recorded[row.label] for row in rows
                               if row.label in measured or row.label in recorded]}


def run_ablation(trained_on, runs_dir=None, train=False, data_dir=None, rows=ROWS,
                 progress=print):
    """Measure every row of `rows` for encoders trained on `trained_on` ("merchant" or
    "omniglot").

    Short runs live in runs_dir (default runs/ablation/<trained_on>); with `train`, missing
    ones are trained first. Returns {"trained_on", "rows": [{label, command, metrics}],
    "skipped": [{label, command}]}.
    """
    from zoo.data.corpora import load_corpus
    from zoo.apps.evaluation.oneshot import load_runs
    from zoo.registry import get_corpus
    from zoo.training.run import train_model

    if trained_on not in TRAINED_ON:
        raise ValueError(f"Expected --trained-on one of {sorted(TRAINED_ON)}, got {trained_on!r}.")
    runs_dir = runs_dir or os.path.join("runs", "ablation", trained_on)
    result = {"trained_on": trained_on, "steps": ABLATION_STEPS, "rows": [], "skipped": []}
    measurable = []
    for row in (row for row in rows if trained_on in row.archives):
        name = row.model or f"{row.family}_{trained_on}"
        weights_path, command = None, f"zoo train {name} (shipped weights)"
        if row.run:
            run_dir = os.path.join(runs_dir, row.run)
            command = train_command(name, row, run_dir, trained_on)
            weights_path = os.path.join(run_dir, f"{name}.weights.h5")
            if not os.path.exists(weights_path) and train:
                progress(f"training {row.run}: {command}")
                train_model(name, run_dir, data_dir, run_changes(row, trained_on))
            if not os.path.exists(weights_path):
                result["skipped"].append({"label": row.label, "command": command})
                continue
        measurable.append((row, name, weights_path, command))
    if not measurable:
        return result
    runs = load_runs(data_dir)
    omniglot = load_corpus(get_corpus("omniglot_background"), data_dir)
    merchant = load_corpus(get_corpus("merchant_eval"))
    training_images = load_corpus(get_corpus(TRAINED_ON[trained_on]), data_dir).images
    for row, name, weights_path, command in measurable:
        encoder = row_encoder(row, name, weights_path, training_images)
        metrics = measure(encoder, runs, omniglot, merchant)
        progress(f"{row.label}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        result["rows"].append({"label": row.label, "command": command, "metrics": metrics})
    return result


def format_table(result):
    lines = ["| change (trained on " + TRAINED_ON[result["trained_on"]] + ") | "
             + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for row in result["rows"]:
        metrics = row["metrics"]
        recall = metrics.get("merchant R@1")  # rows recorded before the column: not measured
        lines.append(f"| {row['label']} | {100 * metrics['one-shot error']:.1f}% | "
                     f"{metrics['Omniglot P@8']:.3f} | {metrics['merchant P@8']:.3f} | "
                     + (f"{recall:.3f} |" if recall is not None else "- |"))
    return "\n".join(lines)


def record(result):
    """Record the table as the "ablation" result of its archive, replacing the one before it
    (zoo.apps.evaluation.results; MODELS.md); return the file it went to."""
    from zoo.apps.evaluation import results

    return results.record("ablation", {
        "trained_on": result["trained_on"],
        "command": COMMAND.format(trained_on=result["trained_on"]),
        "steps": result["steps"], "rows": result["rows"]})

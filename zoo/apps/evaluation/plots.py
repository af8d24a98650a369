"""Figures of the invariance protocol (paper Fig. 5), each with the numbers behind it.

- `save_curves`: rotation or scale curves, one line per model and baseline (chance-normalised
  mean similarity, a band of +-1 standard deviation), one panel per training corpus.
- `save_shift_maps`: shift heat maps side by side, one panel per model and baseline, one shared
  colour scale.

Every figure `NAME.png` is written with `NAME.json` (the numbers as plotted) and `NAME.csv`
(one line per row and setting) beside it. Files are written atomically (temporary file, then
rename). Matplotlib runs on its Agg canvas directly; the global backend is left alone.
"""

import csv
import io
import json
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from zoo.atomic import write_bytes as write_atomically
from zoo.apps.evaluation.invariance import TRANSFORMS

TITLES = {"rotation": "Rotation", "scale": "Scale", "shift": "Shift"}
X_LABELS = {"rotation": "rotation angle (degrees; + = counter-clockwise)",
            "scale": "scale factor (< 1: shrunk and zero-padded, > 1: enlarged and cropped)"}
Y_LABEL = "chance-normalised similarity\n(1 = unchanged encoding, 0 = unrelated images)"
CSV_COLUMNS = ("corpus", "row", "kind", "setting", "dx", "dy", "mean_similarity",
               "std_similarity", "chance", "normalised_similarity", "normalised_std")


def _save_figure(figure, path):
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_atomically(path, buffer.getvalue())


def _numbers(result, transform):
    """{corpus: {row: {kind, chance, summary, settings, mean, std, normalised, normalised_std}}}."""
    numbers = {}
    for corpus, group in result["corpora"].items():
        numbers[corpus] = {}
        for label, row in group["rows"].items():
            if transform not in row:
                continue
            numbers[corpus][label] = {"kind": row.get("kind", "model"), "chance": row["chance"],
                                      "summary": row["summary"][transform], **row[transform]}
    return numbers


def _save_numbers(png_path, transform, result, numbers):
    stem = os.path.splitext(png_path)[0]
    document = {"transform": transform, "seed": result.get("seed"),
                "protocol": result.get("protocol"), "corpora": numbers}
    write_atomically(stem + ".json", json.dumps(document, indent=1) + "\n")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for corpus, rows in numbers.items():
        for label, row in rows.items():
            for index, setting in enumerate(row["settings"]):
                dx, dy = setting if transform == "shift" else ("", "")
                value = "" if transform == "shift" else setting
                writer.writerow([corpus, label, row["kind"], value, dx, dy,
                                 repr(row["mean"][index]), repr(row["std"][index]),
                                 repr(row["chance"]), repr(row["normalised"][index]),
                                 repr(row["normalised_std"][index])])
    write_atomically(stem + ".csv", text.getvalue())
    return stem + ".json", stem + ".csv"


def _style(kind, index):
    if kind == "raw pixels":
        return {"color": "black", "linestyle": "--", "linewidth": 1.5}
    colour = f"C{index % 10}"
    if kind == "untrained":
        return {"color": colour, "linestyle": ":", "linewidth": 1.8}
    return {"color": colour, "linestyle": "-", "linewidth": 2.2}


def _sample_note(result, corpus):
    group = result["corpora"][corpus]
    return (f"{len(group['sample_indices'])} images of {corpus}, seed {result.get('seed')}")


def save_curves(path, result, transform):
    """Rotation or scale curves of an invariance `result` (invariance.run_invariance) -> paths
    of the PNG, JSON and CSV."""
    if transform not in ("rotation", "scale"):
        raise ValueError(f"Curves are drawn for rotation or scale, not {transform!r}.")
    numbers = _numbers(result, transform)
    corpora = list(numbers)
    figure = Figure(figsize=(6.4 * len(corpora), 5.0), layout="constrained")
    axes = figure.subplots(1, len(corpora), squeeze=False)[0]
    for axis, corpus in zip(axes, corpora):
        model_index = {}
        for label, row in numbers[corpus].items():
            # Untrained baselines share the colour of the first model of their architecture.
            base = label.removeprefix("untrained ") if row["kind"] == "untrained" else label
            index = model_index.setdefault(base, len(model_index))
            style = _style(row["kind"], index)
            x = np.asarray(row["settings"], np.float64)
            mean = np.asarray(row["normalised"])
            spread = np.asarray(row["normalised_std"])
            axis.plot(x, mean, label=f"{label} (mean {row['summary']:.3f})", **style)
            axis.fill_between(x, mean - spread, mean + spread, color=style["color"], alpha=0.08,
                              linewidth=0)
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.axvline(0.0 if transform == "rotation" else 1.0, color="grey", linewidth=0.8)
        axis.set_xlabel(X_LABELS[transform])
        axis.set_ylabel(Y_LABEL)
        axis.set_title(f"{_sample_note(result, corpus)}; band = +-1 std", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    figure.suptitle(f"{TITLES[transform]} invariance of the encodings\n"
                    f"(dot product of transformed vs. original image, chance-normalised)")
    _save_figure(figure, path)
    return (path, *_save_numbers(path, transform, result, numbers))


def shift_grid(row, shifts=None):
    """A shift row's normalised means as a [len(dy), len(dx)] grid, with the dx and dy values."""
    settings = np.asarray(row["settings"])
    dxs, dys = np.unique(settings[:, 0]), np.unique(settings[:, 1])
    grid = np.full((len(dys), len(dxs)), np.nan)
    for (dx, dy), value in zip(settings, row["normalised"]):
        grid[np.searchsorted(dys, dy), np.searchsorted(dxs, dx)] = value
    return grid, dxs, dys


def save_shift_maps(path, result):
    """Shift heat maps side by side (one panel per model and baseline, one row of panels per
    corpus, one shared colour scale) -> paths of the PNG, JSON and CSV."""
    numbers = _numbers(result, "shift")
    corpora = list(numbers)
    columns = max(len(rows) for rows in numbers.values())
    grids = {(c, label): shift_grid(row) for c in corpora for label, row in numbers[c].items()}
    low = min(float(np.nanmin(grid)) for grid, _, _ in grids.values())
    figure = Figure(figsize=(3.6 * columns + 1.2, 3.6 * len(corpora) + 0.8), layout="constrained")
    axes = figure.subplots(len(corpora), columns, squeeze=False)
    image = None
    for row_index, corpus in enumerate(corpora):
        labels = list(numbers[corpus])
        for column in range(columns):
            axis = axes[row_index, column]
            if column >= len(labels):
                axis.set_axis_off()
                continue
            label = labels[column]
            grid, dxs, dys = grids[(corpus, label)]
            step = 0.5 * (dxs[1] - dxs[0]) if len(dxs) > 1 else 0.5
            image = axis.imshow(grid, cmap="viridis", vmin=min(low, 0.0), vmax=1.0,
                                origin="upper", interpolation="nearest",
                                extent=(dxs[0] - step, dxs[-1] + step, dys[-1] + step,
                                        dys[0] - step))
            axis.set_title(f"{label}\nmean {numbers[corpus][label]['summary']:.3f} "
                           f"({corpus})", fontsize=9)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.yaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_xlabel("dx (px, + = right)")
            axis.set_ylabel("dy (px, + = down)")
    figure.colorbar(image, ax=axes, shrink=0.8, label=Y_LABEL)
    figure.suptitle(f"Shift invariance: chance-normalised similarity per (dx, dy) "
                    f"({'; '.join(_sample_note(result, c) for c in corpora)})", fontsize=10)
    _save_figure(figure, path)
    return (path, *_save_numbers(path, "shift", result, numbers))


def save_invariance_figures(out_dir, result):
    """rotation.png, scale.png and shift.png (each with .json and .csv) in `out_dir`;
    returns {transform: {"png", "json", "csv"}} for the transforms present in `result`."""
    written = {}
    present = {t for group in result["corpora"].values() for row in group["rows"].values()
               for t in TRANSFORMS if t in row}
    for transform in TRANSFORMS:
        if transform not in present:
            continue
        path = os.path.join(out_dir, f"invariance_{transform}.png")
        if transform == "shift":
            files = save_shift_maps(path, result)
        else:
            files = save_curves(path, result, transform)
        written[transform] = dict(zip(("png", "json", "csv"), files))
    return written

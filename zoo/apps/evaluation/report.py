"""Evaluation runs that write files: invariance figures, one-shot errors, and a Markdown report.

- `evaluate_invariance(names, out_dir, seed=0)`: the invariance protocol (paper Fig. 5) for
  registered models with raw-pixel and untrained baselines; writes invariance.json and the
  rotation / scale / shift figures (each with JSON and CSV) to `out_dir`.
- `evaluate_oneshot(name, data_dir=None)`: Omniglot 20-way one-shot errors for a model with
  raw-pixel and MHD baselines in the same run.
- `paper_claims(result)`: is sketch-GAN more invariant than thin-GAN on rotation, scale, shift?
- `write_report(out_dir, sections=None)`: out_dir/REPORT.md (reports/REPORT.md) linking every
  figure and listing the numbers; without `sections`, from the JSON files the two evaluations
  left in `out_dir`.

Each result records the command that reproduces it and the machine it ran on.
"""

import csv
import glob
import io
import json
import os
import time

from zoo.apps.evaluation import invariance, oneshot
from zoo.apps.evaluation.plots import save_invariance_figures, write_atomically
from zoo.machine import machine_description

REPORT_NAME = "REPORT.md"


def _write_json(path, document):
    return write_atomically(path, json.dumps(document, indent=1) + "\n")


def evaluate_invariance(names, out_dir, seed=0, protocol=None, data_dir=None, command=None,
                        record=False):
    """Run the invariance protocol for `names` and write its figures and numbers to `out_dir`.

    Returns the result of `invariance.run_invariance` plus "figures" ({transform: {png, json,
    csv}}), "json" (out_dir/invariance.json, the full numbers), "claims" (`paper_claims`),
    "seconds", "machine" and "command" (how to rerun it; pass the CLI line when called from it).
    With `record`, the summaries are also recorded as results (`record_invariance`).
    """
    started = time.perf_counter()
    result = invariance.run_invariance(names, seed=seed, protocol=protocol, data_dir=data_dir)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine_description()
    result["command"] = command or (
        f"python3 -c \"from zoo.apps.evaluation.report import evaluate_invariance; "
        f"evaluate_invariance({list(names)!r}, {out_dir!r}, seed={seed})\"")
    result["claims"] = paper_claims(result)
    result["figures"] = save_invariance_figures(out_dir, result)
    result["json"] = os.path.join(out_dir, "invariance.json")
    _write_json(result["json"], result)
    if record:
        record_invariance(result)
    return result


def evaluate_oneshot(name, data_dir=None, out_dir=None, runs=None, command=None, record=False):
    """Omniglot 20-way one-shot error of registered model(s) `name` (a name or a list), with the
    raw-pixel and MHD baselines in the same run.

    `data_dir` holds all_runs.zip (default: zoo.data.omniglot.default_omniglot_dir()); `runs`
    keeps the first `runs` runs for quick checks. Returns {"models", "trained_on", "zip",
    "runs", "errors": {method: [per run]}, "mean_error": {method}, "seconds", "machine",
    "command"}; with `out_dir`, also writes oneshot_NAME.json and oneshot_NAME.csv there;
    with `record`, records the mean errors as results (`record_oneshot`).
    """
    from zoo import load
    from zoo.registry import get_entry

    names = [name] if isinstance(name, str) else list(name)
    started = time.perf_counter()
    zip_path = oneshot.runs_zip_path(data_dir)
    encoders = {n: load(n, with_hash_head=False) for n in names}
    result = oneshot.one_shot_errors(encoders, oneshot.load_runs(zip_path, runs=runs))
    result = {"models": names, "trained_on": {n: get_entry(n).corpus for n in names},
              "zip": os.path.abspath(zip_path), **result,
              "seconds": round(time.perf_counter() - started, 1), "machine": machine_description(),
              "command": command or (
                  f"python3 -c \"from zoo.apps.evaluation.report import evaluate_oneshot; "
                  f"evaluate_oneshot({name!r}, data_dir={data_dir!r}, out_dir={out_dir!r}"
                  + (f", runs={runs}" if runs else "") + ")\"")}
    if out_dir:
        stem = os.path.join(out_dir, "oneshot_" + "_".join(names))
        result["json"], result["csv"] = stem + ".json", stem + ".csv"
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        methods = list(result["errors"])
        writer.writerow(["run", *methods])
        for index, run in enumerate(result["runs"]):
            writer.writerow([run, *(result["errors"][m][index] for m in methods)])
        writer.writerow(["mean", *(result["mean_error"][m] for m in methods)])
        write_atomically(result["csv"], text.getvalue())
        _write_json(result["json"], result)
    if record:
        record_oneshot(result)
    return result


# ----------------------------------------------------------------------------- recording


def record_invariance(result):
    """Record the summaries of an invariance `result` (zoo.apps.evaluation.results, for MODELS.md):
    one "invariance" record a corpus and row, {corpus, subject, baseline, seed, num_samples,
    chance, rotation, scale, shift}; a model's row only for a model that ships weights."""
    from zoo.apps.evaluation import results

    records = []
    for corpus, group in result["corpora"].items():
        for label, row in group["rows"].items():
            baseline = row.get("kind", "model") != "model"
            if not baseline:
                results.require_published(label)
            records.append({"corpus": corpus, "subject": label, "baseline": baseline,
                            "seed": result["seed"], "num_samples": len(group["sample_indices"]),
                            "chance": row["chance"], **row["summary"]})
    return results.record("invariance", *records)


def record_oneshot(result):
    """Record one-shot mean errors (zoo.apps.evaluation.results, for MODELS.md): one "oneshot"
    record a method, {subject, baseline, mean_error, runs}; the models' only if they ship
    weights."""
    from zoo.apps.evaluation import results

    records = []
    for method, error in result["mean_error"].items():
        baseline = method not in result["models"]
        if not baseline:
            results.require_published(method)
        records.append({"subject": method, "baseline": baseline, "mean_error": error,
                        "runs": len(result["runs"])})
    return results.record("oneshot", *records)


# ----------------------------------------------------------------------------- the paper's claim


def _architecture(label):
    """'sketch' or 'thin' for a registered trained model, else None."""
    from zoo.registry import REGISTRY

    entry = REGISTRY.get(label)
    return entry.architecture.get("architecture") if entry is not None else None


def paper_claims(invariance_summary):
    """Whether sketch-GAN is more invariant than thin-GAN (Creswell & Bharath 2016, Fig. 5).

    `invariance_summary` is the result of `evaluate_invariance` / `run_invariance` or its
    "summary" ({corpus: {row: {transform: chance-normalised mean}}}). Models are compared only
    on the same corpus (the same samples); the first sketch-GAN / thin-GAN pair found is used.
    Returns {transform: {"verdict": "confirmed" | "not confirmed" | "not tested",
    "sketch": [name, score], "thin": [name, score], "corpus", "text"}}.
    """
    summary = invariance_summary.get("summary", invariance_summary)
    pair = None
    for corpus, rows in summary.items():
        sketch = [label for label in rows if _architecture(label) == "sketch"]
        thin = [label for label in rows if _architecture(label) == "thin"]
        if sketch and thin:
            pair = corpus, sketch[0], thin[0]
            break
    claims = {}
    for transform in invariance.TRANSFORMS:
        if pair is None or transform not in summary[pair[0]][pair[1]]:
            claims[transform] = {"verdict": "not tested", "text": (
                f"{transform}: not tested (needs a sketch-GAN and a thin-GAN model measured "
                f"on the same corpus)")}
            continue
        corpus, sketch, thin = pair
        sketch_score = summary[corpus][sketch][transform]
        thin_score = summary[corpus][thin][transform]
        verdict = "confirmed" if sketch_score > thin_score else "not confirmed"
        relation = ">" if sketch_score > thin_score else "<="
        claims[transform] = {
            "verdict": verdict, "corpus": corpus, "sketch": [sketch, sketch_score],
            "thin": [thin, thin_score],
            "text": (f"{transform}: {verdict} ({sketch} {sketch_score:.3f} {relation} "
                     f"{thin} {thin_score:.3f}, chance-normalised mean similarity on {corpus})"),
        }
    return claims


# ----------------------------------------------------------------------------- the report


def _link(path, out_dir):
    """A link relative to the report; files written into `out_dir` are linked by name, so the
    report can be regenerated from its JSON from any working directory."""
    if os.path.exists(os.path.join(out_dir, os.path.basename(path))):
        return os.path.basename(path)
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))


def _invariance_section(result, out_dir):
    protocol = result["protocol"]
    lines = [
        "## Invariance to rotation, scale and shift (evaluation.md section 1, paper Fig. 5)",
        "",
        f"{protocol['num_samples']} images drawn with seed {result['seed']} from each model's "
        f"training corpus; similarity = dot product of the L2-normalised encodings of the "
        f"transformed vs. the original image. Rotation {len(protocol['rotation_degrees'])} angles "
        f"({protocol['rotation_degrees'][0]:g}..{protocol['rotation_degrees'][-1]:g} degrees, "
        f"about the centre, bilinear, zero fill, + = counter-clockwise), scale "
        f"{len(protocol['scale_factors'])} factors ({protocol['scale_factors'][0]:g}.."
        f"{protocol['scale_factors'][-1]:g}; zero-padded below 1, centre-cropped above), shift "
        f"{len(protocol['shift_pixels']) ** 2} integer (dx, dy) shifts "
        f"({protocol['shift_pixels'][0]}..{protocol['shift_pixels'][-1]} px, zero fill). "
        f"Chance = mean similarity of {protocol['num_chance_pairs']:,} random pairs of different "
        f"images of the corpus; normalised score = (s - chance) / (1 - chance), so 1 = the "
        f"encoding did not change and 0 = as similar as two unrelated images. Baselines in the "
        f"same run: raw pixels and an untrained encoder of the same architecture (seed "
        f"{result['seed']}).",
        "",
        "Chance-normalised mean similarity over all settings of each transform "
        "(higher = more invariant):",
        "",
    ]
    for corpus, rows in result["summary"].items():
        group = result["corpora"][corpus]
        lines += [f"**{corpus}** ({group['description']})", "",
                  "| row | chance | rotation | scale | shift |", "|---|---|---|---|---|"]
        for label, scores in rows.items():
            cells = " | ".join(f"{scores[t]:.3f}" if t in scores else "-"
                               for t in invariance.TRANSFORMS)
            lines.append(f"| {label} | {group['rows'][label]['chance']:.3f} | {cells} |")
        lines.append("")
    claims = result.get("claims") or paper_claims(result)
    lines += ["Paper's claim (sketch-GAN more invariant than thin-GAN on all three):", ""]
    lines += [f"- {claim['text']}" for claim in claims.values()]
    lines.append("")
    for transform, files in result.get("figures", {}).items():
        lines += [f"![{transform} invariance]({_link(files['png'], out_dir)})", "",
                  f"Numbers: [{os.path.basename(files['json'])}]({_link(files['json'], out_dir)}), "
                  f"[{os.path.basename(files['csv'])}]({_link(files['csv'], out_dir)})", ""]
    if "json" in result:
        lines += [f"All numbers (per setting: mean, std, normalised): "
                  f"[{os.path.basename(result['json'])}]({_link(result['json'], out_dir)})"
                  + (f"; wall time {result['seconds']} s." if "seconds" in result else ""), ""]
    return lines


def _oneshot_section(results, out_dir):
    lines = ["## Omniglot 20-way one-shot classification (evaluation.md section 3)", "",
             "Each test image of a run is classified as its nearest of the 20 training images "
             "(one per character); error = fraction misclassified, averaged over the runs of "
             "all_runs.zip. Encoders and raw pixels see the preprocessed 64x64 images "
             "(zoo.data.images.load_image); MHD = Modified Hausdorff Distance between the "
             "centred ink pixels of the original 105x105 images, as in the dataset's demo "
             "(which reports 38.8%). Baselines computed in the same run.", ""]
    for result in results:
        trained = ", ".join(f"{n} trained on {c}" for n, c in result["trained_on"].items())
        lines += [f"{len(result['runs'])} runs; {trained}"
                  + (f"; wall time {result['seconds']} s" if "seconds" in result else "") + ".",
                  "", "| method | mean error |", "|---|---|"]
        lines += [f"| {method} | {100 * error:.1f}% |"
                  for method, error in result["mean_error"].items()]
        lines.append("")
        methods = list(result["errors"])
        lines += ["Per run (error %):", "", "| run | " + " | ".join(methods) + " |",
                  "|---" * (len(methods) + 1) + "|"]
        for index, run in enumerate(result["runs"]):
            lines.append(f"| {run} | " + " | ".join(
                f"{100 * result['errors'][m][index]:.0f}" for m in methods) + " |")
        lines.append("")
        if "json" in result:
            lines += [f"Numbers: [{os.path.basename(result['json'])}]"
                      f"({_link(result['json'], out_dir)}), [{os.path.basename(result['csv'])}]"
                      f"({_link(result['csv'], out_dir)})", ""]
    return lines


def load_sections(out_dir):
    """The sections stored in `out_dir` by earlier evaluations: invariance.json and every
    oneshot_*.json."""
    sections = {}
    path = os.path.join(out_dir, "invariance.json")
    if os.path.exists(path):
        with open(path) as handle:
            sections["invariance"] = json.load(handle)
    oneshot_results = []
    for path in sorted(glob.glob(os.path.join(out_dir, "oneshot_*.json"))):
        with open(path) as handle:
            oneshot_results.append(json.load(handle))
    if oneshot_results:
        sections["oneshot"] = oneshot_results
    return sections


RETRIEVAL_GRIDS = "retrieval_grids"


def _retrieval_grids_section(out_dir):
    """Links to the query + top-8 grids (paper Fig. 6) that `zoo evaluate retrieval --grid
    OUT_DIR/retrieval_grids` wrote, if any."""
    folder = os.path.join(out_dir, RETRIEVAL_GRIDS)
    grids = sorted(f for f in os.listdir(folder) if f.endswith(".png")) if os.path.isdir(
        folder) else []
    if not grids:
        return []
    lines = ["", "## Retrieval grids (paper Fig. 6)", "",
             f"`zoo evaluate retrieval NAMES --grid {folder}`: 15 seeded queries (blue), each "
             "with its top 8; green = same identity / character, red = another.", ""]
    for grid in grids:
        lines += [f"### {grid[:-4]}", "", f"![{grid[:-4]}]({RETRIEVAL_GRIDS}/{grid})", ""]
    return lines


def write_report(out_dir, sections=None):
    """Write out_dir/REPORT.md and return its path.

    `sections` is a dict with any of: "invariance" (a result of `evaluate_invariance`),
    "oneshot" (a result of `evaluate_oneshot`, or a list of them), "commands" (shell commands
    that produced the numbers, besides those the results record), "machine" (a line describing
    the machine). Without `sections`, they are read from the JSON files in `out_dir`
    (`load_sections`).
    """
    if sections is None:
        sections = load_sections(out_dir)
        if not sections:
            raise ValueError(f"No evaluation results (invariance.json, oneshot_*.json) in "
                             f"{out_dir!r}; run evaluate_invariance / evaluate_oneshot first.")
    known = {"invariance", "oneshot", "commands", "machine"}
    unknown = set(sections) - known
    if unknown:
        raise ValueError(f"Unknown report sections {sorted(unknown)}; expected {sorted(known)}.")
    oneshot_results = sections.get("oneshot") or []
    if isinstance(oneshot_results, dict):
        oneshot_results = [oneshot_results]
    results = ([sections["invariance"]] if sections.get("invariance") else []) + oneshot_results
    commands = list(sections.get("commands") or [])
    commands += [r["command"] for r in results if r.get("command") and r["command"] not in commands]
    machines = list(dict.fromkeys(filter(None, [sections.get("machine")]
                                         + [r.get("machine") for r in results])))
    lines = ["# Evaluation report", "",
             "Generated by zoo.apps.evaluation.report.write_report; every number below comes from "
             "the commands listed, with fixed seeds.", ""]
    if machines:
        lines += [f"Machine: {'; '.join(machines)}", ""]
    if commands:
        lines += ["```bash", *commands, "```", ""]
    if sections.get("invariance"):
        lines += _invariance_section(sections["invariance"], out_dir)
    if oneshot_results:
        lines += _oneshot_section(oneshot_results, out_dir)
    lines += _retrieval_grids_section(out_dir)
    return write_atomically(os.path.join(out_dir, REPORT_NAME), "\n".join(lines))

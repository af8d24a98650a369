"""Hashing retrieval: mAP@1000 of binary codes ranked by Hamming distance (evaluation.md s. 4).

The protocol (BinGAN's CIFAR-10 one, applied to Fashion-MNIST): 1,000 seeded queries drawn from
all 70,000 images, the other 69,000 are the database, relevance = same class (labels serve
scoring only). AP over the top 1000 = sum over ranks r of P@r rel_r divided by the number of
relevant items in the top 1000 (0 if none). Hamming distances tie a lot, so two variants:

* "stable": ties broken by database index (a stable sort);
* "tie-aware": the expectation over every order of the tied items (He et al., "Hashing as
  Tie-Aware Learning to Rank", CVPR 2018), exact for the sum; the top-1000 cut divides by the
  expected number of relevant items in the top 1000.

Baselines in the same run from the same pixels (the 32x32 inputs flattened): LSH, PCAH and
PCA-ITQ from `zoo.hashing` (the module the float encoders' hash heads come from).
"""

import json
import os

import numpy as np

from zoo.atomic import atomic_file

from zoo.hashing import fit_itq, fit_lsh, fit_pcah

TOP = 1000
PRECISION_AT = (1, 10, 50, 100, 200, 500, 1000)
BASELINES = {"LSH": fit_lsh, "PCAH": fit_pcah, "PCA-ITQ": fit_itq}


def _check_bits(bits, name):
    bits = np.asarray(bits)
    if bits.ndim != 2 or bits.shape[1] < 1 or not np.isin(bits, (0, 1)).all():
        raise ValueError(f"Expected {name} as 0/1 bits [N, K]; got shape {bits.shape}.")
    return bits.astype(np.float32)


def hamming_matrix(query_bits, database_bits):
    """int32 [Q, N] Hamming distances between 0/1 bit matrices [Q, K] and [N, K]."""
    query, database = _check_bits(query_bits, "query bits"), _check_bits(database_bits,
                                                                         "database bits")
    if query.shape[1] != database.shape[1]:
        raise ValueError(f"Query and database codes differ in length: {query.shape[1]} vs "
                         f"{database.shape[1]} bits.")
    signs_q, signs_d = 2 * query - 1, 2 * database - 1
    agree = signs_q @ signs_d.T  # K - 2 * distance
    return np.rint((query.shape[1] - agree) / 2).astype(np.int32)


def average_precision_stable(distances, relevant, top=TOP):
    """AP@top of one query, ties broken by database index. distances [N], relevant bool [N]."""
    order = np.argsort(distances, kind="stable")[:top]
    hits = np.asarray(relevant, bool)[order]
    found = hits.sum()
    if found == 0:
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / found)


def average_precision_tie_aware(distances, relevant, top=TOP):
    """AP@top of one query, averaged over all orders of equally distant items (see module doc)."""
    distances = np.asarray(distances)
    relevant = np.asarray(relevant, bool)
    values, inverse = np.unique(distances, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(values)).astype(np.float64)
    hits = np.bincount(inverse, weights=relevant, minlength=len(values))
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
    total, expected_found, seen, seen_relevant = 0.0, 0.0, 0, 0.0
    for count, hit in zip(counts, hits):
        first, last = seen + 1, min(seen + int(count), top)  # 1-based ranks of the group in top
        if first > top:
            break
        if hit > 0:
            inner = (hit - 1) / (count - 1) if count > 1 else 0.0
            span = harmonic[last] - harmonic[first - 1]  # sum of 1 / t over the group's ranks
            # sum over t of (R + (t - seen - 1) * inner + 1) / t, times P(rank t is relevant)
            total += hit / count * ((seen_relevant + 1) * span
                                    + inner * ((last - first + 1) - (seen + 1) * span))
            expected_found += hit / count * (last - first + 1)
        seen += int(count)
        seen_relevant += hit
    return float(total / expected_found) if expected_found > 0 else 0.0


def precision_at(distances, relevant, ks=PRECISION_AT):
    """P@k for each k, ties broken by database index."""
    order = np.argsort(distances, kind="stable")[: max(ks)]
    hits = np.cumsum(np.asarray(relevant, bool)[order])
    return [float(hits[k - 1] / k) for k in ks]


def evaluate_codes(query_bits, query_labels, database_bits, database_labels, top=TOP,
                   ks=PRECISION_AT):
    """{"map_stable", "map_tie_aware", "precision_at": {k: P@k}} of Hamming ranking."""
    distances = hamming_matrix(query_bits, database_bits)
    database_labels = np.asarray(database_labels)
    ks = [k for k in ks if k <= len(database_labels)]  # P@k needs at least k items
    stable, aware, precision = [], [], []
    for row, label in zip(distances, np.asarray(query_labels)):
        relevant = database_labels == label
        stable.append(average_precision_stable(row, relevant, top))
        aware.append(average_precision_tie_aware(row, relevant, top))
        precision.append(precision_at(row, relevant, ks))
    return {"map_stable": float(np.mean(stable)), "map_tie_aware": float(np.mean(aware)),
            "precision_at": dict(zip((str(k) for k in ks), np.mean(precision, axis=0).tolist()))}


def split_queries(count, num_queries=1000, seed=0):
    """(query indices, database indices): a seeded choice of queries, the rest the database."""
    if not 0 < num_queries < count:
        raise ValueError(f"Expected 0 < num_queries < {count}, got {num_queries}.")
    queries = np.sort(np.random.default_rng(seed).choice(count, num_queries, replace=False))
    database = np.setdiff1d(np.arange(count), queries)
    return queries, database


def baseline_codes(pixels_database, pixels_query, bits, seed=0):
    """{method: (query bits, database bits)} of LSH / PCAH / PCA-ITQ fitted on the database."""
    database = pixels_database.reshape(len(pixels_database), -1).astype(np.float32)
    query = pixels_query.reshape(len(pixels_query), -1).astype(np.float32)
    codes = {}
    for method, fit in BASELINES.items():
        head = fit(database, bits) if method == "PCAH" else fit(database, bits, seed=seed)
        codes[method] = (head.bits(query), head.bits(database))
    return codes


def evaluate_hashing(encoders, images, labels, num_queries=1000, seed=0, baselines=True,
                     progress=True):
    """mAP@1000 (stable and tie-aware) and P@k of each encoder's codes and of the baselines at
    each encoder's code length. Returns {"protocol": ..., "models": {name: metrics},
    "baselines": {bits: {method: metrics}}}."""
    from tqdm.auto import tqdm

    queries, database = split_queries(len(images), num_queries, seed)
    results = {"protocol": {"queries": int(len(queries)), "database": int(len(database)),
                            "seed": seed, "top": TOP},
               "models": {}, "baselines": {}}
    for encoder in tqdm(encoders, desc="models", disable=not progress):
        bits = encoder.hash(images).bits
        metrics = evaluate_codes(bits[queries], labels[queries], bits[database], labels[database])
        metrics["bits"] = int(bits.shape[1])
        metrics["bit_balance"] = float(np.abs(bits[database].mean(axis=0) - 0.5).mean())
        results["models"][encoder.name] = metrics
    if baselines:
        lengths = sorted({m["bits"] for m in results["models"].values()}) or [32]
        for bits in tqdm(lengths, desc="baselines", disable=not progress):
            codes = baseline_codes(images[database], images[queries], bits, seed)
            results["baselines"][str(bits)] = {
                method: evaluate_codes(query_bits, labels[queries], database_bits,
                                       labels[database])
                for method, (query_bits, database_bits) in codes.items()
            }
    return results


def format_hashing_table(results):
    """A markdown table: one row per model and baseline, mAP@1000 (stable / tie-aware), P@100."""
    lines = ["| codes | bits | mAP@1000 (stable) | mAP@1000 (tie-aware) | P@100 |",
             "|---|---|---|---|---|"]
    rows = [(name, m["bits"], m) for name, m in results["models"].items()]
    rows += [(method, int(bits), m) for bits, methods in results["baselines"].items()
             for method, m in methods.items()]
    for name, bits, m in sorted(rows, key=lambda row: (row[1], row[0])):
        lines.append(f"| {name} | {bits} | {m['map_stable']:.3f} | {m['map_tie_aware']:.3f} | "
                     f"{m['precision_at']['100']:.3f} |")
    return "\n".join(lines)


def plot_precision_curves(results, path):
    """P@k curves of the models and baselines, one panel per code length, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({m["bits"] for m in results["models"].values()})
    figure, axes = plt.subplots(1, len(lengths), figsize=(4.5 * len(lengths), 3.6), squeeze=False)
    for axis, bits in zip(axes[0], lengths):
        curves = {name: m for name, m in results["models"].items() if m["bits"] == bits}
        curves.update(results["baselines"].get(str(bits), {}))
        for name, metrics in curves.items():
            ks = [int(k) for k in metrics["precision_at"]]
            axis.plot(ks, list(metrics["precision_at"].values()), marker="o", label=name)
        axis.set_xscale("log")
        axis.set_xlabel("k (Hamming ranking, stable ties)")
        axis.set_ylabel("precision@k")
        axis.set_title(f"{bits} bits")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_file(path) as stream:
        figure.savefig(stream, format="png", dpi=110)
    plt.close(figure)
    return path


def run_hashing_evaluation(names, data_dir=None, num_queries=1000, seed=0, out_dir="reports",
                           record=False, command=None, progress=True):
    """`zoo evaluate hashing`: evaluate registered hashing models on their eval corpus (all on
    the first model's), write JSON + the P@k figure to out_dir/hashing/, optionally record the
    numbers as results (`record_hashing`; MODELS.md). Returns the results dict."""
    from zoo import load
    from zoo.data.corpora import load_corpus
    from zoo.registry import get_corpus, get_entry

    if not names:
        raise ValueError("Name at least one registered model to evaluate.")
    corpus = get_entry(names[0]).eval_corpus
    data = load_corpus(get_corpus(corpus), data_dir)
    encoders = [load(name) for name in names]
    results = evaluate_hashing(encoders, data.images, data.labels, num_queries=num_queries,
                               seed=seed, progress=progress)
    results["corpus"] = corpus
    results["command"] = command
    folder = os.path.join(out_dir, "hashing")
    os.makedirs(folder, exist_ok=True)
    stem = "_".join(names) if len(names) <= 3 else f"{len(names)}_models"
    results["figure"] = plot_precision_curves(results, os.path.join(folder, f"{stem}.png"))
    with atomic_file(os.path.join(folder, f"{stem}.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    if record:
        record_hashing(results, command)
    return results


def record_hashing(results, command):
    """Record `run_hashing_evaluation`'s `results` (zoo.apps.evaluation.results, for MODELS.md): one
    "hashing" record a model (with `command`) and one a baseline method and code length ("LSH,
    16 bits"), each with the protocol it was measured under on results["corpus"]."""
    from zoo.apps.evaluation import results as stored

    corpus, protocol = results["corpus"], results["protocol"]
    records = [{**metrics, "corpus": corpus, "subject": name, "baseline": False,
                "protocol": protocol, "command": command}
               for name, metrics in results["models"].items()]
    records += [{**metrics, "corpus": corpus, "subject": f"{method}, {bits} bits",
                 "baseline": True, "method": method, "bits": int(bits), "protocol": protocol}
                for bits, methods in results["baselines"].items()
                for method, metrics in methods.items()]
    return stored.record("hashing", *records)

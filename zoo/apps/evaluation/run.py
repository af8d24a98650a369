"""Evaluate registered models against baselines on one corpus, in one run."""

import os
import re

import numpy as np

from zoo.data.corpora import load_corpus
from zoo.apps.evaluation.retrieval import rank_neighbours, raw_pixel_embeddings, retrieval_metrics
from zoo.hashing import fit_itq, top_k_overlap
from zoo.registry import get_corpus, get_entry
from zoo.visualize import save_retrieval_grid

RAW_PIXELS = "raw pixels"


def save_query_grid(path, images, embeddings, labels=None, queries=15, top_k=8, seed=0,
                    dark_ink=True):
    """Fig. 6-style grid: `queries` seeded queries, each with its top `top_k` neighbours. The
    images are the zoo's preprocessed drawings (strokes 1 on black), drawn as the archive shows
    them, dark ink on light paper (dark_ink=False: as the encoder sees them)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), size=min(queries, len(images)), replace=False))
    order = rank_neighbours(embeddings, top_k)[chosen]
    scores = np.take_along_axis(embeddings[chosen] @ embeddings.T, order, axis=1)
    is_match = None if labels is None else labels[order] == labels[chosen][:, None]
    return save_retrieval_grid(path, images[chosen], images[order], is_match, scores,
                               dark_ink=dark_ink)


def evaluate_retrieval(names, corpus=None, data_dir=None, grid_dir=None, record=False, k=8):
    """{row: metrics} for each model and the raw-pixel baseline on `corpus`.

    `corpus` defaults to the first model's eval corpus; all models are scored on the same
    images. With `grid_dir`, a retrieval grid PNG per row is written there. With `record`,
    the numbers are recorded as results (`record_retrieval`; and so in MODELS.md).
    """
    from zoo import load

    if not names:
        raise ValueError("Name at least one registered model to evaluate.")
    corpus = corpus or get_entry(names[0]).eval_corpus
    data = load_corpus(get_corpus(corpus), data_dir)
    parts = data.parts or None
    embeddings = {RAW_PIXELS: raw_pixel_embeddings(data.images)}
    overlaps = {}
    for name in names:
        encoder = load(name)
        embeddings[name] = encoder.encode(data.images)
        heads = [encoder.hash_head] if encoder.hash_head is not None else []
        if heads and heads[0].kind == "learned":
            # BinGAN's claim, tested in the same run: the learned code against PCA + ITQ fitted
            # (as the other float encoders' heads are) on the same network's training features.
            training = load_corpus(get_corpus(encoder.entry.corpus), data_dir).images
            heads.append(fit_itq(encoder.encode(training), heads[0].num_bits, seed=0))
        for head in heads:
            # Ranking by dot product of +-1 codes = ranking by Hamming distance (same ties).
            bits = head.bits(embeddings[name])
            row = hamming_row(name, head)
            embeddings[row] = 2.0 * bits.astype(np.float32) - 1.0
            overlaps[row] = top_k_overlap(embeddings[name], bits, k=k)
    results = {}
    for row, vectors in embeddings.items():
        results[row] = retrieval_metrics(vectors, data.labels, parts=parts, k=k)
        if row in overlaps:
            results[row][f"cosine_overlap@{k}"] = overlaps[row]
        if grid_dir:
            file_name = re.sub(r"[^A-Za-z0-9.-]+", "_", row).strip("_") + f"__{corpus}.png"
            save_query_grid(os.path.join(grid_dir, file_name), data.images, vectors, data.labels)
    if record:
        record_retrieval(names, corpus, results)
    return results


def record_retrieval(names, corpus, results):
    """Record `evaluate_retrieval`'s `results` on `corpus` (zoo.apps.evaluation.results, for
    MODELS.md): one "retrieval" record for each model (its float and Hamming rows) and one for
    the raw-pixel baseline, each replacing the one before it; models must ship weights."""
    from zoo.apps.evaluation import results as stored

    records = []
    for name in names:
        stored.require_published(name)
        records.append({"corpus": corpus, "subject": name, "baseline": False,
                        "rows": {row: results[row] for row in results
                                 if row == name or row.startswith(f"{name} (")}})
    records.append({"corpus": corpus, "subject": RAW_PIXELS, "baseline": True,
                    "rows": {RAW_PIXELS: results[RAW_PIXELS]}})
    return stored.record("retrieval", *records)


def hamming_row(name, head):
    """The table row of a model's codes: "NAME (64-bit ITQ, Hamming)", "... learned ...", ..."""
    return f"{name} ({head.num_bits}-bit {head.kind}, Hamming)"


def table_columns(results):
    """Metric names in first-seen order over all rows."""
    return list(dict.fromkeys(c for metrics in results.values() for c in metrics))


def format_table(results):
    """A fixed-width text table of {row: {metric: value}}; '-' where a row lacks a metric."""
    columns = table_columns(results)
    width = max(len(row) for row in results) + 2
    lines = [" " * width + "".join(f"{c:>17s}" for c in columns)]
    for row, metrics in results.items():
        cells = (f"{metrics[c]:17.4f}" if c in metrics else f"{'-':>17s}" for c in columns)
        lines.append(f"{row:{width}s}" + "".join(cells))
    return "\n".join(lines)

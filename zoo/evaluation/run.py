"""Evaluate registered models against baselines on one corpus, in one run."""

import os

import numpy as np

from zoo.data.corpora import load_corpus
from zoo.evaluation.retrieval import rank_neighbours, raw_pixel_embeddings, retrieval_metrics
from zoo.registry import get_corpus, get_entry, read_manifest, write_manifest
from zoo.visualize import save_retrieval_grid

RAW_PIXELS = "raw pixels"


def save_query_grid(path, images, embeddings, labels=None, queries=15, top_k=8, seed=0):
    """Fig. 6-style grid: `queries` seeded queries, each with its top `top_k` neighbours."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(images), size=min(queries, len(images)), replace=False))
    order = rank_neighbours(embeddings, top_k)[chosen]
    scores = np.take_along_axis(embeddings[chosen] @ embeddings.T, order, axis=1)
    is_match = None if labels is None else labels[order] == labels[chosen][:, None]
    return save_retrieval_grid(path, images[chosen], images[order], is_match, scores)


def evaluate_retrieval(names, corpus=None, data_dir=None, grid_dir=None, record=False, k=8):
    """{row: metrics} for each model and the raw-pixel baseline on `corpus`.

    `corpus` defaults to the first model's eval corpus; all models are scored on the same
    images. With `grid_dir`, a retrieval grid PNG per row is written there. With `record`,
    the numbers are stored in the weights manifest (and so in MODELS.md).
    """
    from zoo import load

    if not names:
        raise ValueError("Name at least one registered model to evaluate.")
    corpus = corpus or get_entry(names[0]).eval_corpus
    data = load_corpus(get_corpus(corpus), data_dir)
    parts = data.parts or None
    embeddings = {RAW_PIXELS: raw_pixel_embeddings(data.images)}
    for name in names:
        embeddings[name] = load(name).encode(data.images)
    results = {}
    for row, vectors in embeddings.items():
        results[row] = retrieval_metrics(vectors, data.labels, parts=parts, k=k)
        if grid_dir:
            file_name = row.replace(" ", "_") + f"_{corpus}.png"
            save_query_grid(os.path.join(grid_dir, file_name), data.images, vectors, data.labels)
    if record:
        manifest = read_manifest()
        for name in names:
            manifest["models"][name].setdefault("metrics", {})[corpus] = results[name]
        manifest["baselines"].setdefault(corpus, {})[RAW_PIXELS] = results[RAW_PIXELS]
        write_manifest(manifest)
    return results


def format_table(results):
    """A fixed-width text table of {row: {metric: value}}."""
    columns = list(next(iter(results.values())))
    lines = [f"{'':24s}" + "".join(f"{c:>13s}" for c in columns)]
    for row, metrics in results.items():
        lines.append(f"{row:24s}" + "".join(f"{metrics[c]:13.4f}" for c in columns))
    return "\n".join(lines)

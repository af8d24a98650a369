"""The README's main job: encode a generated merchant-mark corpus and show what retrieval finds."""

import os

from zoo.data.corpora import load_corpus
from zoo.evaluation.retrieval import raw_pixel_embeddings, retrieval_metrics
from zoo.evaluation.run import save_query_grid
from zoo.registry import get_corpus


def run_demo(model="sketch_gan_merchant", out_dir="demo", corpus="merchant_eval"):
    """Load `model`, encode `corpus`, write a query + top-8 grid PNG; return a short report."""
    from zoo import load

    encoder = load(model)
    data = load_corpus(get_corpus(corpus))
    embeddings = encoder.encode(data.images)
    grid = save_query_grid(os.path.join(out_dir, f"{model}_retrieval.png"), data.images,
                           embeddings, data.labels)
    ours = retrieval_metrics(embeddings, data.labels)
    pixels = retrieval_metrics(raw_pixel_embeddings(data.images), data.labels)
    return (f"{encoder}: encoded {len(data)} images of {corpus} -> {embeddings.shape}\n"
            f"P@8 {ours['P@8']:.3f} (raw pixels {pixels['P@8']:.3f}), "
            f"mAP {ours['mAP']:.3f} (raw pixels {pixels['mAP']:.3f})\n"
            f"retrieval grid (query in blue, top 8 framed green = same mark, red = other): {grid}")

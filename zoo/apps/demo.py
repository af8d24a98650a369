"""The README's main job: export a model, serve it, encode a generated corpus through the gRPC
client, search it, and show what retrieval finds next to raw pixels."""

import os

from zoo.data.corpora import load_corpus
from zoo.apps.evaluation.retrieval import raw_pixel_embeddings, retrieval_metrics
from zoo.apps.evaluation.run import save_query_grid
from zoo.registry import RECOMMENDED, get_corpus

MODEL_CONFIG = """model_config_list {{
  config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow" }}
}}
"""


def encode_via_server(encoder, images, work_dir):
    """Export `encoder` as version 1 under work_dir/models, serve it with `zoo serve` on free
    loopback ports, encode `images` with serving.client.EncoderClient, stop the server."""
    from serving.client import EncoderClient
    from serving.launch import start_server

    base_dir = os.path.abspath(os.path.join(work_dir, "models"))
    encoder.export(base_dir, 1, overwrite=True)
    config_path = os.path.join(work_dir, "models.config")
    with open(config_path, "w") as handle:
        handle.write(MODEL_CONFIG.format(name=encoder.name,
                                         base_path=os.path.join(base_dir, encoder.name)))
    server = start_server("python", config_path, {encoder.name: [1]}, log_dir=work_dir)
    try:
        with EncoderClient(server.target, encoder.name) as client:
            return client.encode(images)
    finally:
        server.stop()


def run_demo(model=RECOMMENDED, out_dir="demo", corpus="merchant_eval",
             via_server=True):
    """Encode `corpus` with `model` (through a served SavedModel unless `via_server` is False),
    write a query + top-8 grid PNG, and return a short report."""
    from zoo import load

    encoder = load(model)
    data = load_corpus(get_corpus(corpus))
    os.makedirs(out_dir, exist_ok=True)
    if via_server:
        embeddings = encode_via_server(encoder, data.images, out_dir)
        route = "exported, served by `zoo serve`, encoded through the gRPC client"
    else:
        embeddings = encoder.encode(data.images)
        route = "encoded in-process"
    grid = save_query_grid(os.path.join(out_dir, f"{model}_retrieval.png"), data.images,
                           embeddings, data.labels)
    ours = retrieval_metrics(embeddings, data.labels)
    pixels = retrieval_metrics(raw_pixel_embeddings(data.images), data.labels)
    return (f"{model}: {len(data)} images of {corpus} {route} -> {embeddings.shape}\n"
            f"P@8 {ours['P@8']:.3f} (raw pixels {pixels['P@8']:.3f}), "
            f"mAP {ours['mAP']:.3f} (raw pixels {pixels['mAP']:.3f})\n"
            f"retrieval grid (query in blue, top 8 framed green = same mark, red = other): {grid}")

"""Shared setup of the serving benchmarks: export a model, write a config, start a server."""

import argparse
import atexit
import os
import shutil
import tempfile

import numpy as np

from serving.launch import copy_version, start_server

MODEL = "thin_gan_merchant"  # the default model of the serving benchmarks and tests

LABELS = {"stable": 1, "canary": 2}  # the version labels of the benchmarks' and tests' config


def model_config(name, base_path, labels=LABELS):
    """A ModelServerConfig text proto serving every version of model `name` under `base_path`,
    with `labels` ({label: version})."""
    label_lines = "".join(f'    version_labels {{ key: "{label}" value: {version} }}\n'
                          for label, version in labels.items())
    return ("model_config_list {\n  config {\n"
            f'    name: "{name}"\n    base_path: "{base_path}"\n'
            '    model_platform: "tensorflow"\n    model_version_policy { all {} }\n'
            f"{label_lines}  }}\n}}\n")


def write_config(base_dir, name=MODEL, labels=LABELS):
    """Write base_dir/models.config serving base_dir/`name` (see model_config); return its path."""
    path = os.path.join(base_dir, "models.config")
    with open(path, "w") as handle:
        handle.write(model_config(name, os.path.join(base_dir, name), labels))
    return path


def export_versions(base_dir, name=MODEL, versions=(1, 2), precision="float32"):
    """Export `name` (computing in `precision`) as version 1 and copy it to the other versions;
    return the zoo Encoder."""
    import zoo

    encoder = zoo.load(name, precision=precision)
    encoder.export(base_dir, versions[0])
    for version in versions[1:]:
        copy_version(os.path.join(base_dir, name), versions[0], version)
    return encoder


def test_images(count, seed=0):
    from zoo.data.merchant_marks import make_corpus

    images = make_corpus(max(1, count // 4 + 1), 4, seed=seed).images[:count]
    return np.asarray(images, np.float32).reshape(count, 64, 64, 1)


def markdown_table(header, rows):
    """Lines of a Markdown table with `header` and `rows` (sequences of formatted cells), as the
    benchmarks record them for MODELS.md."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=MODEL,
                        help="zoo model to export and serve (default %(default)s)")
    parser.add_argument("--kind", default="python", choices=["python", "tensorflow_model_server"])
    parser.add_argument("--batching", default=os.path.normpath(os.path.join(
                            os.path.dirname(__file__), "..", "serving", "batching.config")),
                        help="batching parameters file ('' for none)")
    return parser


def start(kind, batching, model=MODEL, keep_memory=True, precision="float32"):
    """Export `model` (versions 1 and 2, computing in `precision`) into a temp dir and start a
    server on it: (server, encoder, base_dir). keep_memory: as start_server's."""
    base_dir = tempfile.mkdtemp(prefix="serving-bench-")
    atexit.register(shutil.rmtree, base_dir, True)
    encoder = export_versions(base_dir, model, precision=precision)
    server = start_server(kind, write_config(base_dir, model), {model: [1, 2]},
                          batching_parameters_file=os.path.abspath(batching) if batching else None,
                          keep_memory=keep_memory)
    return server, encoder, base_dir



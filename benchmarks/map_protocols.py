"""Issue 14: how much the mAP protocol alone moves hashing numbers (the DeepBit / BinGAN tables).

    python -m benchmarks.map_protocols

DeepBit (CVPR 2016) reported its own codes as mAP over the top 1,000 results but took its
baselines (ITQ, LSH, ...) from a table of mAP over the whole ranked database; its author
confirmed the mismatch (github.com/kevinlin311tw/cvpr16-deepbit/issues/17) and BinGAN's table
reuses those baseline rows. BinGAN's released script (test_cifar.py) scores yet another cut, the
top 10,000. This command measures the same codes under the three protocols on Fashion-MNIST in
one run: `zoo evaluate hashing`'s queries and database (1,000 seeded queries against the other
69,000, stable ties), PCA-ITQ and LSH fitted on the database pixels and the shipped
bingan_fashion_* codes, at 16, 32 and 64 bits:

* mAP@1000: AP over the top 1,000, divided by the relevant items found there (the zoo's metric);
* mAP@10000: the same over the top 10,000 (the cut of BinGAN's script);
* mAP (whole database): AP over the full ranking, divided by all relevant items (about 6,900).
"""

import argparse
import json
import os
import time

import numpy as np

from zoo.apps.evaluation.hashing import (average_precision_stable, baseline_codes, hamming_matrix,
                                    split_queries)

PROTOCOLS = {"mAP@1000": 1000, "mAP@10000": 10000, "mAP (whole database)": None}


def protocol_maps(query_bits, query_labels, database_bits, database_labels):
    """{protocol: mAP} of Hamming ranking with stable ties, for each of PROTOCOLS."""
    distances = hamming_matrix(query_bits, database_bits)
    scores = {name: [] for name in PROTOCOLS}
    for row, label in zip(distances, query_labels):
        relevant = database_labels == label
        for name, top in PROTOCOLS.items():
            scores[name].append(average_precision_stable(row, relevant, top or len(row)))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--out", default=os.path.join("reports", "hashing",
                                                      "map_protocols.json"))
    parser.add_argument("--data-dir")
    parser.add_argument("--record", action="store_true",
                        help="record the table as a result (reports/results/; MODELS.md)")
    args = parser.parse_args(argv)

    import zoo
    from zoo.data.corpora import load_corpus
    from zoo.machine import machine_description
    from zoo.registry import get_corpus

    started = time.perf_counter()
    print(f"machine: {machine_description()}")
    data = load_corpus(get_corpus("fashion_mnist_all"), args.data_dir)
    queries, database = split_queries(len(data.images), 1000, seed=0)
    labels = data.labels
    rows = {}
    for bits in args.bits:
        codes = {f"{method} (pixels)": pair for method, pair in baseline_codes(
            data.images[database], data.images[queries], bits).items() if method != "PCAH"}
        name = f"bingan_fashion_{bits}"
        hashed = zoo.load(name).hash(data.images).bits
        codes[name] = (hashed[queries], hashed[database])
        for method, (query_bits, database_bits) in codes.items():
            rows[f"{method}, {bits} bits"] = protocol_maps(query_bits, labels[queries],
                                                           database_bits, labels[database])
            print(f"{method + f', {bits} bits':<34}" + "  ".join(
                f"{k} {v:.3f}" for k, v in rows[f"{method}, {bits} bits"].items()), flush=True)
    document = {"machine": machine_description(), "command": "python -m benchmarks.map_protocols",
                "protocol": "1000 seeded queries (seed 0) of fashion_mnist_all against the other "
                            "69000, Hamming ranking, stable ties", "rows": rows,
                "seconds": round(time.perf_counter() - started, 1)}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    temporary = args.out + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, args.out)
    print(f"wrote {args.out} ({document['seconds']:.0f} s)")
    if args.record:
        from zoo.apps.evaluation import results

        path = results.record("map_protocols", {**document, "corpus": "fashion_mnist_all",
                                                "command": document["command"] + " --record"})
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()

"""Archive index benchmarks: search speed and recall, and `zoo index build` throughput.

    python -m benchmarks.index_bench search [--count 1000000] [--k 10] [--threads 1]
    python -m benchmarks.index_bench build [--count 100000] [--model sketch_gan_merchant]

`search`: random 64-bit codes; queries/s of a numpy scan (zoo.hashing.hamming_distances, the
baseline), faiss's exact IndexBinaryFlat (raw, and through the index's tie-exact searcher) and
the approximate IndexBinaryHNSW at a few search breadths, with the approximate recall@k
measured against the exact result (tie-aware, see zoo.apps.index.search.recall_at_k).

`build`: writes `--count` PNG files (merchant marks of zoo.data.merchant_marks, 2,000 distinct
drawings repeated) into a temporary folder, measures the stages on a sample (decode +
preprocess in numpy, the same with the TensorFlow ops in a parallel tf.data map, encoding
alone, and the zoo's per-image `load_image_folder` + `encode` route as the baseline), then
times `Index.build` on the whole folder and prints images/s and the wall time.
"""

import argparse
import io
import os
import shutil
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo.apps.evaluation.speed import command_line, machine_and_load  # noqa: E402 (after the env)
from zoo.precision import CHOICES as PRECISION_CHOICES  # noqa: E402


def _rate(count, seconds):
    return count / seconds if seconds > 0 else float("inf")


class _Timer:
    """Wall and CPU seconds (all threads of this process) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


# ----------------------------------------------------------------------------- search


def bench_search(count, k, num_queries, threads, neighbours=32, ef_construction=64, seed=0):
    import faiss

    from zoo.apps.index.search import (ApproximateHamming, ExactHamming, numpy_hamming_search,
                                  recall_at_k)

    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(count, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(num_queries, 8), dtype=np.uint8)
    print(f"machine: {machine_and_load()}; faiss {faiss.__version__}, {threads} thread(s)")
    print(f"{count:,} random 64-bit codes, {num_queries} random queries, top-{k}")

    numpy_queries = queries[: max(1, num_queries // 10)]
    with _Timer() as timer:
        reference = numpy_hamming_search(codes, numpy_queries, k)
    rows = [("numpy scan (baseline)", timer, len(numpy_queries), None)]

    exact = ExactHamming(codes)
    with _Timer() as timer:
        exact.index.search(queries, k)
    rows.append(("faiss IndexBinaryFlat, raw batch", timer, num_queries, None))
    with _Timer() as timer:
        exact_distances, exact_ids = exact.search(queries, k)
    rows.append(("exact, tie-exact (index's searcher)", timer, num_queries, None))
    single = queries[: min(200, num_queries)]
    with _Timer() as timer:
        for query in single:
            exact.search(query[None], k)
    rows.append(("exact, one query per call", timer, len(single), None))
    same = np.array_equal(exact_ids[: len(numpy_queries)], reference[1])

    faiss.omp_set_num_threads(os.cpu_count() or 1)  # building the graph: every core
    with _Timer() as build:
        approximate = ApproximateHamming(codes, neighbours=neighbours,
                                         ef_construction=ef_construction)
    faiss.omp_set_num_threads(threads)
    for ef_search in (16, 64, 256):
        approximate.ef_search = ef_search
        with _Timer() as timer:
            distances, ids = approximate.search(queries, k)
        recall = recall_at_k(exact_distances, distances, ids, higher_is_better=False)
        rows.append((f"HNSW (M={neighbours}), efSearch {ef_search}", timer, num_queries,
                     recall))

    numpy_qps = _rate(rows[0][2], rows[0][1].wall)
    print(f"{'method':40s} {'queries/s':>10s} {'ms/query':>9s} {'CPU ms/query':>13s} "
          f"{'vs numpy':>9s}  recall@{k}")
    for name, timer, count, recall in rows:
        qps = _rate(count, timer.wall)
        recall_text = f"{recall:.3f}" if recall is not None else "exact"
        print(f"{name:40s} {qps:10.0f} {1000 / qps:9.3f} {1000 * timer.cpu / count:13.3f} "
              f"{qps / numpy_qps:8.1f}x  {recall_text}")
    print(f"exact ids identical to the numpy scan (ties by id) on {len(numpy_queries)} queries: "
          f"{same}")
    print(f"HNSW graph (M={neighbours}, efConstruction {ef_construction}) built in "
          f"{build.wall:.1f} s ({build.cpu:.1f} CPU s) with {os.cpu_count()} threads")
    print(f"machine after: {machine_and_load()}")
    return rows


# ----------------------------------------------------------------------------- build


def write_png_files(folder, count, seed=0):
    """`count` PNG files of merchant marks (2,000 distinct drawings, dark on light paper)."""
    from PIL import Image

    from zoo.data.merchant_marks import make_corpus

    corpus = make_corpus(num_identities=500, instances_per_identity=4, seed=seed)
    encoded = []
    for image in corpus.images:
        buffer = io.BytesIO()
        Image.fromarray((255 - image[..., 0] * 230).astype(np.uint8)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    paths = []
    for number in range(count):
        directory = os.path.join(folder, f"box_{number // 10000:03d}")
        if number % 10000 == 0:
            os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"scan_{number:07d}.png")
        with open(path, "wb") as handle:
            handle.write(encoded[number % len(encoded)])
        paths.append(path)
    return paths


def _stage_rates(paths, model, precision):
    """{stage: (images/s, CPU ms per image)} on `paths` (a sample)."""
    import tensorflow as tf

    import zoo
    from zoo.data.images import load_image_folder
    from zoo.data.preprocess_tf import decode_and_preprocess_tf
    from zoo.apps.index.preprocess import load_image_numpy

    encoder = zoo.load(model, precision=precision)
    rates = {}

    def record(stage, timer, count=len(paths)):
        rates[stage] = (_rate(count, timer.wall), 1000 * timer.cpu / count)

    with _Timer() as timer:
        images = np.stack([load_image_numpy(path, encoder.image_size)[0] for path in paths])
    record("decode + preprocess, numpy, 1 thread", timer)

    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: decode_and_preprocess_tf(tf.io.read_file(path), size=encoder.image_size),
        num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    for _ in dataset.take(1):
        pass
    with _Timer() as timer:
        for _ in dataset:
            pass
    record("decode + preprocess, TF ops, tf.data parallel map", timer)

    encoder.encode(images[:256])
    with _Timer() as timer:
        encoder.encode(images)
    record(f"encode only ({model}, {precision}, batch 256)", timer)

    with _Timer() as timer:
        sample = load_image_folder(os.path.commonpath(paths), size=encoder.image_size,
                                   progress=False)
        encoder.encode(sample.images)
    record("baseline: load_image_folder + encode", timer, len(sample))
    return rates


def bench_build(count, model, sample, chunk_size, workers, keep=None, precision="auto",
                record=None):
    """Time `zoo index build` of `count` files; `record`: the command line, to keep the result
    as the speed report index_build (reports/results/speed.json)."""
    from zoo.apps.index import Index
    from zoo.precision import resolve

    precision = resolve(precision)
    work = tempfile.mkdtemp(prefix="index-bench-")
    try:
        print(f"machine: {machine_and_load()}")
        start = time.perf_counter()
        paths = write_png_files(os.path.join(work, "archive"), count)
        print(f"wrote {count:,} PNG files in {time.perf_counter() - start:.1f} s")
        sample_paths = write_png_files(os.path.join(work, "sample"), min(sample, count))
        rates = _stage_rates(sample_paths, model, precision)
        print(f"stages on a sample of {len(sample_paths):,} files:")
        print(f"  {'stage':52s} {'images/s':>8s} {'CPU ms/image':>13s}")
        for stage, (rate, cpu_ms) in rates.items():
            print(f"  {stage:52s} {rate:8.0f} {cpu_ms:13.2f}")

        out = os.path.join(work, "archive.idx")
        with _Timer() as timer:
            index = Index.build(out, os.path.join(work, "archive"), models=(model,),
                                chunk_size=chunk_size, workers=workers, precision=precision)
        rate = _rate(len(index), timer.wall)
        baseline = rates["baseline: load_image_folder + encode"][0]
        cpu_ms = 1000 * timer.cpu / len(index)
        print(f"zoo index build: {len(index):,} of {len(paths):,} images with {model} in "
              f"{timer.wall:.1f} s in {precision} = {rate:.0f} images/s ({rate / baseline:.1f}x the "
              f"load_image_folder + encode baseline); aim: 100,000 in < 120 s (833 images/s)")
        print(f"  CPU: {timer.cpu:.1f} s in all threads = {cpu_ms:.2f} ms per image "
              f"(two otherwise idle cores: at best {2000 / cpu_ms:.0f} images/s)")
        print(f"machine after: {machine_and_load()}")
        if record:
            from zoo.apps.evaluation import speed

            result = {"model": model, "precision": precision, "count": len(index),
                      "seconds": timer.wall, "images_per_s": rate,
                      "cpu_ms_per_image": cpu_ms,
                      "stages": {stage: {"images_per_s": stage_rate, "cpu_ms_per_image": ms}
                                 for stage, (stage_rate, ms) in rates.items()}}
            print(f"recorded: {speed.record('index_build', result, record)}")
        if keep:
            shutil.move(out, keep)
            print(f"index kept at {keep}")
        return rate
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="exact vs approximate Hamming search vs numpy")
    search.add_argument("--count", type=int, default=1_000_000)
    search.add_argument("--k", type=int, default=10)
    search.add_argument("--queries", type=int, default=1000)
    search.add_argument("--threads", type=int, default=1,
                        help="faiss OpenMP threads while searching (default 1)")
    search.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node")
    search.add_argument("--ef-construction", type=int, default=64)
    build = commands.add_parser("build", help="images/s of `zoo index build`")
    build.add_argument("--count", type=int, default=100_000)
    build.add_argument("--model", default="sketch_gan_merchant")
    build.add_argument("--sample", type=int, default=2000, help="files for the stage rates")
    build.add_argument("--chunk-size", type=int, default=1024)
    build.add_argument("--workers", type=int, default=None, help="preparing threads")
    build.add_argument("--keep", help="move the built index here")
    build.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                       help="encoding precision, as `zoo index build --precision` (default auto)")
    build.add_argument("--record", action="store_true",
                       help="keep the result as the speed report index_build "
                            "(reports/results/speed.json)")
    args = parser.parse_args(argv)
    if args.command == "search":
        bench_search(args.count, args.k, args.queries, args.threads, args.hnsw_m,
                     args.ef_construction)
    else:
        command = command_line("benchmarks.index_bench", argv)
        bench_build(args.count, args.model, args.sample, args.chunk_size, args.workers,
                    args.keep, args.precision, record=command if args.record else None)


if __name__ == "__main__":
    main()

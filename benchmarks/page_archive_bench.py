"""Search a whole archive of page photographs: the region index against the exhaustive search.

    python -m benchmarks.page_archive_bench --pages 1000 10000 --simulate 100000

The archive is `zoo.data.page_archive` (written to --data once and reused): 1000 x 800 page
photographs with procedural merchant marks in several hands, Omniglot handwriting, scribbled
text, paper texture, blur, rotation and uneven light; 50 query marks, each hidden on 3 of the
first `--hide-among` pages as another hand's drawing. A hit is (the right page among the top
10 pages, its best box IoU > 0.5 with the hidden mark's ink box); recall@10 counts hits over
the hidden marks.

1. Region index (`Index.build(..., regions=True)`) over the first N pages, for each N in
   --pages: build rate (pages/s), regions a page, bytes a region on disk, the memory search
   keeps (codes and region table) and the process's resident memory; query time (median, p90,
   the query's encoding included) and recall@10, two-stage (64-bit codes, then the best
   `--candidates` re-ranked by float embeddings from disk) and exact (every embedding).
   Indexes are kept in --data, one a model, and reused (delete them to time the build again).
2. Exhaustive baseline, on a subset of `--baseline-pages` pages (every page hiding a query plus
   distractor pages) that is affordable: the sliding grid of `zoo.locate(proposals="grid")`
   (default sides, stride 0.25) encoded once a page and scored for every query; against it,
   in the same run and on the same pages, the ink regions with the model and with raw pixels
   (cosine of the prepared crops), with seconds a page for each.
3. `--simulate N`: the search part at N pages from synthetic codes and embeddings (the real
   index's regions a page; random values), written as a region index on disk and searched
   with the real queries: query time and memory.

Everything is printed with the machine, and written as JSON to --report.
"""

import argparse
import json
import os
import resource
import time

import numpy as np

from zoo.registry import RECOMMENDED


def rss_mb():
    """The process's anonymous resident memory now, MB (Linux /proc; 0 elsewhere): what it
    holds itself. Pages of the memory-mapped index files it reads are the kernel's page cache,
    shared and reclaimable, and counted in RssFile instead."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def instances(truth, pages):
    """{query: [(page, box)]} of the hidden marks on pages [0, pages)."""
    return {number: [(entry["page"], tuple(entry["box"])) for entry in query["hidden"]
                     if entry["page"] < pages]
            for number, query in enumerate(truth["queries"])}


def recall(ranked, hidden, k=10):
    """ranked: {query: [(page, box), ...] best first}; -> hits / hidden marks."""
    from zoo.apps.proposals import box_iou

    found = total = 0
    for query, marks in hidden.items():
        top = {page: box for page, box in ranked[query][:k]}
        for page, box in marks:
            total += 1
            found += page in top and box_iou(top[page], box) > 0.5
    return found / max(total, 1)


def build_index(paths, out, model):
    from zoo.apps.index import Index

    record = f"{out}.timing.json"
    if os.path.exists(os.path.join(out, "manifest.json")) and os.path.exists(record):
        with open(record) as handle:
            timing = json.load(handle)
        return Index.open(out, verify=False), timing["seconds"], True
    started = time.perf_counter()
    index = Index.build(out, paths, models=(model,), regions=True, progress=True)
    seconds = time.perf_counter() - started
    with open(record, "w") as handle:
        json.dump({"seconds": seconds, "pages": len(index), "resumed": index.report.resumed},
                  handle)
    return index, seconds, False


def measure_index(index, queries, hidden, candidates, before):
    """Query times and recall of the two-stage and the exact search; the anonymous memory
    added since `before` (MB) once the two-stage searches ran (the exact scan then copies every
    embedding into memory)."""
    results = {}
    for name, setting in (("two-stage", candidates), ("exact", None)):
        ranked, seconds = {}, []
        for number, query in enumerate(queries):
            started = time.perf_counter()
            hits = index.search(query, k=10, candidates=setting)
            seconds.append(time.perf_counter() - started)
            ranked[number] = [(hit.id, hit.box) for hit in hits]
        results[name] = {"recall@10": recall(ranked, hidden),
                         "median_ms": 1000 * float(np.median(seconds)),
                         "p90_ms": 1000 * float(np.percentile(seconds, 90))}
        if name == "two-stage":
            results["resident_mb_two_stage"] = rss_mb() - before
    encode = []
    for query in queries:
        started = time.perf_counter()
        index.encode_query(query)
        encode.append(time.perf_counter() - started)
    results["query_encoding_median_ms"] = 1000 * float(np.median(encode))
    return results


def index_sizes(index):
    files = [os.path.join(index.path, name) for name in os.listdir(index.path)
             if name.endswith((".npy", ".json"))]
    disk = sum(os.path.getsize(path) for path in files)
    regions = index.region_count
    code_bytes = -(-index.model_info()["num_bits"] // 8)
    return {"pages": len(index), "regions": regions, "regions_per_page": regions / len(index),
            "disk_bytes_per_region": disk / regions,
            "search_memory_mb": regions * (code_bytes + 4) / 2**20}  # codes, page ids


def baseline(encoder, paths, queries, hidden, subset):
    """recall@10 and seconds a page on `subset` pages: exhaustive grid vs ink regions (model)
    vs ink regions (raw pixels)."""
    from zoo.data.images import decode_image
    from zoo.apps.evaluation.retrieval import raw_pixel_embeddings
    from zoo.apps.index.encoding import prepare_query
    from zoo.apps.index.regions import region_images
    from zoo.apps.locating import _box_sides, encode_grid

    size = encoder.image_size
    query_images = np.stack([prepare_query(query, size) for query in queries])
    query_model = encoder.encode(query_images)
    query_raw = raw_pixel_embeddings(query_images)
    methods = {"exhaustive grid, model": [], "ink regions, model": [],
               "ink regions, raw pixels": []}
    seconds = {name: 0.0 for name in methods}
    for number, page_id in enumerate(subset):
        gray = decode_image(paths[page_id])
        started = time.perf_counter()
        grid = encode_grid(gray, encoder, _box_sides(None, *gray.shape))
        seconds["exhaustive grid, model"] += time.perf_counter() - started
        scores = np.where(grid.has_ink[:, None], grid.embeddings @ query_model.T, -1.0)
        best = scores.argmax(axis=0)
        methods["exhaustive grid, model"].append(
            (page_id, scores.max(axis=0), grid.ink_boxes[best]))

        started = time.perf_counter()
        boxes, images = region_images(gray, size)
        proposed = time.perf_counter()
        embeddings = encoder.encode(images[..., None])
        encoded = time.perf_counter()
        raw = raw_pixel_embeddings(images[..., None])
        seconds["ink regions, model"] += encoded - started
        seconds["ink regions, raw pixels"] += proposed - started + time.perf_counter() - encoded
        for name, page_vectors, query_vectors in (
                ("ink regions, model", embeddings, query_model),
                ("ink regions, raw pixels", raw, query_raw)):
            scores = page_vectors @ query_vectors.T
            best = scores.argmax(axis=0)
            methods[name].append((page_id, scores.max(axis=0), boxes[best]))
        if (number + 1) % 25 == 0:
            print(f"  baseline: {number + 1}/{len(subset)} pages", flush=True)
    results = {}
    for name, rows in methods.items():
        ranked = {}
        for query in range(len(queries)):
            order = sorted(rows, key=lambda row: (-row[1][query], row[0]))
            ranked[query] = [(row[0], tuple(int(v) for v in row[2][query])) for row in order]
        subset_hidden = {query: [mark for mark in marks if mark[0] in set(subset)]
                         for query, marks in hidden.items()}
        results[name] = {"recall@10": recall(ranked, subset_hidden),
                         "seconds_per_page": seconds[name] / len(subset)}
    return results


def simulate(out, pages, regions_per_page, model_info, queries, index_like, seed=0):
    """Write a region index of synthetic codes and embeddings at `pages` pages, then time
    searches of the real queries (encoded with the real model) against it."""
    from zoo.apps.index import Index, store

    rng = np.random.default_rng(seed)
    if not os.path.exists(os.path.join(out, "manifest.json")):
        os.makedirs(out, exist_ok=True)
        store.clear_pending(out)
        store.start_pending(out, {"kind": "build", "token": "simulated", "models": [
            model_info["name"]], "records": [model_info], "regions": index_like})
        dim, code_bytes = model_info["embedding_dim"], -(-model_info["num_bits"] // 8)
        per_chunk = 2000
        for number, first in enumerate(range(0, pages, per_chunk)):
            count = min(per_chunk, pages - first)
            per_page = rng.poisson(regions_per_page, count).clip(1)
            page_of = np.repeat(np.arange(count), per_page)
            boxes = rng.integers(0, 700, (len(page_of), 4))
            embeddings = rng.standard_normal((len(page_of), dim)).astype(np.float32)
            embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
            codes = rng.integers(0, 256, (len(page_of), code_bytes), dtype=np.uint8)
            items = [{"path": f"/simulated/page-{first + i:07d}.jpg", "metadata": {}}
                     for i in range(count)]
            store.write_chunk(out, number, items, [], [], {model_info["name"]: (embeddings,
                                                                                 codes)},
                              regions=np.concatenate([page_of[:, None], boxes], axis=1))
        store.commit_segment(out, None, [model_info], store.pending_chunk_files(out),
                             regions=index_like)
        store.clear_pending(out)
    before = rss_mb()
    index = Index.open(out, verify=False)
    index.search(queries[0], k=10)  # loads the codes, warms the query encoder
    seconds = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, k=10)
        seconds.append(time.perf_counter() - started)
    return {"pages": len(index), "regions": index.region_count,
            "median_ms": 1000 * float(np.median(seconds)),
            "p90_ms": 1000 * float(np.percentile(seconds, 90)),
            "resident_mb_added": rss_mb() - before}


def run_baseline(args, truth, paths, queries, pages):
    """The exhaustive baseline and the ink regions on a subset of the first `pages` pages."""
    import zoo

    hidden = instances(truth, pages)
    hiding = sorted({page for marks in hidden.values() for page, _ in marks})
    others = [page for page in range(pages) if page not in set(hiding)]
    subset = sorted(hiding + others[: max(0, args.baseline_pages - len(hiding))])
    encoder = zoo.load(args.model, with_hash_head=False)
    print(f"\nbaseline on {len(subset)} pages ({len(hiding)} hide a query):", flush=True)
    results = baseline(encoder, paths, queries, hidden, subset)
    reference = results["exhaustive grid, model"]
    for name, result in results.items():
        print(f"  {name:26s} recall@10 {result['recall@10']:.3f} "
              f"({result['recall@10'] / max(reference['recall@10'], 1e-9):.2f} of "
              f"exhaustive)  {result['seconds_per_page']:.3f} s a page "
              f"({reference['seconds_per_page'] / result['seconds_per_page']:.1f}x fewer "
              f"seconds than exhaustive)", flush=True)
    return {"pages": len(subset), **results}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/page_archive",
                        help="where the archive and the indexes are written and reused")
    parser.add_argument("--pages", type=int, nargs="+", default=[1000])
    parser.add_argument("--hide-among", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--model", default=RECOMMENDED)
    parser.add_argument("--candidates", type=int, default=4096)
    parser.add_argument("--baseline-pages", type=int, default=300,
                        help="pages searched exhaustively (0: skip the baseline)")
    parser.add_argument("--simulate", type=int, default=0, metavar="PAGES")
    parser.add_argument("--report", default="reports/page_archive.json")
    args = parser.parse_args(argv)

    from zoo.data.page_archive import PageArchiveSpec, write_page_archive
    from zoo.machine import machine_description

    machine = machine_description()
    print(f"machine: {machine}", flush=True)
    spec = PageArchiveSpec(num_pages=max(args.pages), hide_among=min(args.hide_among,
                                                                       max(args.pages)),
                           num_queries=args.queries, seed=0)
    truth = write_page_archive(spec, os.path.join(args.data, f"archive-{spec.num_pages}"),
                               progress=True)
    root = os.path.join(args.data, f"archive-{spec.num_pages}")
    paths = [os.path.join(root, path) for path in truth["pages"]]
    queries = [os.path.join(root, query["path"]) for query in truth["queries"]]
    report = {"machine": machine, "spec": spec.identity(), "model": args.model,
              "candidates": args.candidates, "indexes": {}}

    for pages in sorted(args.pages):
        hidden = instances(truth, pages)
        before = rss_mb()
        index, seconds, reused = build_index(paths[:pages], os.path.join(
            args.data, f"index-{args.model}-{pages}.idx"), args.model)
        sizes = index_sizes(index)
        measured = measure_index(index, queries, hidden, args.candidates, before)
        row = {**sizes, "build_seconds": seconds, "build_pages_per_second": pages / seconds,
               "build_reused": reused, "resident_mb_with_exact": rss_mb() - before, **measured}
        report["indexes"][pages] = row
        print(f"\n{pages} pages: {sizes['regions']} regions ({sizes['regions_per_page']:.1f} a "
              f"page), built at {row['build_pages_per_second']:.2f} pages/s"
              f"{' (earlier run)' if reused else ''}; {sizes['disk_bytes_per_region']:.0f} "
              f"bytes a region on disk, {sizes['search_memory_mb']:.1f} MB of codes and page ids "
              f"held for search; resident +{row['resident_mb_two_stage']:.0f} MB after the "
              f"two-stage searches (the model included on the first), "
              f"+{row['resident_mb_with_exact']:.0f} MB with the exact scans", flush=True)
        for name in ("two-stage", "exact"):
            result = measured[name]
            print(f"  {name:10s} recall@10 {result['recall@10']:.3f}  query "
                  f"{result['median_ms']:.1f} ms median, {result['p90_ms']:.1f} ms p90",
                  flush=True)
        print(f"  (query encoding alone {measured['query_encoding_median_ms']:.1f} ms)")
        last_index = index
        if args.baseline_pages and pages == min(args.pages):  # before the long builds
            report["baseline"] = run_baseline(args, truth, paths, queries, pages)

    if args.simulate:
        stats = report["indexes"][max(args.pages)]
        out = os.path.join(args.data, f"simulated-{args.simulate}.idx")
        print(f"\nsimulated {args.simulate} pages ({stats['regions_per_page']:.0f} regions a "
              f"page, random codes) in {out}:", flush=True)
        result = simulate(out, args.simulate, stats["regions_per_page"],
                          last_index.model_info(), queries, last_index.manifest["regions"])
        print(f"  {result['regions']} regions; query {result['median_ms']:.1f} ms median, "
              f"{result['p90_ms']:.1f} ms p90; resident +{result['resident_mb_added']:.0f} MB")
        report["simulated"] = result

    report["max_resident_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    from zoo.apps.index.store import write_json
    write_json(args.report, report)
    print(f"\nreport: {args.report}")


if __name__ == "__main__":
    main()

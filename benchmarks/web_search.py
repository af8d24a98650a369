"""The search page's round trip over HTTP: upload a query image, get the results grid.

    nice -n 10 python -m benchmarks.web_search --items 10000 --queries 40 --browser

Builds (once, then reused) an index of a generated merchant-mark archive of `--items` PNG files
with sketch_gan_merchant, starts `zoo web` on it in a separate process, and times, for
`--queries` archive items used as the query image:

- baseline: the same search as a library call in this process (decode the upload, then
  `Index.search`), what the HTTP app wraps;
- `POST /api/search` (upload -> JSON results) through HTTP;
- the same as the page asks it: small thumbnails inline in the answer (`thumbnails=inline`),
  the others fetched over six connections, as a browser opens, until the grid is whole;
- with --browser: in headless Chromium, from choosing the file on the page to the grid drawn
  with every thumbnail loaded (Playwright driving the Debian `chromium`).

Prints median and p90 milliseconds and each as a ratio to the baseline.
"""

import argparse
import concurrent.futures
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

MODEL = "sketch_gan_merchant"
PLACES = ("Lübeck", "Bergen", "Danzig", "Riga", "Reval", "Stralsund", "Visby", "Novgorod")


def write_archive(folder, num_identities, instances_per_identity, seed=0):
    """Write a generated merchant-mark archive as PNG files (dark ink on light paper, as a
    scan) with a metadata.csv (identity, place, year per file). Returns the file paths, in
    corpus order; files already there are kept."""
    from PIL import Image

    from zoo.data.merchant_marks import make_corpus

    corpus = make_corpus(num_identities=num_identities,
                         instances_per_identity=instances_per_identity, seed=seed)
    os.makedirs(folder, exist_ok=True)
    paths, rows = [], []
    for number, (image, identity) in enumerate(zip(corpus.images, corpus.identities)):
        name = f"mark-{number // instances_per_identity:05d}-{number % instances_per_identity}.png"
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            pixels = (255 * (1.0 - image[..., 0])).round().astype(np.uint8)
            temporary = path + ".tmp"
            Image.fromarray(pixels).save(temporary, format="PNG")
            os.replace(temporary, path)
        paths.append(path)
        rows.append({"path": name, "identity": int(identity),
                     "place": PLACES[number // instances_per_identity % len(PLACES)],
                     "year": 1400 + (number * 7) % 200})
    with open(os.path.join(folder, "metadata.csv.tmp"), "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["path", "identity", "place", "year"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(os.path.join(folder, "metadata.csv.tmp"), os.path.join(folder, "metadata.csv"))
    return paths


def build_archive_index(workdir, items, models=(MODEL,), seed=0):
    """(index path, image paths) of a generated archive of `items` files under `workdir`,
    built once and reused."""
    from zoo.apps.index import Index

    instances = 5
    identities = -(-items // instances)
    folder = os.path.join(workdir, f"archive-{items}")
    paths = write_archive(folder, identities, instances, seed=seed)[:items]
    index_path = os.path.join(workdir, f"archive-{items}.idx")
    try:
        index = Index.open(index_path)
        if len(index) == len(paths) and set(models) <= set(index.models):
            return index_path, paths
    except ValueError:
        pass
    Index.build(index_path, paths, models=models, progress=True)
    return index_path, paths


def _percentiles(samples):
    values = sorted(samples)
    return statistics.median(values), values[min(len(values) - 1, int(0.9 * len(values)))]


def _post(url, data):
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _get(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def start_web_server(index_path, port, log_path):
    """`python -m zoo web` in a separate process, its output in `log_path`; returns
    (process, base URL) once it answers."""
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "zoo", "web", index_path, "--port",
                                    str(port)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path) as log:
                raise RuntimeError(f"zoo web exited: {log.read()[-2000:]}")
        try:
            _get(base + "/api/info")
            return process, base
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.25)
    process.kill()
    raise RuntimeError("zoo web did not answer within 300 s")


def measure_http(base, queries, k, as_the_page=False):
    """Time POST /api/search per query; `as_the_page`: ask for inline thumbnails and fetch
    the ones not inlined over six connections, as the page does before the grid is whole."""
    pool = concurrent.futures.ThreadPoolExecutor(6)
    timings, first_hits = [], []
    inline = "&thumbnails=inline" if as_the_page else ""
    for data in queries:
        started = time.perf_counter()
        answer = _post(f"{base}/api/search?model={MODEL}&k={k}{inline}", data)
        if as_the_page:
            missing = [hit for hit in answer["hits"] if "thumbnail_data" not in hit]
            list(pool.map(lambda hit: _get(base + hit["thumbnail"]), missing))
        timings.append(1000 * (time.perf_counter() - started))
        first_hits.append(answer["hits"][0]["id"])
    pool.shutdown()
    return timings, first_hits


def measure_browser(base, query_paths, k):
    from zoo.apps.web.browser import launch_chromium

    timings, first_hits = [], []
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('model-select').options.length > 0")
        page.select_option("#page-size", str(k))
        for number, path in enumerate(query_paths, start=1):
            started = time.perf_counter()
            page.set_input_files("#file-input", path)
            page.wait_for_function(
                """(n) => document.body.dataset.searchDone == n &&
                   [...document.querySelectorAll('#results img')].every(
                       (img) => img.complete && img.naturalWidth > 0)""",
                arg=str(number), polling="raf")
            timings.append(1000 * (time.perf_counter() - started))
            first_hits.append(int(page.get_attribute("#results li:first-child", "data-item-id")))
    return timings, first_hits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--k", type=int, default=24, help="results per page (default 24)")
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "zoo-web-bench"),
                        help="where the generated archive and its index are kept")
    parser.add_argument("--browser", action="store_true",
                        help="also time upload -> grid drawn in headless Chromium")
    args = parser.parse_args(argv)

    from zoo.apps.index import Index
    from zoo.machine import machine_description
    from zoo.apps.web.app import one_thread_per_query
    from zoo.apps.web.uploads import decode_upload

    index_path, paths = build_archive_index(args.workdir, args.items)
    rng = np.random.default_rng(0)
    chosen = [int(i) for i in rng.choice(len(paths), size=2 * args.queries, replace=False)]
    picks, browser_picks = chosen[: args.queries], chosen[args.queries :]  # thumbnails cold
    queries = [open(paths[i], "rb").read() for i in picks]

    one_thread_per_query()  # as `zoo web` does
    index = Index.open(index_path)
    index.search(decode_upload(queries[0]), k=args.k, model=MODEL)  # load the encoder
    baseline = []
    for data in queries:  # what the app calls for an upload: check and decode, then search
        started = time.perf_counter()
        index.search(decode_upload(data), k=args.k + 1, model=MODEL)
        baseline.append(1000 * (time.perf_counter() - started))

    process, base = start_web_server(index_path, args.port,
                                     os.path.join(args.workdir, "zoo-web.log"))
    try:
        measure_http(base, queries[:3], args.k)  # warm the server's connections and encoder
        rows = [("library call (baseline)", baseline, picks, None)]
        timings, hits = measure_http(base, queries, args.k)
        rows.append(("HTTP upload -> results JSON", timings, picks, hits))
        timings, hits = measure_http(base, queries, args.k, as_the_page=True)
        rows.append((f"HTTP upload -> JSON + {args.k} thumbnails", timings, picks, hits))
        if args.browser:
            timings, hits = measure_browser(base, [paths[i] for i in browser_picks], args.k)
            rows.append(("browser: file chosen -> grid drawn", timings, browser_picks, hits))
    finally:
        process.terminate()
        process.wait(30)

    print(f"machine: {machine_description()}; load average (1 min) at the end: "
          f"{os.getloadavg()[0]:.1f}")
    print(f"index: {len(index)} items, model {MODEL}; {args.queries} queries (archive items), "
          f"{args.k} results a page")
    base_median = _percentiles(baseline)[0]
    for name, timings, expected, hits in rows:
        median, p90 = _percentiles(timings)
        found = "" if hits is None else \
            f"  query item first: {sum(h == p for h, p in zip(hits, expected))}/{len(expected)}"
        print(f"  {name:40s} median {median:7.1f} ms  p90 {p90:7.1f} ms  "
              f"{median / base_median:5.2f}x baseline{found}")


if __name__ == "__main__":
    main()

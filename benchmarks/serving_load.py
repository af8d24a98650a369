"""Load test: concurrent clients, with a new version published in the middle of the run.

    python -m benchmarks.serving_load --clients 16 --requests 500

Every request must succeed, be answered by a complete version, and return the embedding the
in-process encoder computes, and the version published mid-run must answer part of the requests
(the clients keep going after their quota until it has, up to --wait-seconds): the run fails
otherwise. p50 / p99 latency and throughput are printed.
"""

import os
import threading
import time

import numpy as np

from serving.client import EncoderClient
from serving.launch import copy_version


def run_load(target, model, images, reference, clients=8, requests=60, swap=None,
             swap_after=0.4, images_per_request=1, wait_seconds=120.0):
    """`clients` threads x at least `requests` encode calls; `swap()` runs once `swap_after` of
    them are done and returns the version it published. After their quota the clients go on
    until the published version has answered `clients` requests, or `wait_seconds` after the
    swap. Returns latencies, failures, the versions that answered (one per request), the
    published version and how many requests it answered."""
    total = clients * requests
    lock = threading.Lock()
    done = [0]
    swapped = threading.Event()
    published = {}
    latencies, failures, answered = [], [], []

    def publish():
        published["deadline"] = time.monotonic() + wait_seconds
        published["version"] = swap()

    def waiting_for_the_new_version():
        if swap is None:
            return False
        if "deadline" not in published:  # the swap is still to come
            return True
        if time.monotonic() >= published["deadline"]:
            return False
        if "version" not in published:  # still publishing
            return True
        with lock:
            return answered.count(published["version"]) < clients

    def worker(seed):
        rng = np.random.default_rng(seed)
        with EncoderClient(target, model, timeout=60, retries=3) as client:
            count = 0
            while count < requests or waiting_for_the_new_version():
                count += 1
                picks = rng.integers(0, len(images), images_per_request)
                started = time.perf_counter()
                try:
                    embeddings = client.encode(images[picks])
                    elapsed = time.perf_counter() - started
                    if not np.allclose(embeddings, reference[picks], atol=1e-5):
                        failures.append("embedding differs from the in-process encoder")
                    with lock:
                        latencies.append(elapsed)
                        answered.append(client.last_versions[0])
                except Exception as error:  # noqa: BLE001 - counted as a failure
                    with lock:
                        failures.append(repr(error)[:300])
                with lock:
                    done[0] += 1
                    due = swap is not None and not swapped.is_set() and done[0] >= swap_after * total
                    if due:
                        swapped.set()
                if due:
                    threading.Thread(target=publish, daemon=True).start()

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies = np.asarray(latencies)
    version = published.get("version")
    return {"seconds": seconds, "requests": len(answered) + len(failures), "failures": failures,
            "versions": answered, "published": version,
            "answered_by_published": answered.count(version) if version is not None else 0,
            "p50_ms": float(np.percentile(latencies, 50) * 1e3) if len(latencies) else None,
            "p99_ms": float(np.percentile(latencies, 99) * 1e3) if len(latencies) else None,
            "throughput": len(latencies) / seconds}


def main(argv=None):
    from benchmarks.common import parser, start, test_images

    arguments = parser(__doc__)
    arguments.add_argument("--clients", type=int, default=16)
    arguments.add_argument("--requests", type=int, default=500)
    arguments.add_argument("--wait-seconds", type=float, default=120.0,
                           help="how long the clients go on after the swap for the new version "
                                "to answer (default 120)")
    args = arguments.parse_args(argv)
    server, encoder, base_dir = start(args.kind, args.batching, args.model)
    model_dir = os.path.join(base_dir, args.model)
    published = {}

    def swap():
        published["at"] = time.monotonic()
        copy_version(model_dir, 2, 3)
        return 3

    try:
        images = test_images(64)
        reference = encoder.encode(images)
        result = run_load(server.target, args.model, images, reference, clients=args.clients,
                          requests=args.requests, swap=swap, wait_seconds=args.wait_seconds)
    finally:
        code = server.stop()
    versions = np.bincount(result["versions"]) if result["versions"] else []
    print(f"{args.model}: {args.clients} clients x {args.requests} requests (1 image each; "
          f"{result['requests']} sent) against the {args.kind} server, version 3 published "
          f"after 40% of them")
    print(f"  failures: {len(result['failures'])}  {result['failures'][:3]}")
    print("  answered by version: " + ", ".join(f"{v}: {n}" for v, n in enumerate(versions) if n))
    print(f"  latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
          f"throughput {result['throughput']:.0f} requests/s over {result['seconds']:.1f} s")
    print(f"  server exit code after SIGTERM: {code}")
    if not result["answered_by_published"]:
        print(f"  FAILED: version 3 answered none of the requests within {args.wait_seconds:g} s "
              f"of being published")
    return 1 if (result["failures"] or not set(result["versions"]) <= {1, 2, 3}
                 or not result["answered_by_published"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())

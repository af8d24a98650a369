"""Served throughput vs in-process encoding, at batch 1 and 64, and p99 for one image.

    python -m benchmarks.serving_throughput

In-process: `zoo.load(name).encode(batch)` in this process. Served: EncoderClient.encode over
gRPC on loopback (one client, sequential calls), against the server started here.
"""

import time

import numpy as np

from serving.client import EncoderClient


def _rate(function, batch, seconds):
    function(batch)  # warm
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - started)


def main(argv=None):
    from benchmarks.common import MODEL, parser, start, test_images

    arguments = parser(__doc__)
    arguments.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    arguments.add_argument("--latency-requests", type=int, default=300)
    args = arguments.parse_args(argv)
    server, encoder, _ = start(args.kind, args.batching)
    try:
        images = test_images(64)
        with EncoderClient(server.target, MODEL, timeout=60) as client:
            rows = []
            for batch_size in (1, 64):
                batch = images[:batch_size]
                local = _rate(encoder.encode, batch, args.seconds)
                served = _rate(client.encode, batch, args.seconds)
                rows.append((batch_size, local, served))
            latencies = []
            for index in range(args.latency_requests):
                started = time.perf_counter()
                client.encode(images[index % 64:index % 64 + 1])
                latencies.append(time.perf_counter() - started)
    finally:
        server.stop()
    print(f"{MODEL}, {args.kind} server, one sequential gRPC client on loopback")
    print(f"{'batch':>5s} {'in-process img/s':>17s} {'served img/s':>13s} {'served / in-process':>20s}")
    for batch_size, local, served in rows:
        print(f"{batch_size:5d} {local:17.1f} {served:13.1f} {served / local:20.2f}")
    latencies = np.asarray(latencies) * 1e3
    print(f"single 64x64 image: p50 {np.percentile(latencies, 50):.1f} ms, "
          f"p99 {np.percentile(latencies, 99):.1f} ms over {len(latencies)} requests")


if __name__ == "__main__":
    main()

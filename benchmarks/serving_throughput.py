"""Served throughput vs in-process encoding, at batch 1 and 64, and p99 for one image.

    python -m benchmarks.serving_throughput [--model NAME] [--batching FILE | --batching '']

In-process: `zoo.load(name).encode(batch)` in this process. Served: EncoderClient.encode over
gRPC on loopback (one client, sequential calls), against the server started here (by default
this package's server with serving/batching.config). The two are timed in alternating slices
(--rounds of each), so that a change in the machine's load weighs on both alike.
"""

import os
import time

import numpy as np

from serving.client import EncoderClient

BATCH_SIZES = (1, 64)


def _calls(function, batch, seconds):
    """(calls, seconds) of `function(batch)` called back to back for about `seconds`."""
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function(batch)
        calls += 1
    return calls, time.perf_counter() - started


def _rates(functions, batch, seconds, rounds):
    """Images a second of each of `functions` on `batch`: each runs `rounds` slices of
    seconds / rounds, taking turns, after one warm-up call."""
    totals = [[0, 0.0] for _ in functions]
    for function in functions:
        function(batch)
    for _ in range(rounds):
        for total, function in zip(totals, functions):
            calls, elapsed = _calls(function, batch, seconds / rounds)
            total[0] += calls
            total[1] += elapsed
    return [calls * len(batch) / elapsed for calls, elapsed in totals]


def _latencies_ms(function, images, requests):
    """Milliseconds of `requests` sequential one-image calls of `function`."""
    latencies = []
    for index in range(requests):
        image = images[index % len(images):index % len(images) + 1]
        started = time.perf_counter()
        function(image)
        latencies.append(time.perf_counter() - started)
    return np.asarray(latencies) * 1e3


def main(argv=None):
    from benchmarks.common import parser, start, test_images
    from zoo.apps.evaluation.speed import command_line, machine_and_load, record

    arguments = parser(__doc__)
    arguments.add_argument("--seconds", type=float, default=5.0,
                           help="per measurement (in-process, served), all rounds together")
    arguments.add_argument("--rounds", type=int, default=5, help="alternating slices")
    arguments.add_argument("--latency-requests", type=int, default=300)
    arguments.add_argument("--record", action="store_true",
                           help="keep the table as the speed report serving_MODEL "
                                "(reports/results/speed.json; MODELS.md)")
    args = arguments.parse_args(argv)
    server, encoder, _ = start(args.kind, args.batching, args.model)
    try:
        images = test_images(max(BATCH_SIZES))
        with EncoderClient(server.target, args.model, timeout=60) as client:
            rows = [(batch_size, *_rates([encoder.encode, client.encode], images[:batch_size],
                                         args.seconds, args.rounds))
                    for batch_size in BATCH_SIZES]
            local = _latencies_ms(encoder.encode, images, args.latency_requests)
            served = _latencies_ms(client.encode, images, args.latency_requests)
    finally:
        server.stop()
    command = command_line("benchmarks.serving_throughput", argv)
    print(command)
    print(f"machine: {machine_and_load()}")
    print(f"{args.model}, {args.kind} server, batching {args.batching or 'off'}, one sequential "
          f"gRPC client on loopback")
    print(f"{'batch':>5s} {'in-process img/s':>17s} {'served img/s':>13s} {'served / in-process':>20s}")
    for batch_size, local_rate, served_rate in rows:
        print(f"{batch_size:5d} {local_rate:17.1f} {served_rate:13.1f} "
              f"{served_rate / local_rate:20.2f}")
    latency = (f"single 64x64 image: p50 {np.percentile(served, 50):.1f} ms, "
               f"p99 {np.percentile(served, 99):.1f} ms over {len(served)} requests (in-process "
               f"p50 {np.percentile(local, 50):.1f} ms, p99 {np.percentile(local, 99):.1f} ms)")
    print(latency)
    if args.record:
        table = ["| batch | in-process img/s | served img/s | served / in-process |",
                 "|---|---|---|---|"] + [
            f"| {batch_size} | {local_rate:,.0f} | {served_rate:,.0f} | "
            f"{served_rate / local_rate:.2f} |" for batch_size, local_rate, served_rate in rows]
        result = {"model": args.model, "server": args.kind,
                  "batching": os.path.basename(args.batching) if args.batching else "off",
                  "table": table, "latency": latency}
        print(f"recorded: {record('serving_' + args.model, result, command)}")

if __name__ == "__main__":
    main()

"""Served throughput vs in-process encoding, at batch 1 and 64, and p99 for one image.

    python -m benchmarks.serving_throughput [--model NAME] [--uint8] [--precision P]
                                            [--clients N] [--idle-ms MS]
                                            [--batching FILE | --batching '']

In-process: `zoo.load(name).encode(batch)` in this process. Served: EncoderClient.encode over
gRPC on loopback (one client, sequential calls), against the server started here (by default
this package's server with serving/batching.config). The two are timed in alternating slices
(--rounds of each), the one-image latencies too, so that a change in the machine's load weighs
on both alike. With --clients N, N clients (each its own channel) call the server at once, each
sequentially, and the in-process baseline is N threads calling `encode` at once: the throughput
of a server under load, where the server's batching can merge concurrent requests and one
call's transport can overlap another's model; the one-image latencies stay one sequential
client's. With --idle-ms MS each one-image call comes MS after the last, as a search page's
queries do, instead of back to back: each call then runs cold (its code, data and weights out
of the caches, its threads asleep).

The images are float32 in [0, 1]; with --uint8 both paths get the same images as uint8, as from
8-bit scans, which the client sends to the `encode_pixels` signature (a quarter of the bytes).
With --precision bfloat16 or int8 the served model is exported in that precision and the
in-process baseline computes in it too (zoo.precision).
"""

import contextlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serving.client import EncoderClient
from serving.memory import keep_freed_memory

BATCH_SIZES = (1, 64)


def _calls(callers, batch, seconds):
    """(calls, seconds) of `caller(batch)` called back to back for about `seconds` by each of
    `callers` at once (one thread each; the only one in this thread)."""
    started = time.perf_counter()
    counts = [0] * len(callers)

    def call_back_to_back(index):
        while time.perf_counter() - started < seconds:
            callers[index](batch)
            counts[index] += 1

    if len(callers) == 1:
        call_back_to_back(0)
    else:
        with ThreadPoolExecutor(len(callers)) as pool:
            for future in [pool.submit(call_back_to_back, index) for index in range(len(callers))]:
                future.result()
    return sum(counts), time.perf_counter() - started


def _rates(paths, batch, seconds, rounds):
    """Images a second of each path on `batch` (a path: the callers that call it at once): each
    runs `rounds` slices of seconds / rounds, taking turns, after one warm-up call a caller."""
    totals = [[0, 0.0] for _ in paths]
    for callers in paths:
        for caller in callers:
            caller(batch)
    for _ in range(rounds):
        for total, callers in zip(totals, paths):
            calls, elapsed = _calls(callers, batch, seconds / rounds)
            total[0] += calls
            total[1] += elapsed
    return [calls * len(batch) / elapsed for calls, elapsed in totals]


def _latencies_ms(functions, images, requests, rounds, idle_seconds=0.0):
    """Milliseconds of `requests` one-image calls of each of `functions`, in `rounds` slices of
    calls, taking turns (a call by call alternation would time each path just after the other,
    with its threads asleep and its memory out of cache), each call `idle_seconds` after the
    last: one array a function."""
    latencies = np.empty((len(functions), requests))
    bounds = np.linspace(0, requests, rounds + 1).astype(int)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        for row, function in enumerate(functions):
            for index in range(start, stop):
                image = images[index % len(images):index % len(images) + 1]
                if idle_seconds:
                    time.sleep(idle_seconds)
                started = time.perf_counter()
                function(image)
                latencies[row, index] = time.perf_counter() - started
    return latencies * 1e3


def _start_echo(embedding_dim, keep_memory):
    """benchmarks.grpc_echo in a subprocess on a free port: (process, target)."""
    import grpc

    from serving.launch import REPO_ROOT, free_port

    port = free_port()
    command = [sys.executable, "-m", "benchmarks.grpc_echo", "--port", str(port),
               "--embedding-dim", str(embedding_dim)] + ([] if keep_memory else ["--no-keep-memory"])
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    return process, target


def main(argv=None):
    from benchmarks.common import markdown_table, parser, start, test_images
    from zoo.precision import PRECISIONS
    from zoo.apps.evaluation.speed import command_line, machine_and_load, record

    arguments = parser(__doc__)
    arguments.add_argument("--seconds", type=float, default=5.0,
                           help="per measurement (in-process, served, echo), all rounds together")
    arguments.add_argument("--rounds", type=int, default=5, help="alternating slices")
    arguments.add_argument("--clients", type=int, default=1,
                           help="concurrent clients (and in-process threads) in the img/s rows "
                                "(default %(default)s: one sequential client)")
    arguments.add_argument("--latency-requests", type=int, default=1000,
                           help="one-image calls timed for p50 and p99")
    arguments.add_argument("--idle-ms", type=int, default=0,
                           help="idle time before each of those calls (default %(default)s: "
                                "back to back), as between the queries of a search page")
    arguments.add_argument("--no-keep-memory", action="store_true",
                           help="leave glibc's malloc settings alone in the servers and in this "
                                "client process (serving/memory.py)")
    arguments.add_argument("--uint8", action="store_true",
                           help="time uint8 images (encode_pixels) instead of float32 ones")
    arguments.add_argument("--precision", choices=PRECISIONS,
                           default="float32", help="the exported model's and the in-process "
                                                   "encoder's compute precision")
    arguments.add_argument("--record", action="store_true",
                           help="keep the table as the speed report "
                                "serving_MODEL[_PRECISION][_uint8][_clientsN][_idleMSms] "
                                "(PRECISION unless float32; "
                                "reports/results/speed.json; MODELS.md)")
    args = arguments.parse_args(argv)
    if args.clients < 1:
        arguments.error(f"--clients must be at least 1; got {args.clients}")
    if args.idle_ms < 0:
        arguments.error(f"--idle-ms must be 0 or more; got {args.idle_ms}")
    keep_memory = not args.no_keep_memory
    if keep_memory:
        keep_freed_memory()
    server, encoder, _ = start(args.kind, args.batching, args.model, keep_memory=keep_memory,
                               precision=args.precision)
    echo, echo_target = _start_echo(encoder.embedding_dim, keep_memory)
    try:
        images = test_images(max(BATCH_SIZES))
        if args.uint8:
            images = np.round(images * 255).astype(np.uint8)
        with contextlib.ExitStack() as stack:
            clients, echo_clients = ([stack.enter_context(EncoderClient(target, args.model,
                                                                        timeout=60))
                                      for _ in range(args.clients)]
                                     for target in (server.target, echo_target))
            paths = ([encoder.encode] * args.clients, [client.encode for client in clients],
                     [client.encode for client in echo_clients])
            rows = [(batch_size, *_rates(paths, images[:batch_size], args.seconds, args.rounds))
                    for batch_size in BATCH_SIZES]
            local, served = _latencies_ms([encoder.encode, clients[0].encode], images,
                                          args.latency_requests, args.rounds,
                                          args.idle_ms / 1e3)
    finally:
        server.stop()
        echo.terminate()
        echo.wait()
    command = command_line("benchmarks.serving_throughput", argv)
    print(command)
    print(f"machine: {machine_and_load()}")
    print(f"{args.model} ({args.precision}), {args.kind} server, batching "
          f"{args.batching or 'off'}, {clients_in_words(args.clients)} on loopback, "
          f"{pixels(args.uint8)}; malloc keeps freed memory: {'yes' if keep_memory else 'no'}")
    header, table = _table(rows, args.clients)
    print("  ".join(f"{name:>{max(5, len(name))}s}" for name in header))
    for values in table:
        print("  ".join(f"{value.replace(',', ''):>{max(5, len(name))}s}"
                        for name, value in zip(header, values)))
    if args.clients == 1:
        print("no-model round trip: the same client call against benchmarks.grpc_echo, which "
              "answers without running a model; ceiling: the most served / in-process can be "
              "when each call pays that round trip on top of the in-process time")
    else:
        print(f"in-process: {args.clients} threads calling encode at once; no-model img/s: the "
              f"same {args.clients} clients against benchmarks.grpc_echo, which answers without "
              f"running a model")
    latency = (f"single 64x64 image: p50 {np.percentile(served, 50):.1f} ms, "
               f"p99 {np.percentile(served, 99):.1f} ms over {len(served)} requests"
               + (f", each {args.idle_ms} ms after the last" if args.idle_ms else "")
               + " (in-process "
               f"p50 {np.percentile(local, 50):.1f} ms, p99 {np.percentile(local, 99):.1f} ms)")
    print(latency)
    if args.record:
        result = {"model": args.model, "precision": args.precision, "server": args.kind,
                  "batching": os.path.basename(args.batching) if args.batching else "off",
                  "keep_memory": keep_memory, "images": pixels(args.uint8),
                  "clients": args.clients, "idle_ms": args.idle_ms,
                  "transport": f"{clients_in_words(args.clients)} on loopback",
                  "table": markdown_table(header, table),
                  "latency": latency}
        name = "_".join(["serving", args.model]
                        + ([args.precision] if args.precision != "float32" else [])
                        + (["uint8"] if args.uint8 else [])
                        + ([f"clients{args.clients}"] if args.clients > 1 else [])
                        + ([f"idle{args.idle_ms}ms"] if args.idle_ms else []))
        print(f"recorded: {record(name, result, command)}")


def _table(rows, clients):
    """(header, rows of formatted values) from (batch, in-process, served, no-model) img/s rows:
    for one client with the no-model round trip and the ceiling it sets, for several with the
    no-model img/s."""
    if clients == 1:
        header = ("batch", "in-process img/s", "served img/s", "served / in-process",
                  "no-model round trip ms", "ceiling")
    else:
        header = ("batch", "in-process img/s", "served img/s", "served / in-process",
                  "no-model img/s")
    table = []
    for batch_size, local_rate, served_rate, echo_rate in rows:
        values = [f"{batch_size:d}", f"{local_rate:,.0f}", f"{served_rate:,.0f}",
                  f"{served_rate / local_rate:.2f}"]
        if clients == 1:
            values += [f"{batch_size / echo_rate * 1e3:.2f}",
                       f"{_ceiling(local_rate, echo_rate):.2f}"]
        else:
            values.append(f"{echo_rate:,.0f}")
        table.append(values)
    return header, table


def clients_in_words(clients):
    """'one sequential gRPC client' or 'N concurrent gRPC clients (sequential calls each)'."""
    return ("one sequential gRPC client" if clients == 1 else
            f"{clients} concurrent gRPC clients (sequential calls each)")


def pixels(uint8):
    """How the benchmark's images travel, in words."""
    return ("uint8 images (encode_pixels)" if uint8 else
            "float32 images (serving_default)")


def _ceiling(local_rate, echo_rate):
    """served / in-process if a call took the in-process time plus the no-model round trip."""
    local_seconds, echo_seconds = 1 / local_rate, 1 / echo_rate
    return local_seconds / (local_seconds + echo_seconds)


if __name__ == "__main__":
    main()

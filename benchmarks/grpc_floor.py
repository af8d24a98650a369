"""The floor of one Python gRPC call: a unary echo of raw bytes, without protobuf or a model.

    python -m benchmarks.grpc_floor [--sizes REQUEST:RESPONSE ...] [--requests N] [--record]

A server subprocess answers every call with a fixed response of RESPONSE bytes through a generic
handler, which hands gRPC's bytes over as they are: nothing is parsed or built. This process
calls it back to back over loopback with REQUEST bytes. Printed for each size pair: the round
trip's p50 and mean, and the CPU time a call of the client and of the server. The default sizes
are a served thin_gan_merchant call of 1 and of 64 images sent as uint8 pixels (64x64 bytes
each) answered with 1024 float32 each.

It answers whether a serving goal is in reach of Python gRPC at all: a served call costs the
in-process time plus at least this round trip (plus protobuf and the request's tensors, which
`benchmarks.serving_throughput`'s no-model round trip adds), so served / in-process >= 0.8 needs
this round trip to stay under a quarter of the in-process time of the call.
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent import futures

import numpy as np

SERVICE, METHOD = "floor.Echo", "Call"
DEFAULT_SIZES = ("4096:4096", "262144:262144")  # thin_gan_merchant, 1 and 64 uint8 images
MAX_BYTES = 64 << 20


def serve(port, response_bytes):
    """Answer every call with `response_bytes` bytes until killed."""
    import grpc

    response = b"\0" * response_bytes
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[
        ("grpc.max_receive_message_length", MAX_BYTES),
        ("grpc.max_send_message_length", MAX_BYTES)])
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        METHOD: grpc.unary_unary_rpc_method_handler(lambda request, context: response)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"floor on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


def start_server(response_bytes):
    """This module's server in a subprocess on a free port: (process, channel, call), where
    `call` sends its argument (bytes) over `channel` and returns the response's bytes."""
    import grpc

    from serving.launch import REPO_ROOT, free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.grpc_floor", "--serve",
                                str(port), "--response-bytes", str(response_bytes)],
                               cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                    options=[("grpc.max_receive_message_length", MAX_BYTES)])
    grpc.channel_ready_future(channel).result(timeout=60)
    return process, channel, channel.unary_unary(f"/{SERVICE}/{METHOD}")


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(request_bytes, response_bytes, requests):
    """(p50 ms, mean ms, client CPU ms a call, server CPU ms a call) of `requests` calls."""
    process, channel, call = start_server(response_bytes)
    try:
        request = b"\0" * request_bytes
        for _ in range(100):  # warm-up: connection, buffers
            call(request)
        latencies = np.empty(requests)
        server_cpu, client_cpu, started = cpu_seconds(process.pid), time.process_time(), \
            time.perf_counter()
        for index in range(requests):
            begun = time.perf_counter()
            call(request)
            latencies[index] = time.perf_counter() - begun
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_cpu = cpu_seconds(process.pid) - server_cpu
    finally:
        channel.close()
        process.terminate()
        process.wait()
    return (np.median(latencies) * 1e3, elapsed / requests * 1e3, client_cpu / requests * 1e3,
            server_cpu / requests * 1e3)


def sizes(text):
    """'REQUEST:RESPONSE' (bytes) -> (request, response)."""
    try:
        request, response = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected REQUEST:RESPONSE in bytes, such as "
                                         f"4096:4096; got {text!r}") from None
    if min(request, response) < 0 or max(request, response) > MAX_BYTES:
        raise argparse.ArgumentTypeError(f"sizes must be 0 to {MAX_BYTES} bytes; got {text!r}")
    return request, response


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes, nargs="+",
                        default=[sizes(text) for text in DEFAULT_SIZES],
                        help=f"REQUEST:RESPONSE byte counts (default: {' '.join(DEFAULT_SIZES)})")
    parser.add_argument("--requests", type=int, default=3000, help="calls timed a size pair")
    parser.add_argument("--record", action="store_true",
                        help="keep the table as the speed report grpc_floor "
                             "(reports/results/speed.json; MODELS.md)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--response-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error(f"--requests must be at least 1; got {args.requests}")
    if args.serve is not None:
        serve(args.serve, args.response_bytes)
        return
    from zoo.apps.evaluation.speed import command_line, machine_and_load, record

    rows = [(request, response, *measure(request, response, args.requests))
            for request, response in args.sizes]
    command = command_line("benchmarks.grpc_floor", argv)
    print(command)
    print(f"machine: {machine_and_load()}")
    setting = (f"Python gRPC {_grpc_version()}, one sequential client on loopback, raw bytes "
               f"both ways (no protobuf), {args.requests} calls a row")
    print(setting)
    header = ("request bytes", "response bytes", "p50 ms", "mean ms", "client CPU ms",
              "server CPU ms")
    table = [[f"{row[0]:,d}", f"{row[1]:,d}"] + [f"{value:.3f}" for value in row[2:]]
             for row in rows]
    print("  ".join(header))
    for values in table:
        print("  ".join(f"{value:>{len(name)}s}" for name, value in zip(header, values)))
    if args.record:
        from benchmarks.common import markdown_table

        result = {"setting": setting, "table": markdown_table(header, table)}
        print(f"recorded: {record('grpc_floor', result, command)}")


def _grpc_version():
    import grpc

    return grpc.__version__


if __name__ == "__main__":
    main()

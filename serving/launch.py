"""Start a model server in a subprocess on free loopback ports (tests and benchmarks).

`start_server(kind, model_config_file)` runs either this package's server (`python -m zoo serve`)
or the real `tensorflow_model_server` with the same config, waits until every listed model
version is AVAILABLE, and returns a handle with `target` (gRPC), `rest_url` and `stop()`.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

__all__ = ["KINDS", "REAL_SERVER", "free_port", "start_server", "copy_version"]

KINDS = ("python", "tensorflow_model_server")
REAL_SERVER = "tensorflow_model_server"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def copy_version(model_dir, source_version, new_version):
    """Publish a copy of a version the way the exporter does: a hidden temp dir, then rename."""
    staging = tempfile.mkdtemp(prefix=f".{new_version}.incomplete-", dir=model_dir)
    os.rmdir(staging)
    shutil.copytree(os.path.join(model_dir, str(source_version)), staging)
    os.rename(staging, os.path.join(model_dir, str(new_version)))
    return os.path.join(model_dir, str(new_version))


class ServerProcess:
    def __init__(self, kind, process, port, rest_port, log_path):
        self.kind, self.process, self.port, self.rest_port = kind, process, port, rest_port
        self.target = f"127.0.0.1:{port}"
        self.rest_url = f"http://127.0.0.1:{rest_port}"
        self.log_path = log_path

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def stop(self, timeout=60):
        """SIGTERM (graceful shutdown), then SIGKILL after `timeout`; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _command(kind, model_config_file, port, rest_port, batching_parameters_file, poll,
             keep_memory=True):
    if kind == "python":
        command = [sys.executable, "-m", "zoo", "serve", "--port", str(port), "--rest-port",
                   str(rest_port), "--model-config-file", model_config_file,
                   "--poll-interval", str(poll)]
        if not keep_memory:
            command.append("--no-keep-memory")
        if batching_parameters_file:
            command += ["--batching-parameters-file", batching_parameters_file]
        return command
    command = [REAL_SERVER, f"--port={port}", f"--rest_api_port={rest_port}",
               f"--model_config_file={model_config_file}",
               f"--file_system_poll_wait_seconds={max(1, int(poll))}", "--enable_model_warmup",
               "--rest_api_timeout_in_ms=60000"]
    if batching_parameters_file:
        command += ["--enable_batching", f"--batching_parameters_file={batching_parameters_file}"]
    return command


def start_server(kind, model_config_file, expected, batching_parameters_file=None, poll=1.0,
                 timeout=240, log_dir=None, keep_memory=True):
    """Start a server and wait until each (model, version) in `expected` is AVAILABLE.
    keep_memory False: the python server leaves malloc's settings alone (serving.memory)."""
    from serving.client import EncoderClient

    if kind == REAL_SERVER and shutil.which(REAL_SERVER) is None:
        raise FileNotFoundError(f"{REAL_SERVER} not on PATH")
    port, rest_port = free_port(), free_port()
    log_path = os.path.join(log_dir or tempfile.mkdtemp(prefix="serving-log-"), f"{kind}.log")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            _command(kind, model_config_file, port, rest_port, batching_parameters_file, poll,
                     keep_memory),
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    server = ServerProcess(kind, process, port, rest_port, log_path)
    deadline = time.monotonic() + timeout
    pending = dict(expected)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {process.returncode}:\n{server.log()}")
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"{kind} server not ready after {timeout} s:\n{server.log()}")
        for model, versions in list(pending.items()):
            try:
                with EncoderClient(server.target, model, timeout=2, retries=0) as client:
                    states = client.status()
            except Exception:  # noqa: BLE001 - not up yet
                continue
            if all(states.get(version) == "AVAILABLE" for version in versions):
                del pending[model]
        time.sleep(0.5)
    return server

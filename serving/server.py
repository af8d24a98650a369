"""A TensorFlow-Serving-compatible model server in Python (../shared/specs/serving.md).

Production runs TensorFlow Serving itself (serving/compose.yaml). This server speaks the same
APIs on the same SavedModel directories, for tests, demos and machines without the
`tensorflow_model_server` binary; where a behaviour differs, TF Serving is right.

This module is the process lifecycle: `ModelServer` starts the gRPC server (grpc_api.py) and the
REST server (rest_api.py, on uvicorn) over one ModelManager (versions.py), and stops them
gracefully; `serve()` runs it until SIGTERM / SIGINT (`zoo serve`). The other jobs live in
config.py (config files), batching.py, servable.py (one loaded version), inference.py (Classify
and Regress), rest_json.py (REST formats), monitoring.py (Prometheus) and errors.py; their
public names are importable from here as before.
"""

import logging
import signal
import socket
import threading
import time
from concurrent import futures

import grpc
import uvicorn

from serving.batching import BatchQueue
from serving.config import (config_for_model, config_from_base_dir, load_batching_parameters,
                            load_model_config, load_monitoring_config)
from serving.errors import HTTP_CODES, ServingError
from serving.memory import keep_freed_memory
from serving.grpc_api import ModelServicer, PredictionServicer, add_servicers, model_metadata
from serving.monitoring import Metrics
from serving.protos import BatchingParameters
from serving.rest_api import create_app
from serving.servable import DEFAULT_SIGNATURE, WARMUP_FILE, LoadedVersion
from serving.versions import ModelManager, State, VersionState

__all__ = ["ModelServer", "ModelManager", "ServingError", "serve", "load_model_config",
           "config_from_base_dir", "config_for_model", "load_batching_parameters",
           "load_monitoring_config", "BatchQueue", "LoadedVersion", "PredictionServicer",
           "ModelServicer", "model_metadata", "State", "VersionState", "HTTP_CODES",
           "DEFAULT_SIGNATURE", "WARMUP_FILE"]

log = logging.getLogger("serving.server")


class ModelServer:
    """gRPC + REST endpoints over a ModelManager; `start()`, then `stop()` (graceful).

    rest_port None: no REST server; 0: an ephemeral port (read `rest_port` after start).
    monitoring: a MonitoringConfig; with prometheus_config.enable the REST port serves metrics.
    """

    def __init__(self, config, port=8500, rest_port=8501, host="127.0.0.1", batching=None,
                 poll_interval=1.0, max_message_mb=64, warmup=True, grpc_threads=16,
                 monitoring=None):
        self.manager = ModelManager(config, poll_interval=poll_interval, batching=batching,
                                    warmup=warmup)
        self.host, self.port, self.rest_port = host, port, rest_port
        self._max_bytes = int(max_message_mb * (1 << 20))
        self._grpc_threads = grpc_threads
        prometheus = monitoring.prometheus_config if monitoring is not None else None
        self.metrics = Metrics(self.manager, prometheus.path) if prometheus is not None and \
            prometheus.enable else None
        self._grpc = None
        self._http = None
        self._http_thread = None

    def start(self):
        self.manager.start()
        options = [("grpc.max_receive_message_length", self._max_bytes),
                   ("grpc.max_send_message_length", self._max_bytes),
                   ("grpc.so_reuseport", 0)]
        self._grpc = grpc.server(futures.ThreadPoolExecutor(self._grpc_threads), options=options)
        add_servicers(self._grpc, self.manager, self.metrics)
        requested = self.port
        self.port = self._grpc.add_insecure_port(f"{self.host}:{self.port}")
        if self.port == 0:
            raise OSError(f"Cannot bind gRPC to {self.host}:{requested}")
        self._grpc.start()
        if self.rest_port is not None:
            self._start_rest()
        log.info("serving gRPC on %s:%d, REST on %s:%s", self.host, self.port, self.host,
                 self.rest_port)
        return self

    def _start_rest(self):
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.rest_port))
        self.rest_port = listener.getsockname()[1]
        app = create_app(self.manager, self._max_bytes, self.metrics)
        # log_config None: leave the process's logging alone; keep-alive as the old server.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_keep_alive=300, server_header=False)
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._http.run, kwargs={"sockets": [listener]},
                                             daemon=True, name="rest")
        self._http_thread.start()
        deadline = time.monotonic() + 30
        while not self._http.started:
            if not self._http_thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"REST server did not start on {self.host}:{self.rest_port}")
            time.sleep(0.01)

    def stop(self, grace=10.0):
        """Stop accepting, let in-flight requests finish (up to `grace` s), unload the models."""
        started = time.monotonic()
        if self._http is not None:
            self._http.should_exit = True  # no new connections; requests being answered finish
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self._http is not None:
            self._http_thread.join(max(0.0, grace - (time.monotonic() - started)))
            if self._http_thread.is_alive():
                self._http.force_exit = True
                self._http_thread.join(5)
        self.manager.stop()


def serve(model_base_path=None, port=8500, rest_port=8501, host="127.0.0.1",
          model_config_file=None, batching_parameters_file=None, poll_interval=1.0,
          max_message_mb=64, warmup=True, model_name=None, enable_batching=False,
          monitoring_config_file=None, keep_memory=True):
    """Run the server until SIGTERM / SIGINT, then shut down gracefully (the `zoo serve` command).

    Models: `model_config_file`; or `model_name` with `model_base_path` (TF Serving's single
    model); or `model_base_path` alone, a folder of NAME/VERSION/ (every model found).
    Batching: on with `enable_batching` (default parameters) or a `batching_parameters_file`.
    keep_memory: keep freed buffers in the heap for the next request (serving.memory).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if keep_memory:
        keep_freed_memory()
    if model_config_file:
        config = load_model_config(model_config_file)
    elif model_name:
        if not model_base_path:
            raise ValueError("Expected --model_base_path with --model_name.")
        config = config_for_model(model_name, model_base_path)
    elif model_base_path:
        config = config_from_base_dir(model_base_path)
    else:
        raise ValueError("Expected a model base directory, --model_name with --model_base_path, "
                         "or --model_config_file.")
    if batching_parameters_file:
        batching = load_batching_parameters(batching_parameters_file)
    else:
        batching = BatchingParameters() if enable_batching else None
    monitoring = load_monitoring_config(monitoring_config_file) if monitoring_config_file \
        else None
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set())
                for number in (signal.SIGTERM, signal.SIGINT)}
    server = ModelServer(config, port=port, rest_port=rest_port, host=host, batching=batching,
                         poll_interval=poll_interval, max_message_mb=max_message_mb,
                         warmup=warmup, monitoring=monitoring).start()
    print(f"serving gRPC on {host}:{server.port}, REST on "
          f"{host}:{server.rest_port if server.rest_port is not None else '(off)'}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
        log.info("shutting down: finishing in-flight requests")
        server.stop()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    log.info("stopped")

"""A TensorFlow-Serving-compatible model server in Python (../shared/specs/serving.md).

Production runs TensorFlow Serving itself (serving/compose.yaml). This server speaks the same
APIs on the same SavedModel directories, for tests, demos and machines without the
`tensorflow_model_server` binary; where a behaviour differs, TF Serving is right.

- Models: a TF Serving ModelServerConfig text proto (model_config_list: name, base_path,
  model_version_policy latest / all / specific, version_labels), or a base directory of
  <name>/<version>/ folders (every model found, latest version).
- Versions: integer directories holding saved_model.pb. The file system is polled; a new
  version is loaded and warmed up (assets.extra/tf_serving_warmup_requests) before it becomes
  visible, and an old one is dropped only after; hidden `.N.incomplete-*` export folders are not
  integers, so half-written versions are never seen.
- gRPC (tensorflow_serving.apis servicers): PredictionService.Predict / GetModelMetadata,
  ModelService.GetModelStatus / HandleReloadConfigRequest.
- REST: GET /v1/models/NAME[/versions/V | /labels/L][/metadata],
  POST /v1/models/NAME[/versions/V | /labels/L]:predict (row "instances" and columnar "inputs").
- Batching of concurrent requests to signatures with one float input (BatchingParameters:
  max_batch_size, batch_timeout_micros, num_batch_threads, max_enqueued_batches,
  larger tasks refused as TF Serving does), graceful shutdown on SIGTERM / SIGINT, bound to 127.0.0.1.

Errors carry TF Serving's status codes and messages: NOT_FOUND "Servable not found for request:
Specific(name, 3)", INVALID_ARGUMENT "Unrecognized servable version label: x", FAILED_PRECONDITION
'Serving signature key "x" not found.', INVALID_ARGUMENT "input tensor alias not found in
signature: x. Inputs expected to be in the set {images}.", and the graph's own errors.
"""

import base64
import binascii
import json
import logging
import os
import re
import signal
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
from google.protobuf import any_pb2, json_format, text_format

from serving.protos import BatchingParameters, serving_apis
from serving.tensors import DTYPES, TensorParseError, to_ndarray, to_tensor_proto

__all__ = ["ModelServer", "ModelManager", "ServingError", "serve", "load_model_config",
           "config_from_base_dir", "load_batching_parameters"]

log = logging.getLogger("serving.server")

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_LOAD_RETRIES = 5  # a version that fails to load is tried again this many times,
LOAD_RETRY_SECONDS = 5.0  # this far apart (TF Serving: max_num_load_retries, 1 min apart)
MAX_ELEMENTS = 1 << 26  # 64 Mi values (256 MiB of float32): larger tensors are refused
STATE_NAMES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}

# gRPC status -> HTTP status, as TF Serving's REST API maps them.
HTTP_CODES = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}
_CODE_OF_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """An error with the gRPC status code TF Serving would answer with."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _tf():
    import tensorflow as tf

    return tf


# ----------------------------------------------------------------------------- configuration


def load_model_config(path):
    """Parse a ModelServerConfig text proto (TF Serving's --model_config_file)."""
    from tensorflow_serving.config import model_server_config_pb2

    with open(path) as handle:
        text = handle.read()
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ValueError(f"Cannot parse model config {path}: {error}") from None


def config_from_base_dir(base_dir):
    """A ModelServerConfig serving every <base_dir>/<name>/ holding integer version folders."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    base_dir = os.path.abspath(base_dir)
    if not os.path.isdir(base_dir):
        raise ValueError(f"Model base directory {base_dir} does not exist.")
    for name in sorted(os.listdir(base_dir)):
        model_dir = os.path.join(base_dir, name)
        if name.startswith(".") or not os.path.isdir(model_dir):
            continue
        if any(entry.isdigit() for entry in os.listdir(model_dir)):
            model = config.model_config_list.config.add(name=name, base_path=model_dir,
                                                        model_platform="tensorflow")
            model.model_version_policy.latest.num_versions = 1
    if not config.model_config_list.config:
        raise ValueError(f"No models in {base_dir}: expected {base_dir}/<name>/<version>/ "
                         f"folders (zoo export NAME --out {base_dir}).")
    return config


def load_batching_parameters(path):
    """Parse a BatchingParameters text proto (TF Serving's --batching_parameters_file)."""
    with open(path) as handle:
        text = handle.read()
    try:
        return text_format.Parse(text, BatchingParameters())
    except text_format.ParseError as error:
        raise ValueError(f"Cannot parse batching parameters {path}: {error}") from None


def _version_dirs(base_path):
    """{version: path} of the integer folders holding a saved_model.pb."""
    try:
        entries = os.listdir(base_path)
    except OSError:
        return {}
    found = {}
    for entry in entries:
        path = os.path.join(base_path, entry)
        if entry.isdigit() and os.path.isfile(os.path.join(path, "saved_model.pb")):
            found[int(entry)] = path
    return found


def _wanted_versions(model_config, available):
    policy = model_config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(available)
    if kind == "specific":
        return set(policy.specific.versions) & set(available)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return set(sorted(available)[-count:])


# ----------------------------------------------------------------------------- batching


class _Task:
    __slots__ = ("array", "done", "result", "error")

    def __init__(self, array):
        self.array = array
        self.done = threading.Event()
        self.result = None
        self.error = None


class BatchQueue:
    """Merges concurrent calls of one signature into batches along dimension 0.

    A batch runs when it holds max_batch_size rows or batch_timeout_micros after its first task
    arrived. `run(array)` must return a dict of arrays with the batch as their first dimension.
    """

    def __init__(self, run, parameters, semaphore):
        self._run = run
        self._max_batch_size = parameters.max_batch_size.value or 32
        self._timeout = (parameters.batch_timeout_micros.value or 0) / 1e6
        self._max_rows = self._max_batch_size * (parameters.max_enqueued_batches.value or 100)
        self._semaphore = semaphore
        self._pending = []
        self._rows = 0
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="batch-queue")
        self._thread.start()

    def submit(self, array):
        rows = array.shape[0] if array.ndim else 0
        if rows > self._max_batch_size:  # TF Serving refuses these too (clients chunk)
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Task size {rows} is larger than maximum input batch size "
                               f"{self._max_batch_size}")
        task = _Task(array)
        with self._condition:
            closed = self._closed
            if not closed:
                if self._rows + rows > self._max_rows:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       "The batch scheduling queue to which this task was "
                                       "submitted is full")
                self._pending.append(task)
                self._rows += rows
                self._condition.notify()
        if closed:  # the version was just unloaded; a request that already holds it still runs
            with self._semaphore:
                return self._run(array)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def close(self):
        """Run what is queued, then stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout=30)

    def _take_batch(self):
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self._timeout
            while self._rows < self._max_batch_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            batch, rows = [], 0
            while self._pending and rows + self._pending[0].array.shape[0] <= self._max_batch_size:
                task = self._pending.pop(0)
                rows += task.array.shape[0]
                batch.append(task)
            self._rows -= rows
            return batch

    def _loop(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            with self._semaphore:
                self._run_batch(batch)

    def _run_batch(self, batch):
        if len(batch) > 1:
            try:
                outputs = self._run(np.concatenate([task.array for task in batch]))
            except ServingError:
                outputs = None  # one bad task fails the batch: run each alone to attribute it
            if outputs is not None:
                start = 0
                for task in batch:
                    stop = start + task.array.shape[0]
                    task.result = {name: value[start:stop] for name, value in outputs.items()}
                    start = stop
                    task.done.set()
                return
        for task in batch:
            try:
                task.result = self._run(task.array)
            except ServingError as error:
                task.error = error
            except Exception as error:  # noqa: BLE001 - reported to the caller
                task.error = ServingError(grpc.StatusCode.INTERNAL, str(error))
            task.done.set()


# ----------------------------------------------------------------------------- one version


def _signature_defs(path):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph.signature_def
    raise ValueError(f"{path}: no MetaGraph tagged 'serve'")


def _shape_text(shape):
    return "[" + ",".join(str(size) for size in shape) + "]"


class LoadedVersion:
    """One loaded SavedModel version: its signatures, validation, and execution."""

    def __init__(self, name, version, path, batching=None, semaphore=None):
        tf = _tf()
        self.name, self.version, self.path = name, version, path
        self.signature_defs = _signature_defs(path)
        self._loaded = tf.saved_model.load(path)
        self._functions = dict(self._loaded.signatures)
        self._queues = {}
        if batching is not None:
            for key, signature in self.signature_defs.items():
                inputs = list(signature.inputs.values())
                if key in self._functions and len(inputs) == 1 and inputs[0].dtype == 1:
                    alias = next(iter(signature.inputs))
                    self._queues[key] = BatchQueue(
                        lambda array, key=key, alias=alias: self._execute(key, {alias: array}),
                        batching, semaphore)

    def close(self):
        for queue in self._queues.values():
            queue.close()

    def signature(self, signature_name):
        signature_name = signature_name or DEFAULT_SIGNATURE
        if signature_name not in self.signature_defs or signature_name.startswith("__"):
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        return signature_name, self.signature_defs[signature_name]

    def predict(self, signature_name, inputs, output_filter=(), batch=True):
        """inputs {alias: ndarray} -> (signature name, {alias: ndarray}), validated as TF Serving."""
        signature_name, signature = self.signature(signature_name)
        expected = sorted(signature.inputs)
        if len(inputs) != len(expected):
            sent = sorted(inputs)
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sent)}}}) != len({{{','.join(expected)}}}). Sent extra: "
                f"{{{','.join(sorted(set(sent) - set(expected)))}}}. Missing but required: "
                f"{{{','.join(sorted(set(expected) - set(sent)))}}}.")
        for position, (alias, array) in enumerate(sorted(inputs.items())):
            if alias not in signature.inputs:
                raise _unknown_alias(alias, expected)
            info = signature.inputs[alias]
            want_dtype, _, want_name = DTYPES.get(info.dtype, (None, None, str(info.dtype)))
            got_name = "string" if array.dtype == object else array.dtype.name
            if (want_dtype is object) != (array.dtype == object) or (
                    want_dtype is not object and array.dtype != np.dtype(want_dtype)):
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Expects arg[{position}] to be {want_name} but {got_name} is "
                                   f"provided (input '{alias}' of signature '{signature_name}')")
            if not info.tensor_shape.unknown_rank:
                want_shape = [dim.size for dim in info.tensor_shape.dim]
                if len(want_shape) != array.ndim or any(
                        want not in (-1, got) for want, got in zip(want_shape, array.shape)):
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"input '{alias}' of signature '{signature_name}' has shape "
                                       f"{_shape_text(array.shape)}, which is not compatible with "
                                       f"the expected shape {_shape_text(want_shape)}")
        outputs = list(output_filter)
        for alias in outputs:
            if alias not in signature.outputs:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"output tensor alias not found in signature: {alias} Outputs "
                                   f"expected to be in the set "
                                   f"{{{','.join(sorted(signature.outputs))}}}.")
        if len(set(outputs)) != len(outputs):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias")
        queue = self._queues.get(signature_name) if batch else None
        if queue is not None:
            results = queue.submit(next(iter(inputs.values())))
        else:
            results = self._execute(signature_name, inputs)
        if outputs:
            results = {alias: results[alias] for alias in outputs}
        return signature_name, results

    def _execute(self, signature_name, inputs):
        tf = _tf()
        function = self._functions[signature_name]
        try:
            # Strings go through a list: numpy's bytes dtype would drop trailing NUL bytes.
            tensors = {alias: tf.constant(array) if array.dtype != object else
                       tf.constant(array.reshape(-1).tolist(), tf.string, shape=array.shape)
                       for alias, array in inputs.items()}
            results = function(**tensors)
        except tf.errors.OpError as error:
            code = _CODE_OF_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN)
            raise ServingError(code, error.message) from None
        except (ValueError, TypeError) as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        return {alias: value.numpy() for alias, value in results.items()}

    def warm_up(self):
        """Replay assets.extra/tf_serving_warmup_requests (TF Serving --enable_model_warmup)."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        tf, apis = _tf(), serving_apis()
        count = 0
        for record in tf.data.TFRecordDataset(path):
            log_entry = apis.prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if not log_entry.HasField("predict_log"):
                continue
            request = log_entry.predict_log.request
            inputs = {alias: to_ndarray(proto) for alias, proto in request.inputs.items()}
            self.predict(request.model_spec.signature_name, inputs, request.output_filter,
                         batch=False)
            count += 1
        return count


# ----------------------------------------------------------------------------- the manager


class _ModelState:
    def __init__(self, config):
        self.config = config
        self.versions = {}  # version -> LoadedVersion, replaced (never mutated) on change
        self.states = {}  # version -> (state number, error code, error message)
        self.labels = dict(config.version_labels)


class ModelManager:
    """Which versions of which models are loaded; polls the file system for changes."""

    def __init__(self, config, poll_interval=1.0, batching=None, warmup=True):
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._models = {}
        self._config = config
        self._poll_interval = poll_interval
        self._batching = batching
        self._semaphore = threading.BoundedSemaphore(
            max(1, batching.num_batch_threads.value) if batching is not None
            and batching.num_batch_threads.value else 4)
        self._warmup = warmup
        self._stop = threading.Event()
        self._thread = None
        self._apply_config(config)

    # --- lifecycle

    def start(self):
        self.poll_once()
        if self._poll_interval and self._poll_interval > 0:
            self._thread = threading.Thread(target=self._poll_loop, daemon=True, name="fs-poll")
            self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            models, self._models = self._models, {}
        for state in models.values():
            for loaded in state.versions.values():
                loaded.close()

    def _poll_loop(self):
        while not self._stop.wait(self._poll_interval):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling
                log.exception("file-system poll failed")

    # --- config

    def _apply_config(self, config):
        names = [model.name for model in config.model_config_list.config]
        if len(set(names)) != len(names):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Illegal to list model {names} multiple times in config list")
        with self._lock:
            models = {}
            for model in config.model_config_list.config:
                if model.model_platform not in ("", "tensorflow"):
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Model {model.name}: unsupported platform "
                                       f"{model.model_platform}")
                state = self._models.get(model.name) or _ModelState(model)
                state.config = model
                state.labels = dict(model.version_labels)
                models[model.name] = state
            dropped = [state for name, state in self._models.items() if name not in models]
            self._models = models
            self._config = config
        for state in dropped:
            for loaded in state.versions.values():
                loaded.close()

    def reload_config(self, config):
        """HandleReloadConfigRequest: switch to `config`, load what it names, then return."""
        with self._reload_lock:
            self._apply_config(config)
            self.poll_once()
            for model in config.model_config_list.config:
                state = self._models.get(model.name)
                for label, version in model.version_labels.items():
                    if state is None or version not in state.versions:
                        raise ServingError(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"Request to assign label to version {version} of model "
                            f"{model.name}, which is not currently available for inference")

    # --- polling

    def poll_once(self):
        with self._lock:
            models = list(self._models.items())
        for name, state in models:
            available = _version_dirs(state.config.base_path)
            wanted = _wanted_versions(state.config, available)
            for version in sorted(wanted - set(state.versions)):
                self._load(name, state, version, available[version])
            with self._lock:
                stale = {version: loaded for version, loaded in state.versions.items()
                         if version not in wanted}
                if stale:
                    state.versions = {version: loaded for version, loaded in
                                      state.versions.items() if version not in stale}
                    for version in stale:
                        state.states[version] = (50, 0, "")
            for version, loaded in stale.items():
                loaded.close()  # queued requests finish; later ones run unbatched
                log.info("unloaded %s version %d", name, version)

    def _load(self, name, state, version, path):
        previous = state.states.get(version)
        if previous is not None and previous[0] == 50 and previous[1] != 0:
            failures, failed_at = previous[3], previous[4]
            if failures >= MAX_LOAD_RETRIES or time.monotonic() - failed_at < LOAD_RETRY_SECONDS:
                return  # as TF Serving: a few retries, some time apart
        failures = previous[3] if previous is not None and len(previous) > 3 else 0
        with self._lock:
            state.states[version] = (20, 0, "")
        started = time.monotonic()
        loaded = None
        try:
            loaded = LoadedVersion(name, version, path, self._batching, self._semaphore)
            warmed = loaded.warm_up() if self._warmup else 0
        except Exception as error:  # noqa: BLE001 - recorded in the model status
            if loaded is not None:
                loaded.close()
            code = error.code if isinstance(error, ServingError) else grpc.StatusCode.UNKNOWN
            message = error.message if isinstance(error, ServingError) else str(error)
            log.error("failed to load %s version %d from %s: %s", name, version, path, message)
            with self._lock:
                state.states[version] = (50, code.value[0], message, failures + 1,
                                         time.monotonic())
            return
        with self._lock:
            state.versions = {**state.versions, version: loaded}
            state.states[version] = (30, 0, "")
        log.info("loaded %s version %d (%d warmup requests) in %.1f s", name, version, warmed,
                 time.monotonic() - started)

    # --- lookups

    def resolve(self, model_spec):
        """The LoadedVersion a ModelSpec names, or ServingError as TF Serving answers."""
        name = model_spec.name
        with self._lock:
            state = self._models.get(name)
            versions = state.versions if state is not None else {}
            labels = state.labels if state is not None else {}
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            label = model_spec.version_label
            if label not in labels:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: {label}")
            version = labels[label]
        elif choice == "version":
            version = model_spec.version.value
        else:
            if not versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        if version not in versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Specific({name}, {version})")
        return versions[version]

    def status(self, model_spec):
        """[(version, state number, error code, error message)] as GetModelStatus reports."""
        name = model_spec.name
        with self._lock:
            state = self._models.get(name)
            states = dict(state.states) if state is not None else {}
            labels = dict(state.labels) if state is not None else {}
        if not states:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {name}")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            if model_spec.version_label not in labels:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: "
                                   f"{model_spec.version_label}")
            wanted = labels[model_spec.version_label]
        elif choice == "version":
            wanted = model_spec.version.value
        else:
            wanted = None
        if wanted is not None:
            if wanted not in states:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {wanted} of model {name}")
            states = {wanted: states[wanted]}
        return [(version, *entry[:3]) for version, entry in sorted(states.items(), reverse=True)]


# ----------------------------------------------------------------------------- gRPC


def _abort(context, error):
    context.abort(error.code, error.message)


def _request_inputs(request_inputs):
    inputs = {}
    for alias, proto in request_inputs.items():
        try:
            inputs[alias] = to_ndarray(proto, MAX_ELEMENTS)
        except TensorParseError as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"tensor parsing error: {alias} ({error})") from None
    return inputs


def _model_spec(spec_class, name, version, signature_name=""):
    spec = spec_class(name=name, signature_name=signature_name)
    spec.version.value = version
    return spec


def _status_response(apis, entries):
    from tensorflow_serving.apis import status_pb2  # noqa: PLC0415

    response = apis.get_model_status_pb2.GetModelStatusResponse()
    for version, state, code, message in entries:
        response.model_version_status.add(
            version=version, state=state,
            status=status_pb2.StatusProto(error_code=code, error_message=message))
    return response


class PredictionServicer:
    """PredictionService: Predict and GetModelMetadata."""

    def __init__(self, manager):
        self._manager = manager

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        apis = serving_apis()
        try:
            loaded = self._manager.resolve(request.model_spec)
            signature_name, outputs = loaded.predict(
                request.model_spec.signature_name, _request_inputs(request.inputs),
                request.output_filter)
        except ServingError as error:
            _abort(context, error)
        response = apis.predict_pb2.PredictResponse(
            model_spec=_model_spec(apis.model_pb2.ModelSpec, loaded.name, loaded.version,
                                   signature_name))
        from tensorflow.core.framework.tensor_pb2 import TensorProto

        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(value, TensorProto))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            response = model_metadata(self._manager, request.model_spec, request.metadata_field)
        except ServingError as error:
            _abort(context, error)
        return response

    def Classify(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not served by these models")

    def Regress(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not served by these models")

    def MultiInference(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not served here")


def model_metadata(manager, model_spec, metadata_fields):
    apis = serving_apis()
    if not metadata_fields:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")
    for field in metadata_fields:
        if field != "signature_def":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Metadata field {field} is not supported")
    loaded = manager.resolve(model_spec)
    signature_map = apis.get_model_metadata_pb2.SignatureDefMap()
    for key, signature in loaded.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response = apis.get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=_model_spec(apis.model_pb2.ModelSpec, loaded.name, loaded.version))
    response.metadata["signature_def"].CopyFrom(packed)
    return response


class ModelServicer:
    """ModelService: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager):
        self._manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            entries = self._manager.status(request.model_spec)
        except ServingError as error:
            _abort(context, error)
        return _status_response(serving_apis(), entries)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        from tensorflow_serving.apis import status_pb2  # noqa: PLC0415

        response = serving_apis().model_management_pb2.ReloadConfigResponse()
        if not request.config.HasField("model_config_list"):
            response.status.CopyFrom(status_pb2.StatusProto(
                error_code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                error_message="ServerCore is being used with a model_config_list, but the new "
                              "config is not a model_config_list"))
            return response
        try:
            self._manager.reload_config(request.config)
            response.status.error_code = 0
        except ServingError as error:
            response.status.CopyFrom(status_pb2.StatusProto(error_code=error.code.value[0],
                                                            error_message=error.message))
        return response


# ----------------------------------------------------------------------------- REST

_PREDICT_PATH = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)$",
    re.IGNORECASE)
_GET_PATH = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata)?$", re.IGNORECASE)


class _JsonError(ServingError):
    def __init__(self, message):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)


def _decode_value(value, is_string):
    """One JSON value (nested lists) -> nested lists of python values; {"b64": ...} decoded."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            if not is_string:
                raise _JsonError("JSON Value: {\"b64\": ...} given for a non-string tensor")
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise _JsonError(f"Unable to base64 decode: {value['b64'][:40]!r}") from None
        raise _JsonError("JSON Value: an object where a value or list was expected")
    if isinstance(value, list):
        return [_decode_value(item, is_string) for item in value]
    if is_string:
        if not isinstance(value, str):
            raise _JsonError(f"JSON Value: {json.dumps(value)[:40]} Type: {type(value).__name__} "
                             f"is not of expected type: string")
        return value.encode()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _JsonError(f"JSON Value: {json.dumps(value)[:40]} is not of expected type: number")
    return value


def _json_array(value, info):
    dtype, _, name = DTYPES.get(info.dtype, (np.float32, None, "float"))
    is_string = dtype is object
    decoded = _decode_value(value, is_string)
    try:
        if is_string:
            array = np.array(decoded, dtype=object)
            if any(not isinstance(item, bytes) for item in array.reshape(-1)):
                raise ValueError("ragged")
            return array
        array = np.array(decoded, dtype=np.float64)
        if array.dtype == object:
            raise ValueError("ragged")
        if dtype in (np.float32, np.float64, np.float16):
            return array.astype(dtype)
        if np.any(array != np.round(array)) or np.any(array < np.iinfo(dtype).min) or \
                np.any(array > np.iinfo(dtype).max):
            raise ValueError(f"values out of range of {name}")
        return array.astype(dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise _JsonError(f"Failed to convert JSON value to a {name} tensor: {error}") from None


def _unknown_alias(alias, aliases):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"input tensor alias not found in signature: {alias}. Inputs expected "
                        f"to be in the set {{{','.join(aliases)}}}.")


def _named_inputs(values, signature, aliases):
    """{alias: JSON values} -> {alias: array}, refusing aliases the signature lacks."""
    inputs = {}
    for alias, value in values.items():
        info = signature.inputs.get(alias)
        if info is None:
            raise _unknown_alias(alias, aliases)
        inputs[alias] = _json_array(value, info)
    return inputs


def _rest_inputs(body, signature):
    if not isinstance(body, dict):
        raise _JsonError("JSON Parse error: the request body must be a JSON object")
    if ("instances" in body) == ("inputs" in body):
        raise _JsonError("Missing 'inputs' or 'instances' key" if "instances" not in body else
                         "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                         "keys exist")
    aliases = sorted(signature.inputs)
    if "inputs" in body:
        value = body["inputs"]
        if isinstance(value, dict) and not set(value) == {"b64"}:
            return _named_inputs(value, signature, aliases), "columnar"
        if len(aliases) != 1:
            raise _JsonError(f"Expected an object with the inputs {{{','.join(aliases)}}}")
        return {aliases[0]: _json_array(value, signature.inputs[aliases[0]])}, "columnar"
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise _JsonError("Expecting 'instances' to be an list/array with at least one element")
    named = all(isinstance(row, dict) and set(row) != {"b64"} for row in instances)
    if not named:
        if len(aliases) != 1:
            raise _JsonError(f"Expecting an object with the inputs {{{','.join(aliases)}}} in "
                             f"each of 'instances'")
        return {aliases[0]: _json_array(instances, signature.inputs[aliases[0]])}, "row"
    keys = set(instances[0])
    columns = {}
    for index, row in enumerate(instances):
        if set(row) != keys:
            raise _JsonError(f"Failed to process element: {index} of 'instances' list. JSON "
                             f"object: {json.dumps(row)[:60]} keys must be equal to: "
                             f"{sorted(keys)}")
        for alias, value in row.items():
            columns.setdefault(alias, []).append(value)
    return _named_inputs(columns, signature, aliases), "row"


def _json_output(alias, array):
    if array.dtype == object or array.dtype.kind == "S":
        if alias.endswith("_bytes"):
            return np.vectorize(lambda item: {"b64": base64.b64encode(item).decode()},
                                otypes=[object])(array).tolist() if array.size else []
        return np.vectorize(lambda item: item.decode("utf-8", "replace"),
                            otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def _rest_outputs(outputs, layout):
    if layout == "columnar":
        if len(outputs) == 1:
            return {"outputs": _json_output(*next(iter(outputs.items())))}
        return {"outputs": {alias: _json_output(alias, value) for alias, value in outputs.items()}}
    converted = {alias: _json_output(alias, value) for alias, value in outputs.items()}
    if len(converted) == 1:
        return {"predictions": next(iter(converted.values()))}
    rows = len(next(iter(converted.values())))
    return {"predictions": [{alias: values[index] for alias, values in converted.items()}
                            for index in range(rows)]}


def _status_json(entries):
    return {"model_version_status": [
        {"version": str(version), "state": STATE_NAMES.get(state, "UNKNOWN"),
         "status": {"error_code": _CODE_OF_NUMBER.get(code, grpc.StatusCode.UNKNOWN).name,
                    "error_message": message}}
        for version, state, code, message in entries]}


class _Counter:
    """How many REST requests are being answered (graceful shutdown waits for zero)."""

    def __init__(self):
        self.count = 0
        self._condition = threading.Condition()

    def __enter__(self):
        with self._condition:
            self.count += 1

    def __exit__(self, *exc):
        with self._condition:
            self.count -= 1
            self._condition.notify_all()

    def wait_idle(self, timeout):
        with self._condition:
            return self._condition.wait_for(lambda: self.count == 0, timeout)


class _RestHandler(BaseHTTPRequestHandler):
    server_version = "TensorFlowServingPython/1.0"
    protocol_version = "HTTP/1.1"
    manager = None
    max_body_bytes = 64 << 20
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    in_flight = None  # a _Counter shared by the server's handlers

    def do_GET(self):  # noqa: N802
        with self.in_flight:
            self._get()

    def do_POST(self):  # noqa: N802
        with self.in_flight:
            self._post()

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.debug("rest: " + format, *args)

    def _send(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, error):
        self._send(HTTP_CODES.get(error.code, 500), {"error": error.message})

    def _spec(self, name, version, label):
        spec = serving_apis().model_pb2.ModelSpec(name=name)
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        return spec

    def _get(self):
        try:
            match = _GET_PATH.match(self.path.split("?")[0])
            if match is None:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Malformed request: GET {self.path}")
            name, version, label, metadata = match.groups()
            spec = self._spec(name, version, label)
            if metadata:
                response = model_metadata(self.manager, spec, ["signature_def"])
                signature_map = serving_apis().get_model_metadata_pb2.SignatureDefMap()
                response.metadata["signature_def"].Unpack(signature_map)
                self._send(200, {
                    "model_spec": {"name": name, "signature_name": "",
                                   "version": str(response.model_spec.version.value)},
                    "metadata": {"signature_def": json_format.MessageToDict(
                        signature_map, preserving_proto_field_name=True)}})
            else:
                self._send(200, _status_json(self.manager.status(spec)))
        except ServingError as error:
            self._send_error(error)

    def _post(self):
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > self.max_body_bytes:
                self.close_connection = True
                # Read (and drop) a body of up to 8x the cap before answering, so a client still
                # sending gets the error response instead of a broken pipe; larger ones are cut.
                remaining = length if length <= 8 * self.max_body_bytes else 0
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"Request body of {length} bytes is larger than the "
                                   f"{self.max_body_bytes} this server accepts")
            raw = self.rfile.read(length) if length else b""
            match = _PREDICT_PATH.match(self.path.split("?")[0])
            if match is None:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Malformed request: POST {self.path}")
            name, version, label, method = match.groups()
            if method.lower() != "predict":
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"{method} is not served by these models")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as error:
                raise _JsonError(f"JSON Parse error: {error}") from None
            signature_name = body.get("signature_name", "") if isinstance(body, dict) else ""
            if not isinstance(signature_name, str):
                raise _JsonError("'signature_name' key must be a string value.")
            loaded = self.manager.resolve(self._spec(name, version, label))
            _, signature = loaded.signature(signature_name)
            inputs, layout = _rest_inputs(body, signature)
            _, outputs = loaded.predict(signature_name, inputs)
            self._send(200, _rest_outputs(outputs, layout))
        except ServingError as error:
            self._send_error(error)


# ----------------------------------------------------------------------------- the server


class ModelServer:
    """gRPC + REST endpoints over a ModelManager; `start()`, then `stop()` (graceful)."""

    def __init__(self, config, port=8500, rest_port=8501, host="127.0.0.1", batching=None,
                 poll_interval=1.0, max_message_mb=64, warmup=True, grpc_threads=16):
        self.manager = ModelManager(config, poll_interval=poll_interval, batching=batching,
                                    warmup=warmup)
        self.host, self.port, self.rest_port = host, port, rest_port
        self._max_bytes = int(max_message_mb * (1 << 20))
        self._grpc_threads = grpc_threads
        self._grpc = None
        self._http = None
        self._http_thread = None

    def start(self):
        apis = serving_apis()
        self.manager.start()
        options = [("grpc.max_receive_message_length", self._max_bytes),
                   ("grpc.max_send_message_length", self._max_bytes),
                   ("grpc.so_reuseport", 0)]
        self._grpc = grpc.server(futures.ThreadPoolExecutor(self._grpc_threads), options=options)
        apis.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.manager), self._grpc)
        apis.model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.manager), self._grpc)
        self.port = self._grpc.add_insecure_port(f"{self.host}:{self.port}")
        if self.port == 0:
            raise OSError(f"Cannot bind gRPC to {self.host}:{self.port}")
        self._grpc.start()
        if self.rest_port is not None:
            self._rest_in_flight = _Counter()
            handler = type("RestHandler", (_RestHandler,),
                           {"manager": self.manager, "max_body_bytes": self._max_bytes,
                            "in_flight": self._rest_in_flight})
            self._http = ThreadingHTTPServer((self.host, self.rest_port), handler)
            # Idle keep-alive connections must not hold up shutdown; requests being answered do.
            self._http.daemon_threads = True
            self._http.block_on_close = False
            self.rest_port = self._http.server_address[1]
            self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True,
                                                 name="rest")
            self._http_thread.start()
        log.info("serving gRPC on %s:%d, REST on %s:%s", self.host, self.port, self.host,
                 self.rest_port)
        return self

    def stop(self, grace=10.0):
        """Stop accepting, let in-flight requests finish (up to `grace` s), unload the models."""
        started = time.monotonic()
        if self._http is not None:
            self._http.shutdown()  # no new connections
            self._http.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        if self._http is not None:
            self._rest_in_flight.wait_idle(max(0.0, grace - (time.monotonic() - started)))
        self.manager.stop()


def serve(model_base_path=None, port=8500, rest_port=8501, host="127.0.0.1",
          model_config_file=None, batching_parameters_file=None, poll_interval=1.0,
          max_message_mb=64, warmup=True):
    """Run the server until SIGTERM / SIGINT, then shut down gracefully (the `zoo serve` command)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if model_config_file:
        config = load_model_config(model_config_file)
    elif model_base_path:
        config = config_from_base_dir(model_base_path)
    else:
        raise ValueError("Expected a model base directory or --model-config-file.")
    batching = load_batching_parameters(batching_parameters_file) if batching_parameters_file \
        else None
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set())
                for number in (signal.SIGTERM, signal.SIGINT)}
    server = ModelServer(config, port=port, rest_port=rest_port, host=host, batching=batching,
                         poll_interval=poll_interval, max_message_mb=max_message_mb,
                         warmup=warmup).start()
    print(f"serving gRPC on {host}:{server.port}, REST on {host}:{server.rest_port}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
        log.info("shutting down: finishing in-flight requests")
        server.stop()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    log.info("stopped")

"""Serving: the client against a TF-Serving-compatible server, and the production config files.

The conformance tests run against every server kind: this package's server (`zoo serve`) and
the real `tensorflow_model_server` when it is on PATH (skipped otherwise, and the skip says so).
All on loopback, ephemeral ports, one server per kind for the module.
"""

import base64
import io
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import text_format

from benchmarks.common import MODEL, model_config
from serving.client import EncoderClient
from serving.launch import KINDS, REAL_SERVER, copy_version, start_server

SERVING_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serving")


# ----------------------------------------------------------------------------- config files


def test_model_config_parses():
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(SERVING_DIR, "models.config")) as handle:
        config = text_format.Parse(handle.read(), model_server_config_pb2.ModelServerConfig())
    models = {model.name: model for model in config.model_config_list.config}
    assert set(models) == {"sketch_gan_merchant", "thin_gan_merchant", "sketch_gan_omniglot"}
    for name, model in models.items():
        assert model.base_path == f"/models/{name}"
        assert model.model_version_policy.WhichOneof("policy_choice") is not None
    labels = dict(models["sketch_gan_merchant"].version_labels)
    assert set(labels) == {"stable", "canary"}
    assert set(labels.values()) <= set(models["sketch_gan_merchant"].model_version_policy
                                       .specific.versions)


def test_batching_and_monitoring_configs_parse():
    from serving.protos import BatchingParameters, MonitoringConfig

    with open(os.path.join(SERVING_DIR, "batching.config")) as handle:
        batching = text_format.Parse(handle.read(), BatchingParameters())
    assert batching.max_batch_size.value >= EncoderClient.__init__.__defaults__[5]  # batch_size
    # Set, and valid for TF Serving (0: a batch runs as soon as a batch thread is free).
    assert batching.HasField("batch_timeout_micros") and batching.batch_timeout_micros.value >= 0
    assert batching.num_batch_threads.value > 0 and batching.max_enqueued_batches.value > 0
    with open(os.path.join(SERVING_DIR, "monitoring.config")) as handle:
        monitoring = text_format.Parse(handle.read(), MonitoringConfig())
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_size: 3", BatchingParameters())  # a wrapper, not an int


def test_compose_file_runs_tf_serving_with_the_configs():
    with open(os.path.join(SERVING_DIR, "compose.yaml")) as handle:
        text = handle.read()
    try:
        import yaml
    except ImportError:  # PyYAML is optional: check the text
        service = {"image": "tensorflow/serving" if "image: tensorflow/serving" in text else "",
                   "command": [text], "volumes": [text]}
    else:
        (service,) = yaml.safe_load(text)["services"].values()
    assert service["image"].startswith("tensorflow/serving")
    flags = " ".join(service["command"])
    for flag in ("--model_config_file=/config/models.config", "--enable_batching",
                 "--batching_parameters_file=/config/batching.config",
                 "--monitoring_config_file=/config/monitoring.config", "--enable_model_warmup",
                 "--port=8500", "--rest_api_port=8501"):
        assert flag in flags
    mounted = " ".join(service["volumes"])
    for name in ("models.config", "batching.config", "monitoring.config"):
        assert f"./{name}:/config/{name}" in mounted
        assert os.path.exists(os.path.join(SERVING_DIR, name))


def test_single_model_mode_serves_every_model_found(tmp_path):
    from serving.server import config_from_base_dir

    for path in ("a_model/1", "a_model/3", "b_model/2", "not_a_model/notes", ".hidden/1"):
        os.makedirs(tmp_path / path)
    config = config_from_base_dir(str(tmp_path))
    models = {model.name: model for model in config.model_config_list.config}
    assert set(models) == {"a_model", "b_model"}
    assert models["a_model"].model_version_policy.latest.num_versions == 1
    with pytest.raises(ValueError, match="No models"):
        config_from_base_dir(str(tmp_path / "not_a_model"))


def test_client_imports_without_tensorflow_runtime():
    import subprocess
    import sys

    code = ("import sys; import serving.client; "
            "assert 'tensorflow.python' not in sys.modules and 'zoo' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(SERVING_DIR))


def test_batch_queue_merges_concurrent_calls_and_attributes_errors():
    from serving.protos import BatchingParameters
    from serving.server import BatchQueue, ServingError

    batch_sizes = []

    def run(array):
        batch_sizes.append(len(array))
        if np.any(array < 0):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "negative input")
        return {"double": array * 2}

    parameters = text_format.Parse("max_batch_size { value: 8 } batch_timeout_micros { value: "
                                   "200000 }", BatchingParameters())
    queue = BatchQueue(run, parameters, threading.BoundedSemaphore(1))
    inputs = [np.full((2, 3), index, np.float32) for index in range(4)] + [-np.ones((1, 3))]
    results = [None] * len(inputs)

    def call(index):
        try:
            results[index] = queue.submit(inputs[index])
        except ServingError as error:
            results[index] = error

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(4):
        np.testing.assert_array_equal(results[index]["double"], inputs[index] * 2)
    assert results[4].code == grpc.StatusCode.INVALID_ARGUMENT  # only the bad call fails
    assert max(batch_sizes) > 2  # calls were merged
    with pytest.raises(ServingError, match="larger than maximum input batch size"):
        queue.submit(np.zeros((20, 3)))  # larger than a batch: refused, as by TF Serving
    queue.close()
    assert len(queue.submit(np.zeros((1, 3)))["double"]) == 1  # after close: runs unbatched


def test_lone_task_runs_on_its_own_thread_and_queued_tasks_finish_on_close():
    from serving.protos import BatchingParameters
    from serving.server import BatchQueue

    threads = []

    def run(array):
        threads.append(threading.get_ident())
        return {"same": array}

    parameters = text_format.Parse("max_batch_size { value: 4 } batch_timeout_micros { value: 0 }",
                                   BatchingParameters())
    queue = BatchQueue(run, parameters, threading.BoundedSemaphore(1))
    np.testing.assert_array_equal(queue.submit(np.ones((1, 2)))["same"], np.ones((1, 2)))
    assert threads == [threading.get_ident()]  # no hand-off to a batch thread
    slow = BatchQueue(run, text_format.Parse("max_batch_size { value: 4 } batch_timeout_micros "
                                             "{ value: 600000000 }", BatchingParameters()),
                      threading.BoundedSemaphore(1))
    results = []
    waiting = threading.Thread(target=lambda: results.append(slow.submit(np.zeros((1, 2)))))
    waiting.start()
    for _ in range(3000):  # until it is queued, waiting out the (10 min) timeout
        if slow._pending:
            break
        time.sleep(0.01)
    slow.close()  # runs it now
    waiting.join()
    assert results[0]["same"].shape == (1, 2)


# Arrays for the wire fast paths: every numeric dtype, special floats, empty, scalar, strided.
WIRE_ARRAYS = [
    np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
    np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4e38], np.float32),
    np.random.default_rng(0).random((3, 5)),  # float64
    np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2],  # not contiguous
    np.zeros((0, 64), np.float32), np.float32(2.5), np.float64(-7.0),
    np.arange(6, dtype=np.uint8).reshape(2, 3), np.array([-3, 70000], np.int32),
    np.array([2**40, -1], np.int64), np.array([True, False]), np.array([0.5, -2], np.float16),
    np.array([1, 65535], np.uint16), np.array([[b"a\0", b""]], dtype=object),
]


def _reference_tensor_proto(array, as_fields):
    """TensorProto of `array` built through protobuf's field API (the slow reference)."""
    from tensorflow.core.framework.tensor_pb2 import TensorProto

    from serving.tensors import DTYPES

    array = np.asarray(array)
    enum = next(enum for enum, (dtype, _, _) in DTYPES.items()
                if (dtype is object) == (array.dtype == object) and np.dtype(dtype) == array.dtype)
    proto = TensorProto(dtype=enum)
    field = DTYPES[enum][1]
    values = array.reshape(-1)
    if enum == 7:
        proto.string_val.extend(values.tolist())
    elif as_fields:
        getattr(proto, field).extend((values.view(np.uint16) if enum == 19 else values).tolist())
    else:
        proto.tensor_content = values.astype(values.dtype.newbyteorder("<")).tobytes()
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize("as_fields", [False, True])
def test_tensor_protos_written_as_bytes_equal_protobufs_own(as_fields):
    from tensorflow.core.framework.tensor_pb2 import TensorProto
    from tensorflow_serving.apis import predict_pb2

    from serving.tensors import fill_tensor_proto, to_tensor_proto

    for array in WIRE_ARRAYS:
        reference = _reference_tensor_proto(array, as_fields)
        fast = to_tensor_proto(array, TensorProto, as_fields=as_fields)
        assert fast == reference and fast.SerializeToString() == reference.SerializeToString()
        response = predict_pb2.PredictResponse()
        fill_tensor_proto(response.outputs["x"], array, as_fields=as_fields)
        assert response.outputs["x"] == reference


def test_tensor_protos_read_as_bytes_equal_protobufs_own():
    from tensorflow.core.framework.tensor_pb2 import TensorProto

    from serving.tensors import to_ndarray

    def reference(proto):  # the values through protobuf's field API, as TensorFlow reads them
        values = np.array(list(proto.float_val or proto.double_val),
                          np.float32 if proto.dtype == 1 else np.float64)
        count = int(np.prod([dim.size for dim in proto.tensor_shape.dim]))
        values = np.concatenate([values, np.repeat(values[-1:], count - len(values))])
        return values.reshape([dim.size for dim in proto.tensor_shape.dim])

    protos = [_reference_tensor_proto(array, True) for array in WIRE_ARRAYS[:7]]
    broadcast = TensorProto(dtype=1, float_val=[4.0])  # one value for the whole shape
    broadcast.tensor_shape.dim.add(size=3)
    partial = TensorProto(dtype=2, double_val=[1.0, 2.0])  # TensorFlow repeats the last value
    partial.tensor_shape.dim.add(size=4)
    for proto in protos + [broadcast, partial]:
        for copy in (True, False):
            got = to_ndarray(proto, copy=copy)
            np.testing.assert_array_equal(got, reference(proto))
            assert got.dtype == reference(proto).dtype and got.shape == reference(proto).shape
        assert to_ndarray(proto).flags.writeable
    # Values sent unpacked, or in two runs (valid protobuf), take the field API path.
    unpacked = TensorProto.FromString(b"\x08\x01\x12\x04\x12\x02\x08\x02"
                                      b"\x2d\x00\x00\x80\x3f\x2d\x00\x00\x00\x40")
    two_runs = TensorProto.FromString(b"\x08\x01\x12\x04\x12\x02\x08\x02"
                                      b"\x2a\x04\x00\x00\x80\x3f\x2a\x04\x00\x00\x00\x40")
    for proto in (unpacked, two_runs):
        np.testing.assert_array_equal(to_ndarray(proto), [1.0, 2.0])


def test_length_delimited_run():
    from serving.wire import field_header, length_delimited_run

    payload = b"\x01\x02\x03\x04"
    # a varint, a fixed64 and a fixed32 field before the run
    message = b"\x08\x96\x01\x11" + bytes(8) + b"\x1d" + bytes(4) + field_header(5, 4) + payload
    offset, size = length_delimited_run(message, 5)
    assert message[offset:offset + size] == payload
    assert length_delimited_run(message, 6) == (0, 0)  # absent
    assert length_delimited_run(message + field_header(5, 4) + payload, 5) is None  # two runs
    assert length_delimited_run(message + b"\x2d" + bytes(4), 5) is None  # also unpacked


def test_client_serializes_requests_as_protobuf_does():
    from serving.tensors import to_tensor_proto

    for pin in ({}, {"version": 3}, {"version_label": "stable"}):
        client = EncoderClient("127.0.0.1:1", MODEL, **pin)
        request_class = client._apis.predict_pb2.PredictRequest
        for array in WIRE_ARRAYS:
            for output_filter in ((), ("embedding", "bits")):
                reference = request_class(model_spec=client._model_spec("sig"),
                                          output_filter=list(output_filter))
                reference.inputs["images"].CopyFrom(to_tensor_proto(array, client._tensor_class))
                got = client._request_bytes("sig", {"images": array}, output_filter)
                assert got == reference.SerializeToString()
        two = {"a": WIRE_ARRAYS[0], "b": WIRE_ARRAYS[-1]}
        reference = request_class(model_spec=client._model_spec(""))
        for alias, array in two.items():
            reference.inputs[alias].CopyFrom(to_tensor_proto(array, client._tensor_class))
        assert request_class.FromString(client._request_bytes("", two)) == reference
        client.close()


_FAULTS_SCRIPT = """
import resource, sys
from serving.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def call():  # a served call's buffers: the request, a copy of it, the response
    request = bytearray(1 << 20)
    copy = bytes(request)
    del request
    response = bytearray(256 << 10)
    del copy, response
for _ in range(3):  # reach the steady state
    call()
before = faults()
for _ in range(50):
    call()
print(faults() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="glibc's malloc on Linux")
def test_keep_freed_memory_stops_request_buffers_faulting_in_again():
    import subprocess
    import sys

    def page_faults(mode):
        result = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], check=True,
                                capture_output=True, text=True, cwd=os.path.dirname(SERVING_DIR))
        return int(result.stdout)

    # glibc's defaults hand freed buffers back, and each call faults most of its MiB in again
    assert page_faults("default") >= 50 * 200
    # kept in the heap, the next call's buffers reuse the same pages
    assert page_faults("keep") < 2000


def test_serve_command_keeps_freed_memory_unless_told_not_to():
    from serving.launch import _command

    config = os.path.join(SERVING_DIR, "models.config")
    assert "--no-keep-memory" not in _command("python", config, 1, 2, None, 1.0)
    assert "--no-keep-memory" in _command("python", config, 1, 2, None, 1.0, keep_memory=False)


def test_echo_server_answers_like_the_model_without_running_one():
    """benchmarks.grpc_echo, the serving benchmark's no-model floor: the client's call
    round-trips and gets [N, D] float32 back, as from the served encoder."""
    from benchmarks.serving_throughput import _start_echo

    process, target = _start_echo(48, keep_memory=True)
    try:
        with EncoderClient(target, MODEL) as client:
            for rows in (1, 64):
                embeddings = client.encode(np.zeros((rows, 64, 64, 1), np.float32))
                assert embeddings.shape == (rows, 48) and embeddings.dtype == np.float32
    finally:
        process.terminate()
        process.wait()


def test_grpc_floor_echoes_raw_bytes_of_the_sizes_asked():
    """benchmarks.grpc_floor, the Python gRPC floor without protobuf: its server answers every
    call with the response size it was started with, whatever the request."""
    from benchmarks.grpc_floor import start_server

    process, channel, call = start_server(3000)
    try:
        assert len(call(b"\1" * 70000)) == 3000 and len(call(b"")) == 3000
    finally:
        channel.close()
        process.terminate()
        process.wait()


def test_throughput_benchmark_times_one_image_calls_in_turns():
    """The one-image latencies of the in-process and the served path are taken in slices that
    take turns, one image a call, so that a spell of load falls on both."""
    from benchmarks.serving_throughput import _latencies_ms

    order = []
    latencies = _latencies_ms([lambda image: order.append(("a", image.shape)),
                               lambda image: order.append(("b", image.shape))],
                              np.zeros((3, 64, 64, 1)), requests=6, rounds=3)
    assert latencies.shape == (2, 6) and (latencies >= 0).all()
    assert order == ([("a", (1, 64, 64, 1))] * 2 + [("b", (1, 64, 64, 1))] * 2) * 3


def test_throughput_benchmark_idles_before_each_one_image_call(monkeypatch):
    """--idle-ms: every timed one-image call of either path comes after that idle time."""
    from benchmarks import serving_throughput

    events = []
    monkeypatch.setattr(serving_throughput.time, "sleep", lambda s: events.append(("idle", s)))
    serving_throughput._latencies_ms([lambda image: events.append("a"),
                                      lambda image: events.append("b")],
                                     np.zeros((3, 64, 64, 1)), requests=2, rounds=1,
                                     idle_seconds=0.1)
    assert events == [("idle", 0.1), "a"] * 2 + [("idle", 0.1), "b"] * 2


def test_throughput_benchmark_runs_several_clients_at_once():
    """serving_throughput --clients N: the N callers of a slice run at the same time, and every
    call is counted."""
    import threading
    import time

    from benchmarks.serving_throughput import _calls

    lock, running, most, started = threading.Lock(), [0], [0], []

    def caller(batch):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            started.append(batch)
        time.sleep(0.02)  # a call in flight, which the other callers overlap
        with lock:
            running[0] -= 1

    calls, seconds = _calls([caller] * 3, "batch", seconds=0.2)
    assert most[0] == 3 and calls == len(started) and seconds >= 0.2
    most[0] = 0
    assert _calls([caller], "batch", seconds=0.1)[0] >= 1 and most[0] == 1  # one: sequential


def test_payload_cap_and_empty_config():
    from tensorflow_serving.config import model_server_config_pb2

    from serving.launch import free_port
    from serving.server import ModelServer

    server = ModelServer(model_server_config_pb2.ModelServerConfig(), port=free_port(),
                         rest_port=0, max_message_mb=1, poll_interval=0).start()
    try:
        with EncoderClient(f"127.0.0.1:{server.port}", MODEL, max_message_mb=8) as client:
            error = rpc_error(lambda: client.encode(np.zeros((80, 64, 64, 1), np.float32)))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # 1.3 MB > 1 MB
            error = rpc_error(lambda: client.encode(np.zeros((1, 64, 64, 1), np.float32)))
            assert error.code() == grpc.StatusCode.NOT_FOUND
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict",
            data=b" " * (2 << 20), method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == 429 and "larger than" in json.loads(caught.value.read())["error"]
    finally:
        server.stop()


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code):
        self._code = code

    def code(self):
        return self._code


def test_client_retries_only_unavailable_with_backoff():
    client = EncoderClient("127.0.0.1:1", MODEL, retries=3, backoff=0.01)
    calls = []

    def flaky(request, timeout):
        calls.append(timeout)
        if len(calls) < 3:
            raise _FakeRpcError(grpc.StatusCode.UNAVAILABLE)
        return "answer"

    assert client._call(flaky, None) == "answer" and calls == [10.0] * 3

    def invalid(request, timeout):
        calls.append(timeout)
        raise _FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT)

    calls.clear()
    with pytest.raises(grpc.RpcError):
        client._call(invalid, None)
    assert len(calls) == 1  # not retried
    with EncoderClient("127.0.0.1:1", MODEL, retries=2, backoff=0.01, timeout=2) as nowhere:
        error = rpc_error(nowhere.status)  # nothing listens there: UNAVAILABLE after 3 tries
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ValueError, match="version or version_label"):
        EncoderClient("127.0.0.1:1", MODEL, version=1, version_label="stable")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def encoder():
    import zoo

    return zoo.load(MODEL)


@pytest.fixture(scope="module")
def exported(encoder, tmp_path_factory):
    base_dir = tmp_path_factory.mktemp("exported")
    encoder.export(str(base_dir), 1)
    return base_dir


@pytest.fixture(scope="module")
def images():
    from zoo.data.merchant_marks import make_corpus

    return np.asarray(make_corpus(4, 3, seed=11).images, np.float32).reshape(-1, 64, 64, 1)


@pytest.fixture(scope="module", params=KINDS)
def server(request, exported, tmp_path_factory):
    """A server of each kind over its own copy of the models: versions 1 and 2 (same weights),
    labels stable -> 1 and canary -> 2, policy `all`, batching on, 1 s file-system polling."""
    kind = request.param
    if kind == REAL_SERVER and shutil.which(REAL_SERVER) is None:
        pytest.skip(f"{REAL_SERVER} not on PATH")
    base_dir = tmp_path_factory.mktemp(f"models_{kind}")
    model_dir = base_dir / MODEL
    shutil.copytree(exported / MODEL, model_dir)
    copy_version(str(model_dir), 1, 2)
    config = base_dir / "models.config"
    config.write_text(model_config(MODEL, model_dir))  # labels stable -> 1, canary -> 2
    handle = start_server(kind, str(config), {MODEL: [1, 2]}, poll=1.0,
                          batching_parameters_file=os.path.join(SERVING_DIR, "batching.config"),
                          log_dir=str(base_dir))
    handle.model_dir = str(model_dir)
    yield handle
    handle.stop()


@pytest.fixture()
def client(server):
    with EncoderClient(server.target, MODEL, timeout=60) as client:
        yield client


def rest(server, path, body=None):
    """(HTTP status, JSON) of a GET (body None) or POST to the server's REST API."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(server.rest_url + path, data=data,
                                     method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def png_bytes(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rpc_error(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# ----------------------------------------------------------------------------- conformance


def test_signatures_run_through_the_flat_caller_with_the_public_calls_results(exported, images):
    """The served TF2 path calls each signature's graph directly (servable._flat_caller): the
    same outputs as the public signature call, and inputs it does not take (a wrong shape or
    dtype) go to the public call, which refuses them as before."""
    import tensorflow as tf

    from serving.errors import ServingError
    from serving.servable import LoadedVersion

    loaded = LoadedVersion(MODEL, 1, str(exported / MODEL / "1"))
    runner = loaded._runner  # noqa: SLF001
    inputs = {"images": tf.constant(images[:3]),
              "pixels": tf.constant(np.round(images[:3] * 255).astype(np.uint8)),
              "image_bytes": tf.constant([png_bytes(image) for image in images[:3]])}
    signatures = {"serving_default": "images", "hash": "images", "encode_pixels": "pixels",
                  "hash_pixels": "pixels", "encode_images": "image_bytes",
                  "hash_images": "image_bytes"}
    assert set(runner._flat_callers) == set(signatures)  # noqa: SLF001
    for name, caller in runner._flat_callers.items():  # noqa: SLF001
        assert caller is not None, name
        function = runner._functions[name]  # noqa: SLF001
        tensors = {signatures[name]: inputs[signatures[name]]}
        flat, public = caller(tensors), function(**tensors)
        assert sorted(flat) == sorted(public)
        for alias in public:
            np.testing.assert_array_equal(flat[alias].numpy(), public[alias].numpy())
    caller = runner._flat_callers["serving_default"]  # noqa: SLF001
    assert caller({"images": tf.zeros((1, 32, 32, 1))}) is None
    assert caller({"images": tf.zeros((1, 64, 64), tf.float32)}) is None
    assert caller({"images": tf.zeros((1, 64, 64, 1), tf.float64)}) is None
    assert caller({"pixels": tf.zeros((1, 64, 64, 1))}) is None
    with pytest.raises(ServingError) as raised:
        loaded.run("serving_default", {"images": np.zeros((1, 32, 32, 1), np.float32)})
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_flat_caller_feeds_several_inputs_by_name(tmp_path):
    """A signature of two inputs gets each tensor in its own parameter, whatever order the
    request's map lists them in."""
    import tensorflow as tf

    from serving.servable import LoadedVersion

    class Difference(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="b"),
                                      tf.TensorSpec([None], tf.float32, name="a")])
        def difference(self, b, a):
            return {"out": self.scale * (b - a[:, None])}

    module = Difference()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={
        "serving_default": module.difference})
    loaded = LoadedVersion("difference", 1, str(tmp_path / "1"))
    caller = loaded._runner._flat_callers["serving_default"]  # noqa: SLF001
    a, b = np.array([1.0, 10.0], np.float32), np.array([[2, 3], [4, 5]], np.float32)
    assert caller({"a": tf.constant(a), "b": tf.constant(b)}) is not None  # the fast path runs
    for inputs in ({"a": a, "b": b}, {"b": b, "a": a}):
        out = loaded.run("serving_default", inputs)["out"]
        np.testing.assert_array_equal(out, 3.0 * (b - a[:, None]))


def test_status_available(server, client):
    states = client.status()
    assert states[1] == "AVAILABLE" and states[2] == "AVAILABLE"
    status, payload = rest(server, f"/v1/models/{MODEL}/versions/1")
    assert status == 200
    assert payload["model_version_status"][0]["state"] == "AVAILABLE"
    assert payload["model_version_status"][0]["status"]["error_code"] == "OK"


def test_encode_matches_in_process(client, encoder, images):
    expected = encoder.encode(images)
    np.testing.assert_allclose(client.encode(images), expected, atol=1e-5)
    uint8 = np.round(images * 255).astype(np.uint8)
    np.testing.assert_allclose(client.encode(uint8), encoder.encode(uint8.astype(np.float32) / 255),
                               atol=1e-5)
    np.testing.assert_allclose(client.encode(images[..., 0]), expected, atol=1e-5)  # [N, H, W]


def test_uint8_images_travel_as_pixels_with_the_float_results(client, images):
    """uint8 images go to the *_pixels signatures (a quarter of the bytes) and get, to the bit,
    what the same images as float32 / 255 get from serving_default and hash."""
    pixels = np.round(images * 255).astype(np.uint8)
    floats = pixels.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(client.encode(pixels), client.encode(floats))
    np.testing.assert_array_equal(client.hash(pixels).bits, client.hash(floats).bits)
    assert not client._missing_signatures  # noqa: SLF001 - the pixel signatures answered
    sent = []
    real_call = client._call  # noqa: SLF001

    def recording_call(method, request):
        sent.append(len(request))
        return real_call(method, request)

    client._call = recording_call  # noqa: SLF001
    client.encode(pixels)
    client.encode(floats)
    assert sent[0] < sent[1] / 3  # uint8 on the wire, not float32


def test_rest_takes_pixels_as_integers(server, client, images):
    pixels = np.round(images[:2] * 255).astype(np.uint8)
    status, row = rest(server, f"/v1/models/{MODEL}:predict",
                       {"signature_name": "encode_pixels", "instances": pixels.tolist()})
    assert status == 200
    np.testing.assert_array_equal(np.asarray(row["predictions"], np.float32),
                                  client.encode(pixels))


def test_uint8_images_fall_back_to_float_where_the_model_has_no_pixel_signature(tmp_path):
    """A model exported before the *_pixels signatures existed gets uint8 images as float32,
    and the client stops asking for the missing signature."""
    import tensorflow as tf

    class Mean(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 1], tf.float32)])
        def embed(self, images):
            return {"embedding": tf.reduce_mean(images, axis=[1, 2])}

    module = Mean()
    tf.saved_model.save(module, str(tmp_path / "old" / "1"),
                        signatures={"serving_default": module.embed})
    config = tmp_path / "models.config"
    config.write_text(model_config("old", tmp_path / "old", labels={"stable": 1}))
    server = start_server("python", str(config), {"old": [1]})
    try:
        pixels = np.arange(2 * 64 * 64, dtype=np.int64).reshape(2, 64, 64, 1) % 256
        pixels = pixels.astype(np.uint8)
        with EncoderClient(server.target, "old") as client:
            expected = (pixels.astype(np.float32) / np.float32(255)).mean(axis=(1, 2))
            for _ in range(2):
                np.testing.assert_allclose(client.encode(pixels), expected, rtol=1e-6)
                assert client._missing_signatures == {"encode_pixels"}  # noqa: SLF001
            error = rpc_error(lambda: client.encode(pixels, signature="no_such_signature"))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # not swallowed
    finally:
        server.stop()


def test_large_batches_are_chunked(server, encoder, images):
    with EncoderClient(server.target, MODEL, batch_size=5) as client:
        embeddings = client.encode(images)
        assert len(client.last_versions) == -(-len(images) // 5)
    np.testing.assert_allclose(embeddings, encoder.encode(images), atol=1e-5)


def test_hash_bits_equal_in_process(client, encoder, images):
    codes = client.hash(images)
    expected = encoder.hash(images)
    assert codes.bits.dtype == np.uint8 and codes.bits.shape == expected.bits.shape
    np.testing.assert_array_equal(codes.bits, expected.bits)
    np.testing.assert_array_equal(codes.packed, np.packbits(codes.bits, axis=1))


def test_encode_files_equals_bytes_path(client, images, tmp_path):
    files = [png_bytes(image) for image in images[:4]]
    paths = []
    for index, data in enumerate(files):
        paths.append(tmp_path / f"mark_{index}.png")
        paths[-1].write_bytes(data)
    from_paths = client.encode_files([str(path) for path in paths])
    from_bytes = client.encode_files(files)
    raw = client.predict("encode_images", {"image_bytes": np.array(files, dtype=object)})
    np.testing.assert_allclose(from_paths, from_bytes, atol=1e-6)
    np.testing.assert_allclose(from_bytes, raw["embedding"], atol=1e-6)
    assert from_paths.shape == (4, client.encode(images[:1]).shape[1])
    np.testing.assert_allclose(np.linalg.norm(from_paths, axis=1), 1.0, atol=1e-4)


def test_encode_files_any_format(client, images):
    """The same marks as PNG, as BMP (its data ends in NUL bytes) and as an RGB scan with dark
    ink on light paper give the same embeddings."""
    from PIL import Image

    def encoded(image, fmt, light_paper):
        pixels = np.round(image[..., 0] * 255).astype(np.uint8)
        picture = Image.fromarray(255 - pixels if light_paper else pixels)
        buffer = io.BytesIO()
        (picture.convert("RGB") if light_paper else picture).save(buffer, format=fmt)
        return buffer.getvalue()

    png = client.encode_files([encoded(image, "PNG", False) for image in images[:3]])
    bmp = client.encode_files([encoded(image, "BMP", False) for image in images[:3]])
    scan = client.encode_files([encoded(image, "PNG", True) for image in images[:3]])
    np.testing.assert_allclose(bmp, png, atol=1e-5)
    np.testing.assert_allclose(scan, png, atol=1e-4)


def test_metadata_lists_the_signatures(server, client):
    metadata = client.metadata()
    signatures = metadata["signature_def"]
    for name in ("serving_default", "hash", "encode_images", "hash_images"):
        assert name in signatures
    assert signatures["serving_default"]["inputs"]["images"] == ("float", [-1, 64, 64, 1])
    assert set(signatures["hash"]["outputs"]) == {"bits", "codes_bytes"}
    assert signatures["encode_images"]["inputs"]["image_bytes"][0] == "string"
    assert metadata["model_spec"]["name"] == MODEL
    status, payload = rest(server, f"/v1/models/{MODEL}/labels/stable/metadata")
    assert status == 200 and payload["model_spec"]["version"] == "1"
    assert "hash" in payload["metadata"]["signature_def"]["signature_def"]


def test_rest_row_and_columnar_formats(server, client, images):
    batch = images[:2]
    expected = client.encode(batch)
    status, row = rest(server, f"/v1/models/{MODEL}:predict", {"instances": batch.tolist()})
    assert status == 200
    np.testing.assert_allclose(row["predictions"], expected, atol=1e-5)
    status, columnar = rest(server, f"/v1/models/{MODEL}/versions/2:predict",
                            {"inputs": {"images": batch.tolist()}})
    assert status == 200
    np.testing.assert_allclose(columnar["outputs"], expected, atol=1e-5)
    # Several outputs: rows of {alias: value}; `_bytes` outputs base64-encoded.
    codes = client.hash(batch)
    status, hashed = rest(server, f"/v1/models/{MODEL}:predict",
                          {"signature_name": "hash", "instances": batch.tolist()})
    assert status == 200
    for index, prediction in enumerate(hashed["predictions"]):
        assert prediction["bits"] == codes.bits[index].tolist()
        assert base64.b64decode(prediction["codes_bytes"]["b64"]) == codes.packed[index].tobytes()
    status, hashed = rest(server, f"/v1/models/{MODEL}:predict",
                          {"signature_name": "hash", "inputs": batch.tolist()})
    assert status == 200 and hashed["outputs"]["bits"] == codes.bits.tolist()
    # b64 in: image files.
    files = [png_bytes(image) for image in batch]
    status, from_files = rest(server, f"/v1/models/{MODEL}:predict", {
        "signature_name": "encode_images",
        "instances": [{"b64": base64.b64encode(data).decode()} for data in files]})
    assert status == 200
    np.testing.assert_allclose(from_files["predictions"], client.encode_files(files), atol=1e-5)


def test_not_found_errors(server, images):
    one = images[:1]
    with EncoderClient(server.target, "no_such_model") as client:
        error = rpc_error(lambda: client.encode(one))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "Servable not found for request: Latest(no_such_model)" in error.details()
        assert rpc_error(client.status).code() == grpc.StatusCode.NOT_FOUND
    with EncoderClient(server.target, MODEL, version=99) as client:
        error = rpc_error(lambda: client.encode(one))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert f"Specific({MODEL}, 99)" in error.details()
    with EncoderClient(server.target, MODEL, version_label="nightly") as client:
        error = rpc_error(lambda: client.encode(one))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # as TF Serving answers
        assert "Unrecognized servable version label: nightly" in error.details()
    with EncoderClient(server.target, MODEL) as client:
        error = rpc_error(lambda: client.encode(one, signature="no_such_signature"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # as TF Serving answers
        assert 'Serving signature key "no_such_signature" not found' in error.details()
    status, payload = rest(server, "/v1/models/no_such_model:predict", {"instances": one.tolist()})
    assert status == 404 and "Servable not found" in payload["error"]
    status, payload = rest(server, f"/v1/models/{MODEL}/versions/99")
    assert status == 404 and "error" in payload
    status, payload = rest(server, f"/v1/models/{MODEL}/labels/nightly:predict",
                           {"instances": one.tolist()})
    assert status == 400 and "Unrecognized servable version label" in payload["error"]


def test_invalid_argument_errors(server, client, images):
    one = images[:1]
    error = rpc_error(lambda: client.predict("serving_default", {"image": one}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images" in error.details()  # the message lists what the signature expects
    error = rpc_error(lambda: client.predict("serving_default", {"images": one, "extra": one}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "images" in error.details()
    error = rpc_error(lambda: client.predict("serving_default",
                                             {"images": np.ones((1, 64, 64, 1), np.uint8)}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(lambda: client.predict("serving_default",
                                             {"images": np.zeros((1, 32, 32, 1), np.float32)}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(lambda: client.predict("hash", {"images": one}, output_filter=["code"]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "bits" in error.details()
    error = rpc_error(lambda: client.encode_files([b"not an image at all"]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(lambda: client.encode(np.full((1, 64, 64, 1), 7.0, np.float32)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "[0, 1]" in error.details()
    # output_filter keeps only what is asked for.
    assert set(client.predict("hash", {"images": one}, output_filter=["bits"])) == {"bits"}
    status, payload = rest(server, f"/v1/models/{MODEL}:predict",
                           {"inputs": {"image": one.tolist()}})
    assert status == 400 and "images" in payload["error"]
    status, payload = rest(server, f"/v1/models/{MODEL}:predict",
                           {"signature_name": "encode_images", "instances": [{"b64": "@@"}]})
    assert status == 400 and "error" in payload
    status, payload = rest(server, f"/v1/models/{MODEL}:predict", b"{not json")
    assert status == 400 and "error" in payload


def test_version_labels_and_specific_versions(server, client, images):
    expected = client.encode(images[:2])
    for kwargs, version in (({"version": 1}, 1), ({"version": 2}, 2),
                            ({"version_label": "stable"}, 1), ({"version_label": "canary"}, 2)):
        with EncoderClient(server.target, MODEL, **kwargs) as pinned:
            np.testing.assert_allclose(pinned.encode(images[:2]), expected, atol=1e-5)
            assert pinned.last_versions == [version]
            assert pinned.metadata()["model_spec"]["version"] == version
            assert set(pinned.status()) == {version}


def test_reload_config_moves_a_label(server, images):
    from serving.protos import serving_apis
    from tensorflow_serving.config import model_server_config_pb2

    apis = serving_apis()
    stub = apis.model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.target))
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(model_config(MODEL, server.model_dir), config)

    def reload(stable):
        config.model_config_list.config[0].version_labels["stable"] = stable
        request = apis.model_management_pb2.ReloadConfigRequest(config=config)
        return stub.HandleReloadConfigRequest(request, timeout=120).status

    try:
        assert reload(2).error_code == 0
        with EncoderClient(server.target, MODEL, version_label="stable") as client:
            client.encode(images[:1])
            assert client.last_versions == [2]
    finally:
        assert reload(1).error_code == 0


def wait_for_version(client, version, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.status().get(version) == "AVAILABLE":
            return
        time.sleep(0.5)
    raise AssertionError(f"version {version} not AVAILABLE after {timeout} s: {client.status()}")


def test_new_version_is_picked_up_by_polling(server, client, images):
    # A half-written version (the exporter's hidden temp dir) is never picked up.
    hidden = os.path.join(server.model_dir, ".3.incomplete-test")
    shutil.copytree(os.path.join(server.model_dir, "1"), hidden)
    os.remove(os.path.join(hidden, "saved_model.pb"))
    copy_version(server.model_dir, 1, 3)
    wait_for_version(client, 3)
    client.encode(images[:1])
    assert client.last_versions == [3]  # the latest version answers unpinned requests
    assert all(state == "AVAILABLE" for state in client.status().values())
    shutil.rmtree(hidden)
    # A removed version is unloaded; the latest then answers again.
    shutil.rmtree(os.path.join(server.model_dir, "3"))
    deadline = time.monotonic() + 60
    while client.status().get(3) == "AVAILABLE" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.status().get(3) in (None, "END")
    client.encode(images[:1])
    assert client.last_versions == [2]


def test_load_with_version_swap(server, encoder, images):
    from benchmarks.serving_load import run_load

    reference = encoder.encode(images)
    published = {1, 2, 3}

    def swap():
        copy_version(server.model_dir, 2, 4)
        published.add(4)
        return 4

    result = run_load(server.target, MODEL, images, reference, clients=8, requests=60, swap=swap)
    assert result["failures"] == []
    assert len(result["versions"]) >= 8 * 60 and result["requests"] == len(result["versions"])
    assert set(result["versions"]) <= published  # every answer came from a complete version
    # The version published mid-run answered part of the load (the clients went on until it
    # had answered one request per client).
    assert result["published"] == 4 and result["answered_by_published"] >= 8


def test_fuzz_scaled(server, encoder, images):
    from benchmarks.serving_fuzz import run_fuzz

    result = run_fuzz(server.target, server.rest_url, MODEL, images, encoder.encode(images),
                      requests=300, seed=1)
    assert result["mismatches"] == []
    assert result["valid"] == 30 and result["valid_failures"] == []
    assert len(result["counts"]) >= 20  # most kinds of malformed request were sent


def test_graceful_shutdown(server, images):
    """Last: SIGTERM while requests are in flight; they finish and the server exits 0."""
    results = []

    def call():
        try:
            with EncoderClient(server.target, MODEL, timeout=120, retries=0) as client:
                client.encode(np.repeat(images, 20, axis=0))
            results.append("ok")
        except grpc.RpcError as error:
            results.append(error.code())

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    code = server.stop(timeout=120)
    for thread in threads:
        thread.join()
    assert code == 0, server.log()[-2000:]
    assert "ok" in results and set(results) <= {"ok", grpc.StatusCode.UNAVAILABLE}

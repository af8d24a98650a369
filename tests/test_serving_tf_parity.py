"""`zoo serve` against TF Serving's own expectations.

The expectations are those of tensorflow/serving's integration tests
(tensorflow_serving/model_servers/tensorflow_model_server_test.py) on its half_plus_two test
model (servables/tensorflow/testdata/saved_model_half_plus_two.py): y = 0.5 x + 2, with a
Predict signature on the tensor x, and Classify / Regress signatures on serialized tf.Example.
TF Serving's files stay out of this repository: the tests build the same model (a TF1 graph
saved as version 00000123, as saved_model_half_plus_two_cpu is) and its TF2 variant, start the
zoo's server the way TF Serving's tests start tensorflow_model_server (--model_name=default
--model_base_path=...), and assert the answers those tests assert.

The eleven expectations: GetModelStatus over gRPC and REST, GetModelMetadata over gRPC and REST
(the full JSON, empty fields included), Predict over gRPC, REST row and REST columnar, Classify
and Regress over gRPC and REST. MultiInference, the Prometheus endpoint and the TF2 model's
Classify / Regress are checked too.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest

from serving.launch import REPO_ROOT, free_port

RPC_TIMEOUT = 20.0
VERSION = 123


# ----------------------------------------------------------------------------- the model


def _build_half_plus_two_tf1(export_dir):
    """TF Serving's saved_model_half_plus_two (TF1 graph, CPU): y = a x + b, y2 = a x + c,
    y3 = a2 x2 + c2 with a = 0.5, b = 2, c = 3; x and x2 parsed from serialized tf.Example."""
    import tensorflow as tf

    v1 = tf.compat.v1
    constants = v1.saved_model.signature_constants
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
        a, b, c = (v1.Variable(value, name=name) for value, name in ((0.5, "a"), (2.0, "b"),
                                                                     (3.0, "c")))
        # No shape, as in TF Serving's testdata (its metadata shows an unknown rank).
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = v1.io.parse_example(serialized, {
            "x": v1.io.FixedLenFeature([1], tf.float32),
            "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = tf.identity(features["x"], name="x")
        x2 = tf.identity(features["x2"], name="x2")
        for parsed in (x, x2):
            parsed.set_shape([None, 1])  # parse_example's shape on a vector of examples
        y = tf.identity(a * x + b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        a2, c2 = v1.Variable(0.5, name="a2"), v1.Variable(3.0, name="c2")
        y3 = tf.identity(a2 * x2 + c2, name="y3")
        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def

        def regression(inputs, outputs):
            return build({"inputs": info(inputs)}, {"outputs": info(outputs)},
                         constants.REGRESS_METHOD_NAME)

        signatures = {
            "regress_x_to_y": regression(serialized, y),
            "regress_x_to_y2": regression(serialized, y2),
            "regress_x2_to_y3": regression(x2, y3),
            "classify_x_to_y": build({"inputs": info(serialized)}, {"scores": info(y)},
                                     constants.CLASSIFY_METHOD_NAME),
            "serving_default": build({"x": info(x)}, {"y": info(y)},
                                     constants.PREDICT_METHOD_NAME),
        }
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
        builder.save()


def _build_half_plus_two_tf2(export_dir):
    """TF Serving's HalfPlusTwoModel (native TF2): every signature's method_name is predict."""
    import tensorflow as tf

    spec = {"x": tf.io.FixedLenFeature([1], tf.float32),
            "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = tf.Variable(0.5, name="a"), tf.Variable(2.0, name="b")

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_xy(self, inputs):
            return {"outputs": self.a * tf.io.parse_example(inputs, spec)["x"] + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify_xy(self, inputs):
            return {"scores": self.a * tf.io.parse_example(inputs, spec)["x"] + self.b}

    model = HalfPlusTwo()
    tf.saved_model.save(model, export_dir, signatures={
        "serving_default": model.predict, "regress_x_to_y": model.regress_xy,
        "classify_x_to_y": model.classify_xy})


def _tensor_info(name, dtype, dims):
    """TensorInfo JSON as TF Serving's REST API prints it (every field, int64 as strings)."""
    shape = ({"dim": [], "unknown_rank": True} if dims is None else
             {"dim": [{"size": str(size), "name": ""} for size in dims], "unknown_rank": False})
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _signature(method, inputs, outputs):
    return {"inputs": inputs, "outputs": outputs, "method_name": f"tensorflow/serving/{method}",
            "defaults": {}}


# TF Serving's half_plus_two_model_metadata.json, written out from the model's definition.
EXPECTED_METADATA = {
    "model_spec": {"name": "default", "signature_name": "", "version": "123"},
    "metadata": {"signature_def": {"signature_def": {
        "regress_x2_to_y3": _signature(
            "regress", {"inputs": _tensor_info("x2:0", "DT_FLOAT", [-1, 1])},
            {"outputs": _tensor_info("y3:0", "DT_FLOAT", [-1, 1])}),
        "serving_default": _signature(
            "predict", {"x": _tensor_info("x:0", "DT_FLOAT", [-1, 1])},
            {"y": _tensor_info("y:0", "DT_FLOAT", [-1, 1])}),
        "classify_x_to_y": _signature(
            "classify", {"inputs": _tensor_info("tf_example:0", "DT_STRING", None)},
            {"scores": _tensor_info("y:0", "DT_FLOAT", [-1, 1])}),
        "regress_x_to_y2": _signature(
            "regress", {"inputs": _tensor_info("tf_example:0", "DT_STRING", None)},
            {"outputs": _tensor_info("y2:0", "DT_FLOAT", [-1, 1])}),
        "regress_x_to_y": _signature(
            "regress", {"inputs": _tensor_info("tf_example:0", "DT_STRING", None)},
            {"outputs": _tensor_info("y:0", "DT_FLOAT", [-1, 1])}),
    }}},
}


# ----------------------------------------------------------------------------- the server


class _Server:
    def __init__(self, process, port, rest_port, log_path):
        self.process, self.log_path = process, log_path
        self.address = f"localhost:{port}"
        self.rest = f"localhost:{rest_port}"

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()


def _run_server(tmp_path, *flags):
    """Start `zoo serve` with tensorflow_model_server's flags, as TF Serving's RunServer does,
    and wait as its WaitForServerReady does (a Predict for a missing model answers 'Servable')."""
    from serving.protos import serving_apis

    port, rest_port = free_port(), free_port()
    log_path = str(tmp_path / f"server_{port}.log")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "zoo", "serve", f"--port={port}",
             f"--rest_api_port={rest_port}", *flags],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    server = _Server(process, port, rest_port, log_path)
    apis = serving_apis()
    stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(server.address))
    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = "intentionally_missing_model"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"zoo serve exited with {process.returncode}:\n{server.log()}")
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"zoo serve not ready after 120 s:\n{server.log()}")
        try:
            stub.Predict(request, 2)
        except grpc.RpcError as error:
            if "Servable" in (error.details() or ""):
                break
        time.sleep(0.3)
    # TF Serving answers once the model is loaded; wait for version 123 to be AVAILABLE.
    status_request = apis.get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = flags_value(flags, "--model_name") or "half_plus_two"
    models = apis.model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.address))
    while True:
        try:
            status = models.GetModelStatus(status_request, 2)
            if any(entry.state == 30 for entry in status.model_version_status):
                return server
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"model not AVAILABLE after 120 s:\n{server.log()}")
        time.sleep(0.3)


def flags_value(flags, name):
    for flag in flags:
        if flag.startswith(name + "="):
            return flag.split("=", 1)[1]
    return None


def _stop(server):
    server.process.terminate()
    try:
        assert server.process.wait(60) == 0, server.log()[-2000:]
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved_model_half_plus_two_cpu")
    _build_half_plus_two_tf1(str(path / "00000123"))
    return str(path)


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    """`zoo serve` started with TF Serving's own command line for the half_plus_two tests, plus
    a monitoring config (TF Serving's testPrometheusEndpoint)."""
    tmp_path = tmp_path_factory.mktemp("server")
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text('prometheus_config { enable: true, path: '
                          '"/monitoring/prometheus/metrics" }\n')
    handle = _run_server(tmp_path, "--model_name=default", f"--model_base_path={model_path}",
                         f"--monitoring_config_file={monitoring}")
    yield handle
    _stop(handle)


def _apis():
    from serving.protos import serving_apis

    return serving_apis()


def _prediction_stub(server):
    return _apis().prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(server.address))


def call_rest(url, request=None):
    """(status, body) of TF Serving's CallREST: POST JSON when `request` is given, else GET."""
    data = json.dumps(request).encode() if request is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def verify_predict_request(test_case_server, expected_output, expected_version,
                           model_name="default", specify_output=True, batch_input=False,
                           signature_name="serving_default"):
    """TF Serving's VerifyPredictRequest: x = [2.0] as float_val, y read from float_val."""
    apis = _apis()
    from tensorflow.core.framework import types_pb2

    request = apis.predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    result = _prediction_stub(test_case_server).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


def verify_model_spec(spec, name, signature_name, version):
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature_name, version)


def _example_input(input_proto, x=2.0):
    example = input_proto.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([x])


# ----------------------------------------------------------------------------- gRPC


def test_get_model_status(server):
    apis = _apis()
    request = apis.get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    stub = apis.model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.address))
    result = stub.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == VERSION
    assert result.model_version_status[0].status.error_code == 0
    assert result.model_version_status[0].state == \
        apis.get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_get_model_metadata(server):
    apis = _apis()
    request = apis.get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = _prediction_stub(server).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == VERSION
    assert len(result.metadata) == 1 and "signature_def" in result.metadata


def test_predict(server):
    """TF Serving's _TestPredict: x of shape [1] against a signature whose TensorInfo says
    [-1, 1] is the graph's business, and the graph accepts it."""
    verify_predict_request(server, expected_output=3.0, expected_version=VERSION)
    verify_predict_request(server, expected_output=3.0, specify_output=False,
                           expected_version=VERSION)
    verify_predict_request(server, expected_output=3.0, batch_input=True,
                           expected_version=VERSION)


def test_classify(server):
    request = _apis().classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    _example_input(request.input)
    result = _prediction_stub(server).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", VERSION)


def test_regress(server):
    request = _apis().regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    _example_input(request.input)
    result = _prediction_stub(server).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", VERSION)


def test_multi_inference(server):
    apis = _apis()
    request = apis.inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = f"tensorflow/serving/{method}"
    _example_input(request.input)
    result = _prediction_stub(server).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for index, task in enumerate(request.tasks):
        verify_model_spec(result.results[index].model_spec, "default",
                          task.model_spec.signature_name, VERSION)


def test_classify_and_regress_errors_name_what_was_expected(server):
    apis = _apis()
    stub = _prediction_stub(server)
    request = apis.regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    with pytest.raises(grpc.RpcError) as caught:  # no examples
        stub.Regress(request, RPC_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Input is empty" in caught.value.details()
    request.model_spec.signature_name = "no_such_signature"
    _example_input(request.input)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Regress(request, RPC_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "No signature was found with the name: no_such_signature" in caught.value.details()
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples[0].features.feature["x"].Clear()
    request.input.example_list.examples[0].features.feature["x"].int64_list.value.append(2)
    with pytest.raises(grpc.RpcError) as caught:  # the graph's own parse error
        stub.Regress(request, RPC_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x" in caught.value.details()
    request = apis.classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"  # serving_default has input x, not "inputs"
    _example_input(request.input)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Classify(request, RPC_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "{inputs}" in caught.value.details()


# ----------------------------------------------------------------------------- REST


def test_classify_rest(server):
    status, body = call_rest(f"http://{server.rest}/v1/models/default:classify",
                             {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert status == 200 and json.loads(body) == {"results": [[["", 3.0]]]}


def test_regress_rest(server):
    status, body = call_rest(f"http://{server.rest}/v1/models/default:regress",
                             {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert status == 200 and json.loads(body) == {"results": [3.0]}
    # A context is merged into each example; x2 defaults to 0 (y3 = 0.5 x2 + 3).
    status, body = call_rest(f"http://{server.rest}/v1/models/default:regress",
                             {"signature_name": "regress_x_to_y2", "context": {"x": 4.0},
                              "examples": [{"x2": 1.0}, {"x2": 2.0}]})
    assert status == 200 and json.loads(body) == {"results": [5.0, 5.0]}
    status, body = call_rest(f"http://{server.rest}/v1/models/default:regress",
                             {"signature_name": "regress_x_to_y", "examples": []})
    assert status == 400 and "'examples' value is an empty array" in json.loads(body)["error"]


def test_predict_rest(server):
    status, body = call_rest(f"http://{server.rest}/v1/models/default:predict",
                             {"instances": [2.0, 3.0, 4.0]})
    assert status == 200 and json.loads(body) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(server):
    status, body = call_rest(f"http://{server.rest}/v1/models/default:predict",
                             {"inputs": [2.0, 3.0, 4.0]})
    assert status == 200 and json.loads(body) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(server):
    status, body = call_rest(f"http://{server.rest}/v1/models/default")
    assert status == 200
    assert json.loads(body) == {"model_version_status": [{
        "version": "123", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}


def test_get_model_metadata_rest(server):
    status, body = call_rest(f"http://{server.rest}/v1/models/default/metadata")
    assert status == 200 and json.loads(body) == EXPECTED_METADATA


def test_prometheus_endpoint(server):
    call_rest(f"http://{server.rest}/v1/models/default:predict", {"instances": [2.0]})
    status, body = call_rest(f"http://{server.rest}/monitoring/prometheus/metrics")
    assert status == 200 and "# TYPE" in body.decode()
    assert 'model_name="default",api="predict",status="OK"' in body.decode()


# ----------------------------------------------------------------------------- TF2 model


def test_tf2_model_classify_and_regress(tmp_path):
    """TF Serving's testClassifyTf2 / testRegressTf2 / the TF2 Predict, on the native TF2
    half_plus_two (whose signatures all say method_name predict), started from a model config
    file with batching, as TF Serving's testGoodModelConfig and batching tests start it."""
    base = tmp_path / "saved_model_half_plus_two_tf2_cpu"
    _build_half_plus_two_tf2(str(base / "00000123"))
    config = tmp_path / "good_model_config.conf"
    config.write_text(f'model_config_list: {{ config: {{ name: "half_plus_two", '
                      f'base_path: "{base}", model_platform: "tensorflow" }} }}\n')
    batching = os.path.join(REPO_ROOT, "serving", "batching.config")
    server = _run_server(tmp_path, f"--model_config_file={config}", "--enable_batching",
                         f"--batching_parameters_file={batching}")
    try:
        verify_predict_request(server, expected_output=3.0, model_name="half_plus_two",
                               expected_version=VERSION)
        apis = _apis()
        stub = _prediction_stub(server)
        request = apis.classification_pb2.ClassificationRequest()
        request.model_spec.name = "half_plus_two"
        request.model_spec.signature_name = "classify_x_to_y"
        _example_input(request.input)
        result = stub.Classify(request, RPC_TIMEOUT)
        assert result.result.classifications[0].classes[0].score == 3.0
        request = apis.regression_pb2.RegressionRequest()
        request.model_spec.name = "half_plus_two"
        request.model_spec.signature_name = "regress_x_to_y"
        _example_input(request.input, x=4.0)
        assert stub.Regress(request, RPC_TIMEOUT).result.regressions[0].value == 4.0
        status, body = call_rest(f"http://{server.rest}/v1/models/half_plus_two:classify",
                                 {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
        assert status == 200 and json.loads(body) == {"results": [[["", 3.0]]]}
    finally:
        _stop(server)


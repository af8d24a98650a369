"""TF Serving's gRPC API over a ModelManager: PredictionService and ModelService servicers.

- PredictionService: Predict, Classify, Regress, MultiInference, GetModelMetadata;
- ModelService: GetModelStatus, HandleReloadConfigRequest.

Predict outputs are written to the TensorProto's typed value fields (float_val, string_val,
...), as TF Serving's default (Tensor::AsProtoField) does. `model_metadata` and
`status_response` are shared with the REST API.
"""

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2, status_pb2)

from serving import inference
from serving.errors import ServingError, error_code
from serving.servable import DEFAULT_SIGNATURE
from serving.tensors import TensorParseError, fill_tensor_proto, to_ndarray

__all__ = ["PredictionServicer", "ModelServicer", "model_metadata", "status_response",
           "add_servicers", "MAX_ELEMENTS"]

MAX_ELEMENTS = 1 << 26  # 64 Mi values (256 MiB of float32): larger tensors are refused


def _abort(context, error):
    context.abort(error.code, error.message)


def request_inputs(request_inputs):
    """{alias: TensorProto} -> {alias: ndarray}; INVALID_ARGUMENT for a malformed tensor."""
    inputs = {}
    for alias, proto in request_inputs.items():
        try:
            inputs[alias] = to_ndarray(proto, MAX_ELEMENTS, copy=False)  # read by the graph
        except TensorParseError as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"tensor parsing error: {alias} ({error})") from None
    return inputs


def _set_model_spec(spec, loaded, signature_name=None):
    spec.name = loaded.name
    spec.version.value = loaded.version
    if signature_name is not None:
        spec.signature_name = signature_name or DEFAULT_SIGNATURE


def status_response(entries):
    """GetModelStatusResponse of the manager's [(version, VersionState)]."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state in entries:
        response.model_version_status.add(
            version=version, state=state.state,
            status=status_pb2.StatusProto(error_code=state.error_code,
                                          error_message=state.error_message))
    return response


def model_metadata(manager, model_spec, metadata_fields):
    """GetModelMetadataResponse holding the version's SignatureDefMap (TF Serving's one field)."""
    if not metadata_fields:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")
    for field in metadata_fields:
        if field != "signature_def":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Metadata field {field} is not supported")
    loaded = manager.resolve(model_spec)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in loaded.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _set_model_spec(response.model_spec, loaded)
    response.metadata["signature_def"].CopyFrom(packed)
    return response


class PredictionServicer:
    """PredictionService: Predict, Classify, Regress, MultiInference and GetModelMetadata."""

    def __init__(self, manager, metrics=None):
        self._manager = manager
        self._metrics = metrics

    def _count(self, api, name, error=None):
        if self._metrics is not None:
            self._metrics.count(api, name, error)

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        try:
            loaded = self._manager.resolve(request.model_spec)
            signature_name, outputs = loaded.predict(
                request.model_spec.signature_name, request_inputs(request.inputs),
                request.output_filter)
        except ServingError as error:
            self._count("predict", request.model_spec.name, error)
            _abort(context, error)
        response = predict_pb2.PredictResponse()
        _set_model_spec(response.model_spec, loaded, signature_name)
        for alias, value in outputs.items():
            fill_tensor_proto(response.outputs[alias], value, as_fields=True)
        self._count("predict", loaded.name)
        return response

    def _example_method(self, method, run, request, response, context):
        """Classify or Regress: run `run` (inference.classify / .regress) into response.result."""
        try:
            loaded = self._manager.resolve(request.model_spec)
            run(loaded, request.model_spec.signature_name, request.input, response.result)
        except ServingError as error:
            self._count(method, request.model_spec.name, error)
            _abort(context, error)
        _set_model_spec(response.model_spec, loaded, request.model_spec.signature_name)
        self._count(method, loaded.name)
        return response

    def Classify(self, request, context):  # noqa: N802
        return self._example_method("classify", inference.classify, request,
                                    classification_pb2.ClassificationResponse(), context)

    def Regress(self, request, context):  # noqa: N802
        return self._example_method("regress", inference.regress, request,
                                    regression_pb2.RegressionResponse(), context)

    def MultiInference(self, request, context):  # noqa: N802
        response = inference_pb2.MultiInferenceResponse()
        name = request.tasks[0].model_spec.name if request.tasks else ""
        try:
            inference.multi_inference(self._manager, request, response)
        except ServingError as error:
            self._count("multi_inference", name, error)
            _abort(context, error)
        self._count("multi_inference", name)
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            return model_metadata(self._manager, request.model_spec, request.metadata_field)
        except ServingError as error:
            _abort(context, error)


class ModelServicer:
    """ModelService: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager):
        self._manager = manager

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            return status_response(self._manager.status(request.model_spec))
        except ServingError as error:
            _abort(context, error)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        response = model_management_pb2.ReloadConfigResponse()
        if not request.config.HasField("model_config_list"):
            response.status.CopyFrom(status_pb2.StatusProto(
                error_code=error_code(grpc.StatusCode.INVALID_ARGUMENT),
                error_message="ServerCore is being used with a model_config_list, but the new "
                              "config is not a model_config_list"))
            return response
        try:
            self._manager.reload_config(request.config)
            response.status.error_code = 0
        except ServingError as error:
            response.status.CopyFrom(status_pb2.StatusProto(error_code=error_code(error.code),
                                                            error_message=error.message))
        return response


def add_servicers(server, manager, metrics=None):
    """Register both services of `manager` on a grpc.Server."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager), server)

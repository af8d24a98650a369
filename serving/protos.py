"""Protocol buffers for serving, without importing TensorFlow where that can be avoided.

`serving_apis()` imports the tensorflow-serving-api modules for the client. The server imports
them the ordinary way (`from tensorflow_serving.apis import predict_pb2`): it runs TensorFlow
anyway. The client cannot: the generated code imports `tensorflow.core.framework.tensor_pb2`
and friends, which only the full TensorFlow wheel ships (tensorflow-serving-api 2.21.0 depends on
it and has no proto-only variant), and a plain import of those runs `tensorflow/__init__.py`
(about 6 s and the whole runtime), which the client must not need. So where TensorFlow is not
imported yet, the protos are loaded under a placeholder `tensorflow` package that only knows its
folder, and the placeholder is removed again, so a later `import tensorflow` runs as usual and
finds the same proto modules in sys.modules. Any failure falls back to the ordinary import.

`BatchingParameters` and `MonitoringConfig` are the messages TF Serving reads from
`--batching_parameters_file` and `--monitoring_config_file`. The tensorflow-serving-api wheel
does not ship their modules (tensorflow_serving/servables/tensorflow/session_bundle_config.proto,
tensorflow_serving/config/monitoring_config.proto), so the two messages are declared here with the
same package, names, types and field numbers, enough to parse and check the text files.
"""

import importlib
import importlib.util
import sys
import types

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["serving_apis", "BatchingParameters", "MonitoringConfig", "PrometheusConfig"]

_API_MODULES = ("model_pb2", "predict_pb2", "get_model_metadata_pb2", "get_model_status_pb2",
                "model_management_pb2", "prediction_service_pb2_grpc", "model_service_pb2_grpc",
                "prediction_log_pb2", "classification_pb2", "regression_pb2", "inference_pb2",
                "input_pb2")
_apis = None


def _import_apis():
    return types.SimpleNamespace(**{
        name: importlib.import_module(f"tensorflow_serving.apis.{name}") for name in _API_MODULES})


def serving_apis():
    """A namespace of the tensorflow_serving.apis modules used here (model_pb2, predict_pb2, ...)."""
    global _apis
    if _apis is not None:
        return _apis
    if "tensorflow" in sys.modules:
        _apis = _import_apis()
        return _apis
    spec = importlib.util.find_spec("tensorflow")
    placeholder = types.ModuleType("tensorflow")
    placeholder.__path__ = list(spec.submodule_search_locations or [])
    sys.modules["tensorflow"] = placeholder
    try:
        _apis = _import_apis()
    except Exception:  # noqa: BLE001 - anything odd: import the ordinary way
        for name in [name for name in sys.modules if name.startswith("tensorflow_serving.apis")]:
            del sys.modules[name]
        if sys.modules.get("tensorflow") is placeholder:
            del sys.modules["tensorflow"]
        _apis = _import_apis()
    finally:
        if sys.modules.get("tensorflow") is placeholder:
            del sys.modules["tensorflow"]
    return _apis


# ----------------------------------------------------------------------------- config messages

_F = descriptor_pb2.FieldDescriptorProto


def _field(name, number, kind, type_name=None, repeated=False):
    field = _F(name=name, number=number, type=kind,
               label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    return field


def _build_messages():
    from google.protobuf import wrappers_pb2  # noqa: F401 - registers wrappers.proto in the pool

    pool = descriptor_pool.Default()
    int64_value, string_value = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    message = _F.TYPE_MESSAGE
    try:
        batching_file = pool.FindFileByName(
            "tensorflow_serving/servables/tensorflow/session_bundle_config.proto")
    except KeyError:
        # Transcribed from tensorflow_serving/servables/tensorflow/session_bundle_config.proto.
        batching = descriptor_pb2.DescriptorProto(name="BatchingParameters", field=[
            _field("max_batch_size", 1, message, int64_value),
            _field("batch_timeout_micros", 2, message, int64_value),
            _field("max_enqueued_batches", 3, message, int64_value),
            _field("num_batch_threads", 4, message, int64_value),
            _field("thread_pool_name", 5, message, string_value),
            _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
            _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
        ])
        batching_file = pool.Add(descriptor_pb2.FileDescriptorProto(
            name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
            package="tensorflow.serving", syntax="proto3",
            dependency=["google/protobuf/wrappers.proto"], message_type=[batching]))
        batching_file = pool.FindFileByName(batching_file.name)
    try:
        monitoring_file = pool.FindFileByName("tensorflow_serving/config/monitoring_config.proto")
    except KeyError:
        prometheus = descriptor_pb2.DescriptorProto(name="PrometheusConfig", field=[
            _field("enable", 1, _F.TYPE_BOOL), _field("path", 2, _F.TYPE_STRING)])
        monitoring = descriptor_pb2.DescriptorProto(name="MonitoringConfig", field=[
            _field("prometheus_config", 1, message, ".tensorflow.serving.PrometheusConfig")])
        pool.Add(descriptor_pb2.FileDescriptorProto(
            name="tensorflow_serving/config/monitoring_config.proto",
            package="tensorflow.serving", syntax="proto3",
            message_type=[prometheus, monitoring]))
        monitoring_file = pool.FindFileByName("tensorflow_serving/config/monitoring_config.proto")
    return (message_factory.GetMessageClass(batching_file.message_types_by_name["BatchingParameters"]),
            message_factory.GetMessageClass(monitoring_file.message_types_by_name["MonitoringConfig"]),
            message_factory.GetMessageClass(monitoring_file.message_types_by_name["PrometheusConfig"]))


BatchingParameters, MonitoringConfig, PrometheusConfig = _build_messages()

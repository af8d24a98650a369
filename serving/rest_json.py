"""TF Serving's REST JSON formats, to and from arrays and protos (no HTTP here).

- Predict: row ("instances") and columnar ("inputs") requests into {alias: ndarray} for a
  signature, and outputs back as "predictions" / "outputs"; {"b64": ...} for binary values,
  string outputs whose alias ends in `_bytes` base64-encoded;
- Classify / Regress: "examples" (and an optional "context") into a tf.Example `Input` proto
  with TF Serving's typing (a JSON float -> float_list, an integer or bool -> int64_list, a
  string or {"b64"} -> bytes_list), and results as "results";
- GetModelStatus / GetModelMetadata responses as the JSON TF Serving prints, every field shown
  (empty strings, false, empty maps), int64 as strings, enums by name.
"""

import base64
import binascii
import json

import grpc
import numpy as np
from google.protobuf import json_format

from serving.errors import ServingError
from serving.servable import unknown_alias
from serving.tensors import DTYPES

__all__ = ["JsonError", "predict_inputs", "predict_outputs", "examples_input",
           "classify_json", "regress_json", "status_json", "metadata_json"]


class JsonError(ServingError):
    """A request body TF Serving's JSON parser refuses (INVALID_ARGUMENT)."""

    def __init__(self, message):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)


def _decode_value(value, is_string):
    """One JSON value (nested lists) -> nested lists of python values; {"b64": ...} decoded."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            if not is_string:
                raise JsonError("JSON Value: {\"b64\": ...} given for a non-string tensor")
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise JsonError(f"Unable to base64 decode: {value['b64'][:40]!r}") from None
        raise JsonError("JSON Value: an object where a value or list was expected")
    if isinstance(value, list):
        return [_decode_value(item, is_string) for item in value]
    if is_string:
        if not isinstance(value, str):
            raise JsonError(f"JSON Value: {json.dumps(value)[:40]} Type: {type(value).__name__} "
                             f"is not of expected type: string")
        return value.encode()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JsonError(f"JSON Value: {json.dumps(value)[:40]} is not of expected type: number")
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
        raise JsonError(f"Failed to convert JSON value to a {name} tensor: {error}") from None


def _named_inputs(values, signature, aliases):
    """{alias: JSON values} -> {alias: array}, refusing aliases the signature lacks."""
    inputs = {}
    for alias, value in values.items():
        info = signature.inputs.get(alias)
        if info is None:
            raise unknown_alias(alias, aliases)
        inputs[alias] = _json_array(value, info)
    return inputs


def predict_inputs(body, signature):
    if not isinstance(body, dict):
        raise JsonError("JSON Parse error: the request body must be a JSON object")
    if ("instances" in body) == ("inputs" in body):
        raise JsonError("Missing 'inputs' or 'instances' key" if "instances" not in body else
                         "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                         "keys exist")
    aliases = sorted(signature.inputs)
    if "inputs" in body:
        value = body["inputs"]
        if isinstance(value, dict) and not set(value) == {"b64"}:
            return _named_inputs(value, signature, aliases), "columnar"
        if len(aliases) != 1:
            raise JsonError(f"Expected an object with the inputs {{{','.join(aliases)}}}")
        return {aliases[0]: _json_array(value, signature.inputs[aliases[0]])}, "columnar"
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise JsonError("Expecting 'instances' to be an list/array with at least one element")
    named = all(isinstance(row, dict) and set(row) != {"b64"} for row in instances)
    if not named:
        if len(aliases) != 1:
            raise JsonError(f"Expecting an object with the inputs {{{','.join(aliases)}}} in "
                             f"each of 'instances'")
        return {aliases[0]: _json_array(instances, signature.inputs[aliases[0]])}, "row"
    keys = set(instances[0])
    columns = {}
    for index, row in enumerate(instances):
        if set(row) != keys:
            raise JsonError(f"Failed to process element: {index} of 'instances' list. JSON "
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


def predict_outputs(outputs, layout):
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


def _message_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def status_json(response):
    """A GetModelStatusResponse as TF Serving's REST API prints it."""
    return _message_json(response)


def metadata_json(response):
    """A GetModelMetadataResponse as TF Serving's REST API prints it: the model spec and the
    SignatureDefMap unpacked under metadata.signature_def."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return {"model_spec": _message_json(response.model_spec),
            "metadata": {"signature_def": _message_json(signature_map)}}


def _feature(name, content, feature):
    values = content if isinstance(content, list) else [content]
    for value in values:
        if isinstance(value, bool) or (isinstance(value, int) and not isinstance(value, bool)):
            kind, value = "int64_list", int(value)
            if not -(1 << 63) <= value < (1 << 63):
                raise JsonError(f"Feature: {name} has uint64_t element. Only int64_t is "
                                f"supported.")
        elif isinstance(value, float):
            kind = "float_list"
        elif isinstance(value, str):
            kind, value = "bytes_list", value.encode()
        elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            kind, value = "bytes_list", _decode_value(value, True)
        else:
            raise JsonError(f"Feature: {name} has element with unexpected JSON type: "
                            f"{type(value).__name__}")
        current = feature.WhichOneof("kind")
        if current not in (None, kind):
            raise JsonError(f"Unexpected element type in feature: {name} expecting type: "
                            f"{current.split('_')[0]}")
        getattr(feature, kind).value.append(value)


def _example(value, example):
    if not isinstance(value, dict):
        raise JsonError(f"Example must be JSON object but got JSON {type(value).__name__}")
    for name, content in value.items():
        _feature(name, content, example.features.feature[name])


def examples_input(body, method):
    """A classify / regress JSON body -> (signature_name, tensorflow.serving.Input)."""
    from tensorflow_serving.apis import input_pb2

    if not isinstance(body, dict):
        raise JsonError("JSON Parse error: the request body must be a JSON object")
    signature_name = body.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise JsonError("'signature_name' key must be a string value.")
    request_input = input_pb2.Input()
    examples = body.get("examples")
    if examples is None:
        raise JsonError(f"When method is {method}, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise JsonError("Expecting 'examples' value to be an list/array")
    if not examples:
        raise JsonError("'examples' value is an empty array")
    if "context" in body:
        _example(body["context"], request_input.example_list_with_context.context)
        target = request_input.example_list_with_context.examples
    else:
        target = request_input.example_list.examples
    for value in examples:
        _example(value, target.add())
    return signature_name, request_input


def classify_json(result):
    """A ClassificationResult as {"results": [[[label, score], ...], ...]}."""
    return {"results": [[[entry.label, entry.score] for entry in classifications.classes]
                        for classifications in result.classifications]}


def regress_json(result):
    """A RegressionResult as {"results": [value, ...]}."""
    return {"results": [regression.value for regression in result.regressions]}

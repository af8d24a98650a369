"""Classify, Regress and MultiInference on tf.Example signatures, as TF Serving does them.

The request's `Input` (example_list, or example_list_with_context whose context is merged into
every example) is serialized into a string tensor [N] fed to the signature's one input
("inputs"). Classify fetches "classes" (string [N, K]) and/or "scores" (float [N, K]); Regress
fetches "outputs" (float [N] or [N, 1]). Signatures and results are checked as TF Serving's
classifier.cc and regressor.cc check them, with their messages. The signature's method_name is
not checked, as tensorflow_model_server does not by default
(--enable_signature_method_name_check=false): TF2 SavedModels mark every signature "predict".
"""

import grpc
import numpy as np

from serving.errors import ServingError

__all__ = ["classify", "regress", "multi_inference", "CLASSIFY_METHOD", "REGRESS_METHOD"]

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def _invalid(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def serialized_examples(input_proto):
    """An Input proto -> object ndarray [N] of serialized tf.Example."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = [example.SerializeToString()
                    for example in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        # Serialized protos concatenate as a merge: each example extends the context.
        context = input_proto.example_list_with_context.context.SerializeToString()
        examples = [context + example.SerializeToString()
                    for example in input_proto.example_list_with_context.examples]
    else:
        examples = []
    if not examples:
        raise _invalid("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


def _signature(loaded, signature_name, method):
    signature_name, signature = loaded.signature(signature_name, grpc.StatusCode.INVALID_ARGUMENT)
    kind = "classification" if method == CLASSIFY_METHOD else "regression"
    if len(signature.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    alias = "inputs"
    if alias not in signature.inputs:
        raise _invalid(f"No {kind} inputs found in SignatureDef: inputs are "
                       f"{{{','.join(sorted(signature.inputs))}}}, expected {{inputs}}")
    return signature_name, signature


def classify(loaded, signature_name, input_proto, result=None):
    """ClassificationResult (filled into `result` if given) of a LoadedVersion's signature."""
    from tensorflow_serving.apis import classification_pb2

    signature_name, signature = _signature(loaded, signature_name, CLASSIFY_METHOD)
    if len(signature.outputs) not in (1, 2):
        raise _invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    fetches = [alias for alias in ("classes", "scores") if alias in signature.outputs]
    if not fetches:
        raise _invalid('Expected classification signature outputs to contain at least one of '
                       f'"classes" or "scores". Outputs were: '
                       f'{{{",".join(sorted(signature.outputs))}}}')
    examples = serialized_examples(input_proto)
    outputs = loaded.run(signature_name, {"inputs": examples}, fetches)
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for name, tensor, want in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise _invalid(f"Expected Tensor shape: [batch_size num_classes] but got "
                           f"{list(tensor.shape)}")
        if (tensor.dtype == object) != (want == "DT_STRING") or (
                want == "DT_FLOAT" and tensor.dtype != np.float32):
            raise _invalid(f"Expected {name} Tensor of {want}. Got: {tensor.dtype}")
        if tensor.shape[0] != len(examples):
            raise _invalid(f"Expected {name} output batch size of {len(examples)}. Got: "
                           f"{tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise _invalid(f"Tensors class and score should match in dim_size(1). Got "
                       f"{classes.shape[1]} vs. {scores.shape[1]}")
    result = result if result is not None else classification_pb2.ClassificationResult()
    num_classes = (classes if classes is not None else scores).shape[1]
    for row in range(len(examples)):
        classifications = result.classifications.add()
        for column in range(num_classes):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = bytes(classes[row, column]).decode("utf-8", "replace")
            if scores is not None:
                entry.score = float(scores[row, column])
    return result


def regress(loaded, signature_name, input_proto, result=None):
    """RegressionResult (filled into `result` if given) of a LoadedVersion's signature."""
    from tensorflow_serving.apis import regression_pb2

    signature_name, signature = _signature(loaded, signature_name, REGRESS_METHOD)
    if len(signature.outputs) != 1:
        raise _invalid("Expected one output Tensor.")
    if "outputs" not in signature.outputs:
        raise _invalid(f"No regression outputs found in SignatureDef: outputs are "
                       f"{{{','.join(sorted(signature.outputs))}}}, expected {{outputs}}")
    examples = serialized_examples(input_proto)
    values = loaded.run(signature_name, {"inputs": examples}, ["outputs"])["outputs"]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise _invalid(f"Expected output Tensor shape to be either [batch_size] or "
                       f"[batch_size, 1] but got {list(values.shape)}")
    if values.shape[0] != len(examples):
        raise _invalid(f"Input batch size did not match output batch size: {len(examples)} vs. "
                       f"{values.shape[0]}")
    if values.dtype != np.float32:
        raise _invalid(f"Expected output Tensor of DT_FLOAT.  Got: {values.dtype}")
    result = result if result is not None else regression_pb2.RegressionResult()
    for value in values.reshape(-1):
        result.regressions.add(value=float(value))
    return result


def multi_inference(manager, request, response):
    """Run each task of a MultiInferenceRequest on the one model version they all name."""
    if not request.tasks:
        raise _invalid("Expected at least one task")
    names = {task.model_spec.name for task in request.tasks}
    if len(names) != 1:
        raise _invalid("All ModelSpecs in a MultiInferenceRequest must access the same model "
                       "name")
    signatures = [task.model_spec.signature_name for task in request.tasks]
    if len(set(signatures)) != len(signatures):
        raise _invalid("Duplicate evaluation of signature: "
                       f"{next(name for name in signatures if signatures.count(name) > 1)}")
    loaded = manager.resolve(request.tasks[0].model_spec)
    for task in request.tasks:
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            classify(loaded, task.model_spec.signature_name, request.input,
                     result.classification_result)
        elif task.method_name == REGRESS_METHOD:
            regress(loaded, task.model_spec.signature_name, request.input,
                    result.regression_result)
        else:
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"Unsupported signature method_name: {task.method_name}")
        result.model_spec.name = loaded.name
        result.model_spec.version.value = loaded.version
        result.model_spec.signature_name = task.model_spec.signature_name or "serving_default"
    return response

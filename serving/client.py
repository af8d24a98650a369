"""A thin gRPC client for the zoo's encoders behind TF Serving (or serving.server).

    from serving.client import EncoderClient
    client = EncoderClient("localhost:8500", "sketch_gan_merchant")
    embeddings = client.encode(images)          # float32 [N, D], L2-normalised
    codes = client.hash(images)                 # codes.bits uint8 [N, K], codes.packed uint8 [N, K/8]
    embeddings = client.encode_files(paths)     # scans of any size / colour, preprocessed in-graph

Only grpcio, numpy and the tensorflow-serving-api stubs are needed: not the zoo package, and
not the TensorFlow runtime (serving.protos loads the stubs' TensorFlow protos on their own).
"""

import os
import random
import time
from collections import namedtuple

import grpc
import numpy as np

from serving.protos import serving_apis
from serving.tensors import tensor_proto_chunks, to_ndarray, to_tensor_proto
from serving.wire import map_entry_chunks

__all__ = ["EncoderClient", "Codes"]

Codes = namedtuple("Codes", ["bits", "packed"])
Codes.__doc__ = "bits: uint8 [N, K] of 0/1; packed: uint8 [N, ceil(K / 8)] (numpy.packbits order)"

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


class EncoderClient:
    """encode / hash / encode_files / metadata / status against one served model.

    target: "host:port" of the gRPC endpoint. version or version_label pins a version (default:
    the latest the server has). Batches larger than `batch_size` are sent in chunks; each call
    has a deadline of `timeout` seconds and is retried `retries` times, with exponential backoff,
    when the server is UNAVAILABLE (starting, restarting, overloaded); other errors are raised
    at once as grpc.RpcError, with the server's status code and message.
    """

    def __init__(self, target, model, version=None, version_label=None, timeout=10.0,
                 max_message_mb=64, retries=3, batch_size=256, backoff=0.1):
        if version is not None and version_label is not None:
            raise ValueError("Pass version or version_label, not both.")
        if batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1, got {batch_size}.")
        self._apis = serving_apis()
        self.target, self.model = target, model
        self.version, self.version_label = version, version_label
        self.timeout, self.retries, self.batch_size, self.backoff = timeout, retries, batch_size, backoff
        max_bytes = int(max_message_mb * (1 << 20))
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.max_receive_message_length", max_bytes)])
        self._predict = self._apis.prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        # Predict with the request serialized by _request_bytes (None: bytes are sent as they are).
        self._predict_serialized = self._channel.unary_unary(
            PREDICT_METHOD, request_serializer=None,
            response_deserializer=self._apis.predict_pb2.PredictResponse.FromString)
        self._models = self._apis.model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._tensor_class = type(self._apis.predict_pb2.PredictRequest().inputs.get_or_create("x"))
        self.last_versions = []  # the version that answered each chunk of the last call
        self._missing_signatures = set()  # *_pixels signatures the model turned out not to have

    # --- public API

    def encode(self, images, signature="serving_default"):
        """float32 [N, D] embeddings of images: [N, H, W, C] or [N, H, W], float in [0, 1] or
        uint8 (0-255). uint8 images travel as they are, a quarter of the bytes of float32, to
        the model's `encode_pixels` signature (`signature` left at its default), which divides
        them by 255 in the graph; models exported without it get them as float32."""
        return self._run_images(signature, "serving_default", "encode_pixels", images)["embedding"]

    def hash(self, images, signature="hash"):
        """Codes(bits uint8 [N, K], packed uint8 [N, ceil(K/8)]) of the images (uint8 images go
        to `hash_pixels` as `encode` sends them to `encode_pixels`)."""
        outputs = self._run_images(signature, "hash", "hash_pixels", images)
        return Codes(outputs["bits"].astype(np.uint8), _unpack_codes(outputs["codes_bytes"]))

    def encode_files(self, paths_or_bytes, signature="encode_images"):
        """Embeddings of image files (paths or bytes: PNG/JPEG/BMP/GIF, any size or colour)."""
        return self._run_chunks(signature, "image_bytes", _as_file_bytes(paths_or_bytes))["embedding"]

    def hash_files(self, paths_or_bytes, signature="hash_images"):
        outputs = self._run_chunks(signature, "image_bytes", _as_file_bytes(paths_or_bytes))
        return Codes(outputs["bits"].astype(np.uint8), _unpack_codes(outputs["codes_bytes"]))

    def predict(self, signature, inputs, output_filter=()):
        """One Predict call: {alias: ndarray} -> {alias: ndarray} (no chunking)."""
        request = self._request_bytes(signature, inputs, output_filter)
        response = self._call(self._predict_serialized, request)
        self.last_versions = [response.model_spec.version.value]
        return {alias: to_ndarray(proto) for alias, proto in response.outputs.items()}

    def metadata(self):
        """{"model_spec": {...}, "signature_def": {signature: {"inputs"/"outputs": {alias:
        (dtype name, shape)}}}} from GetModelMetadata."""
        from serving.tensors import DTYPE_NAMES

        apis = self._apis
        request = apis.get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._model_spec(""), metadata_field=["signature_def"])
        response = self._call(self._predict.GetModelMetadata, request)
        signature_map = apis.get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)

        def describe(infos):
            return {alias: (DTYPE_NAMES.get(info.dtype, str(info.dtype)),
                            [dim.size for dim in info.tensor_shape.dim])
                    for alias, info in infos.items()}

        return {"model_spec": {"name": response.model_spec.name,
                               "version": response.model_spec.version.value},
                "signature_def": {key: {"inputs": describe(signature.inputs),
                                        "outputs": describe(signature.outputs)}
                                  for key, signature in signature_map.signature_def.items()}}

    def status(self):
        """{version: state name} from GetModelStatus, e.g. {1: "AVAILABLE"}."""
        apis = self._apis
        request = apis.get_model_status_pb2.GetModelStatusRequest(model_spec=self._model_spec(None))
        response = self._call(self._models.GetModelStatus, request)
        names = apis.get_model_status_pb2.ModelVersionStatus.State
        return {entry.version: names.Name(entry.state) for entry in response.model_version_status}

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- plumbing

    def _model_spec(self, signature):
        spec = self._apis.model_pb2.ModelSpec(name=self.model)
        if signature is not None:
            spec.signature_name = signature
        if self.version is not None:
            spec.version.value = int(self.version)
        elif self.version_label is not None:
            spec.version_label = self.version_label
        return spec

    def _request_bytes(self, signature, inputs, output_filter=()):
        """The serialized PredictRequest, fields in protobuf's order (model_spec, inputs,
        output_filter). Each input's values are copied once, into these bytes: a request message
        would hold one copy and serialize another."""
        request_class = self._apis.predict_pb2.PredictRequest
        inputs_field = request_class.DESCRIPTOR.fields_by_name["inputs"].number
        chunks = [request_class(model_spec=self._model_spec(signature)).SerializeToString()]
        for alias, value in inputs.items():
            tensor = tensor_proto_chunks(value, self._tensor_class) or [
                to_tensor_proto(value, self._tensor_class).SerializeToString()]
            chunks += map_entry_chunks(inputs_field, alias, tensor)
        chunks.append(request_class(output_filter=list(output_filter)).SerializeToString())
        return b"".join(chunks)

    def _call(self, method, request):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or attempt == self.retries:
                    raise
                delay = self.backoff * (2 ** attempt)
                time.sleep(delay * (0.5 + random.random()))

    def _run_images(self, signature, default, pixel_signature, images):
        """Run `signature` on float images, or `pixel_signature` on uint8 ones when `signature`
        is its `default` and the model has it (found out on the first call, then remembered)."""
        images = _as_images(images)
        if images.dtype == np.uint8:
            if signature == default and pixel_signature not in self._missing_signatures:
                try:
                    return self._run_chunks(pixel_signature, "pixels", images)
                except grpc.RpcError as error:
                    # TF Serving's answer to an unknown signature key (the zoo's server's too).
                    if error.code() != grpc.StatusCode.FAILED_PRECONDITION or \
                            f'"{pixel_signature}" not found' not in (error.details() or ""):
                        raise
                    self._missing_signatures.add(pixel_signature)
            images = images.astype(np.float32) / np.float32(255)
        return self._run_chunks(signature, "images", images)

    def _run_chunks(self, signature, alias, values):
        if len(values) == 0:
            raise ValueError("Expected at least one image.")
        outputs, versions = {}, []
        for start in range(0, len(values), self.batch_size):
            chunk = self.predict(signature, {alias: values[start:start + self.batch_size]})
            versions += self.last_versions
            for name, value in chunk.items():
                outputs.setdefault(name, []).append(value)
        self.last_versions = versions
        return {name: parts[0] if len(parts) == 1 else np.concatenate(parts)
                for name, parts in outputs.items()}


def _as_images(images):
    """[N, H, W, C] uint8 as they are, or float32."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape [N, H, W, C] or [N, H, W]; got {images.shape}.")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind != "f":
        raise ValueError(f"Expected float images in [0, 1] or uint8; got dtype {images.dtype}.")
    return images.astype(np.float32, copy=False)


def _as_file_bytes(items):
    if isinstance(items, (str, bytes, os.PathLike)):
        items = [items]
    values = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        if isinstance(item, (bytes, bytearray)):
            values[index] = bytes(item)
        else:
            with open(item, "rb") as handle:
                values[index] = handle.read()
    return values


def _unpack_codes(codes_bytes):
    return np.stack([np.frombuffer(code, np.uint8) for code in codes_bytes.reshape(-1)])

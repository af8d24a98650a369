"""TF Serving's REST API as a Starlette application (served by uvicorn in serving/server.py).

Routes (NAME[/versions/V | /labels/L] everywhere):
- GET  /v1/models/NAME                 model status (GetModelStatus)
- GET  /v1/models/NAME/metadata        signatures (GetModelMetadata)
- POST /v1/models/NAME:predict         row ("instances") or columnar ("inputs") request
- POST /v1/models/NAME:classify        "examples" (+ "context") of a tf.Example signature
- POST /v1/models/NAME:regress         the same, for a regression signature
- GET  the Prometheus path, when monitoring is enabled
Anything else answers 400 "Malformed request: METHOD PATH", as TF Serving does. Errors are
{"error": message} with the HTTP status of their gRPC code (serving/errors.py). Request bodies
over `max_body_bytes` are refused with 429 RESOURCE_EXHAUSTED; a body up to 8x the cap is read
and dropped first, so a client still sending gets the answer instead of a broken pipe.
"""

import json

import grpc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response
from starlette.routing import Route

from serving import inference
from serving.errors import HTTP_CODES, ServingError
from serving.grpc_api import model_metadata, status_response
from serving.rest_json import (JsonError, classify_json, examples_input, metadata_json,
                               predict_inputs, predict_outputs, regress_json, status_json)

__all__ = ["create_app"]

_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


class _NameConvertor(Convertor):
    """A model name or version label: one path segment without ':'."""

    regex = "[^/:]+"

    def convert(self, value):
        return value

    def to_string(self, value):
        return value


class _MethodConvertor(_NameConvertor):
    """predict, classify or regress, in any case (lower-cased)."""

    regex = "(?i:predict|classify|regress)"

    def convert(self, value):
        return value.lower()


register_url_convertor("servable", _NameConvertor())
register_url_convertor("rest_method", _MethodConvertor())


def _json_response(status, payload, close=False):
    # json.dumps (not Starlette's JSONResponse): NaN and infinity are written, as TF Serving does.
    headers = {"Connection": "close"} if close else None
    return Response(json.dumps(payload), status_code=status, media_type="application/json",
                    headers=headers)


def _error_response(error, close=False):
    return _json_response(HTTP_CODES.get(error.code, 500), {"error": error.message}, close)


def _model_spec(params):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=params["name"])
    if params.get("version") is not None:
        spec.version.value = int(params["version"])
    elif params.get("label") is not None:
        spec.version_label = params["label"]
    return spec


class RestApi:
    """Request handlers over a ModelManager; `routes()` lists them for Starlette."""

    def __init__(self, manager, max_body_bytes=64 << 20, metrics=None):
        self.manager = manager
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    def routes(self):
        routes = []
        for suffix in ("", "/versions/{version:int}", "/labels/{label:servable}"):
            base = "/v1/models/{name:servable}" + suffix
            routes += [Route(base + ":{method:rest_method}", self.post, methods=["POST"]),
                       Route(base + "/metadata", self.metadata, methods=["GET"]),
                       Route(base, self.status, methods=["GET"])]
        if self.metrics is not None:
            routes.append(Route(self.metrics.path, self.prometheus, methods=["GET"]))
        routes.append(Route("/{path:path}", self.malformed, methods=_ALL_METHODS))
        return routes

    # --- GET

    async def status(self, request):
        return await self._answer(lambda: status_json(status_response(
            self.manager.status(_model_spec(request.path_params)))))

    async def metadata(self, request):
        return await self._answer(lambda: metadata_json(model_metadata(
            self.manager, _model_spec(request.path_params), ["signature_def"])))

    async def prometheus(self, request):
        return Response(self.metrics.text(), media_type="text/plain; version=0.0.4")

    async def malformed(self, request):
        return _error_response(ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                            f"Malformed request: {request.method} "
                                            f"{request.url.path}"))

    # --- POST

    async def post(self, request):
        try:
            raw = await self._body(request)
        except ServingError as error:
            return _error_response(error, close=True)
        params = dict(request.path_params)
        handler = {"predict": self._predict, "classify": self._classify,
                   "regress": self._regress}[params["method"]]
        return await self._answer(lambda: handler(params, raw), params["method"], params["name"])

    async def _answer(self, compute, api=None, model=None):
        try:
            payload = await run_in_threadpool(compute)
        except ServingError as error:
            if api is not None and self.metrics is not None:
                self.metrics.count(api, model, error)
            return _error_response(error)
        if api is not None and self.metrics is not None:
            self.metrics.count(api, model)
        return _json_response(200, payload)

    async def _body(self, request):
        declared = request.headers.get("content-length")
        try:
            declared = int(declared) if declared is not None else None
        except ValueError:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Content-Length {declared!r} is not a number") from None
        cap = self.max_body_bytes
        chunks, size = [], 0
        if declared is not None and declared > 8 * cap:
            self._refuse(declared)  # too large even to drain: cut the connection short
        async for chunk in request.stream():
            size += len(chunk)
            if size > 8 * cap:
                break
            if size <= cap and (declared is None or declared <= cap):
                chunks.append(chunk)
        if size > cap or (declared is not None and declared > cap):
            self._refuse(max(size, declared or 0))
        return b"".join(chunks)

    def _refuse(self, length):
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"Request body of {length} bytes is larger than the "
                           f"{self.max_body_bytes} this server accepts")

    @staticmethod
    def _parse(raw):
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise JsonError(f"JSON Parse error: {error}") from None

    def _predict(self, params, raw):
        body = self._parse(raw)
        signature_name = body.get("signature_name", "") if isinstance(body, dict) else ""
        if not isinstance(signature_name, str):
            raise JsonError("'signature_name' key must be a string value.")
        loaded = self.manager.resolve(_model_spec(params))
        _, signature = loaded.signature(signature_name)
        inputs, layout = predict_inputs(body, signature)
        _, outputs = loaded.predict(signature_name, inputs)
        return predict_outputs(outputs, layout)

    def _classify(self, params, raw):
        signature_name, request_input = examples_input(self._parse(raw), "classify")
        loaded = self.manager.resolve(_model_spec(params))
        return classify_json(inference.classify(loaded, signature_name, request_input))

    def _regress(self, params, raw):
        signature_name, request_input = examples_input(self._parse(raw), "regress")
        loaded = self.manager.resolve(_model_spec(params))
        return regress_json(inference.regress(loaded, signature_name, request_input))


def create_app(manager, max_body_bytes=64 << 20, metrics=None):
    """The Starlette application of TF Serving's REST API over `manager`."""
    return Starlette(routes=RestApi(manager, max_body_bytes, metrics).routes())

"""Errors as TF Serving reports them: gRPC status code, HTTP status, tensorflow.error.Code.

`ServingError(code, message)` is raised anywhere in the server; the gRPC API aborts the call with
`code`, the REST API answers `{"error": message}` with `HTTP_CODES[code]`, and model status
reports carry `error_code(code)`, the number of tensorflow.error.Code (the same numbers as gRPC).
"""

import grpc

__all__ = ["ServingError", "HTTP_CODES", "grpc_code", "error_code"]

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


def grpc_code(number):
    """The grpc.StatusCode of a tensorflow.error.Code number (UNKNOWN for one outside the enum)."""
    return _CODE_OF_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_code(code):
    """The tensorflow.error.Code number of a grpc.StatusCode (StatusProto.error_code)."""
    return code.value[0]

"""A gRPC PredictionService that runs no model: the transport floor of a served call.

    python -m benchmarks.grpc_echo --port PORT --embedding-dim D

Predict answers every request with a float32 [N, D] "embedding" (N the request's first
dimension), written as the zoo's server writes outputs (serving.tensors, typed float_val), after
gRPC has received and parsed the request as it does for the real server. What a client's call
costs against it is what serving costs without the model: protobuf, gRPC, the loopback socket
and the thread hand-offs on both sides. `benchmarks.serving_throughput` starts one beside the
real server and prints the ratio to in-process throughput that this floor allows.
"""

import argparse
from concurrent import futures

import grpc
import numpy as np

from serving.memory import keep_freed_memory
from serving.protos import serving_apis
from serving.tensors import fill_tensor_proto


class EchoPrediction:
    """Predict without a model; the other PredictionService methods are not served."""

    Classify = Regress = MultiInference = GetModelMetadata = None

    def __init__(self, embedding_dim, max_rows=1024):
        self._apis = serving_apis()
        self._embeddings = np.random.default_rng(0).random((max_rows, embedding_dim), np.float32)

    def Predict(self, request, context):  # noqa: N802 - gRPC method name
        response = self._apis.predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        rows = request.inputs[next(iter(request.inputs))].tensor_shape.dim[0].size
        fill_tensor_proto(response.outputs["embedding"], self._embeddings[:rows], as_fields=True)
        return response


def main(argv=None):
    arguments = argparse.ArgumentParser(description=__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--port", type=int, required=True)
    arguments.add_argument("--embedding-dim", type=int, required=True)
    arguments.add_argument("--no-keep-memory", action="store_true",
                           help="leave glibc's malloc settings alone (as `zoo serve`'s flag)")
    args = arguments.parse_args(argv)
    if not args.no_keep_memory:
        keep_freed_memory()
    apis = serving_apis()
    limit = 64 << 20
    server = grpc.server(futures.ThreadPoolExecutor(16), options=[
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
    apis.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        EchoPrediction(args.embedding_dim), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"echo on 127.0.0.1:{args.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

"""Serving the zoo's exported encoders (../shared/specs/serving.md).

- production: TensorFlow Serving with models.config, batching.config, monitoring.config and
  compose.yaml in this folder;
- `server`: a TF-Serving-compatible gRPC + REST server in Python (`zoo serve models/`) for tests,
  demos and machines without the tensorflow_model_server binary; its jobs are split into
  `config`, `versions`, `servable`, `batching`, `inference`, `grpc_api`, `rest_api`,
  `rest_json`, `monitoring` and `errors`, and `server` is the process lifecycle;
- `client`: `EncoderClient`, a thin gRPC client that needs neither the zoo nor the TF runtime.
Both sides convert tensors with `tensors` (numpy <-> TensorProto), which writes and reads the
values' bytes directly on the protobuf wire (`wire`).
"""

"""TF Serving deployment files and a thin gRPC client: see the serving issue."""

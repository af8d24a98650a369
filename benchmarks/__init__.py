"""Serving benchmarks: `python -m benchmarks.serving_load`, `.serving_fuzz`, `.serving_throughput`."""

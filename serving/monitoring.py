"""Prometheus metrics of the server (TF Serving's --monitoring_config_file).

With `prometheus_config { enable: true }` the REST port also answers GET on
prometheus_config.path (default /monitoring/prometheus/metrics) with the text exposition
format: request counts by model, API and status (TF Serving's `:tensorflow:serving:request_count`)
and each model version's state (`:tensorflow:serving:model_version_state`).
"""

import threading
from collections import Counter

from tensorflow_serving.apis.get_model_status_pb2 import ModelVersionStatus

__all__ = ["Metrics", "DEFAULT_PATH"]

DEFAULT_PATH = "/monitoring/prometheus/metrics"


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counters, and the version states read from a ModelManager when scraped."""

    def __init__(self, manager, path=DEFAULT_PATH):
        self.path = path or DEFAULT_PATH
        self._manager = manager
        self._requests = Counter()
        self._lock = threading.Lock()

    def count(self, api, model, error=None):
        """Count one request of `api` (predict, classify, ...) to `model`; error: a ServingError."""
        status = "OK" if error is None else error.code.name
        with self._lock:
            self._requests[(model, api, status)] += 1

    def text(self):
        """The metrics in Prometheus' text exposition format."""
        with self._lock:
            requests = sorted(self._requests.items())
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        for (model, api, status), count in requests:
            lines.append(f':tensorflow:serving:request_count{{model_name="{_label(model)}",'
                         f'api="{api}",status="{status}"}} {count}')
        lines.append("# TYPE :tensorflow:serving:model_version_state gauge")
        for name, version, state in self._manager.version_states():
            lines.append(f':tensorflow:serving:model_version_state{{model_name="{_label(name)}",'
                         f'model_version="{version}",state="{ModelVersionStatus.State.Name(state)}"'
                         f'}} 1')
        return "\n".join(lines) + "\n"

"""What to serve: TF Serving's config files parsed into their protos.

- `load_model_config(path)`: a ModelServerConfig text proto (--model_config_file);
- `config_for_model(name, base_path)`: the config TF Serving builds from --model_name and
  --model_base_path (one model, latest version);
- `config_from_base_dir(base_dir)`: every <base_dir>/<name>/ holding integer version folders
  (`zoo serve models/`);
- `load_batching_parameters(path)`: BatchingParameters (--batching_parameters_file);
- `load_monitoring_config(path)`: MonitoringConfig (--monitoring_config_file).
"""

import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.protos import BatchingParameters, MonitoringConfig

__all__ = ["load_model_config", "config_for_model", "config_from_base_dir",
           "load_batching_parameters", "load_monitoring_config"]


def _parse(path, message, what):
    with open(path) as handle:
        text = handle.read()
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ValueError(f"Error parsing text-format {message.DESCRIPTOR.full_name} "
                         f"({what} {path}): {error}") from None


def load_model_config(path):
    """Parse a ModelServerConfig text proto (TF Serving's --model_config_file)."""
    return _parse(path, model_server_config_pb2.ModelServerConfig(), "model config")


def config_for_model(name, base_path):
    """One model from --model_name / --model_base_path, latest version (as TF Serving does)."""
    if not name:
        raise ValueError("Expected --model_name with --model_base_path.")
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=os.path.abspath(base_path),
                                                model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = 1
    return config


def config_from_base_dir(base_dir):
    """A ModelServerConfig serving every <base_dir>/<name>/ holding integer version folders."""
    config = model_server_config_pb2.ModelServerConfig()
    base_dir = os.path.abspath(base_dir)
    if not os.path.isdir(base_dir):
        raise ValueError(f"Model base directory {base_dir} does not exist.")
    for name in sorted(os.listdir(base_dir)):
        model_dir = os.path.join(base_dir, name)
        if name.startswith(".") or not os.path.isdir(model_dir):
            continue
        if any(entry.isdigit() for entry in os.listdir(model_dir)):
            model = config.model_config_list.config.add(name=name, base_path=model_dir,
                                                        model_platform="tensorflow")
            model.model_version_policy.latest.num_versions = 1
    if not config.model_config_list.config:
        raise ValueError(f"No models in {base_dir}: expected {base_dir}/<name>/<version>/ "
                         f"folders (zoo export NAME --out {base_dir}).")
    return config


def load_batching_parameters(path):
    """Parse a BatchingParameters text proto (TF Serving's --batching_parameters_file)."""
    return _parse(path, BatchingParameters(), "batching parameters")


def load_monitoring_config(path):
    """Parse a MonitoringConfig text proto (TF Serving's --monitoring_config_file)."""
    return _parse(path, MonitoringConfig(), "monitoring config")

"""Which versions of which models are served: the version policy and the manager.

- Versions are integer directories holding saved_model.pb; hidden `.N.incomplete-*` export
  folders are not integers, so half-written versions are never seen.
- The policy (model_version_policy latest / all / specific) picks the versions to serve.
- `ModelManager` polls the file system: a new version is loaded and warmed up
  (assets.extra/tf_serving_warmup_requests) before it becomes visible, an old one is dropped
  only after; a version that fails to load is retried a few times. Each version's state is a
  `VersionState` holding TF Serving's ModelVersionStatus.State and a tensorflow.error.Code.
"""

import dataclasses
import logging
import os
import threading
import time

import grpc
from tensorflow_serving.apis.get_model_status_pb2 import ModelVersionStatus

from serving.errors import ServingError, error_code
from serving.servable import LoadedVersion

__all__ = ["ModelManager", "VersionState", "State", "version_dirs", "wanted_versions"]

log = logging.getLogger("serving.server")

State = ModelVersionStatus.State  # UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END
MAX_LOAD_RETRIES = 5  # a version that fails to load is tried again this many times,
LOAD_RETRY_SECONDS = 5.0  # this far apart (TF Serving: max_num_load_retries, 1 min apart)


@dataclasses.dataclass(frozen=True)
class VersionState:
    """A version's place in its lifecycle, as GetModelStatus reports it."""

    state: int  # a ModelVersionStatus.State value
    error_code: int = 0  # a tensorflow.error.Code value; 0 is OK
    error_message: str = ""
    failures: int = 0  # failed loads so far
    failed_at: float = 0.0  # time.monotonic() of the last failure


def version_dirs(base_path):
    """{version: path} of the integer folders holding a saved_model.pb."""
    try:
        entries = os.listdir(base_path)
    except OSError:
        return {}
    found = {}
    for entry in entries:
        path = os.path.join(base_path, entry)
        if entry.isdigit() and os.path.isfile(os.path.join(path, "saved_model.pb")):
            found[int(entry)] = path
    return found


def wanted_versions(model_config, available):
    policy = model_config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(available)
    if kind == "specific":
        return set(policy.specific.versions) & set(available)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return set(sorted(available)[-count:])


class _ModelState:
    """One configured model: its config, loaded versions, version states and labels."""

    def __init__(self, config):
        self.config = config
        self.versions = {}  # version -> LoadedVersion, replaced (never mutated) on change
        self.states = {}  # version -> VersionState
        self.labels = dict(config.version_labels)


class ModelManager:
    """Which versions of which models are loaded; polls the file system for changes."""

    def __init__(self, config, poll_interval=1.0, batching=None, warmup=True):
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._models = {}
        self._config = config
        self._poll_interval = poll_interval
        self._batching = batching
        self._semaphore = threading.BoundedSemaphore(
            max(1, batching.num_batch_threads.value) if batching is not None
            and batching.num_batch_threads.value else 4)
        self._warmup = warmup
        self._stop = threading.Event()
        self._thread = None
        self._apply_config(config)

    # --- lifecycle

    def start(self):
        self.poll_once()
        if self._poll_interval and self._poll_interval > 0:
            self._thread = threading.Thread(target=self._poll_loop, daemon=True, name="fs-poll")
            self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            models, self._models = self._models, {}
        for state in models.values():
            for loaded in state.versions.values():
                loaded.close()

    def _poll_loop(self):
        while not self._stop.wait(self._poll_interval):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling
                log.exception("file-system poll failed")

    # --- config

    def _apply_config(self, config):
        names = [model.name for model in config.model_config_list.config]
        if len(set(names)) != len(names):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Illegal to list model {names} multiple times in config list")
        with self._lock:
            models = {}
            for model in config.model_config_list.config:
                if model.model_platform not in ("", "tensorflow"):
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Model {model.name}: unsupported platform "
                                       f"{model.model_platform}")
                state = self._models.get(model.name) or _ModelState(model)
                state.config = model
                state.labels = dict(model.version_labels)
                models[model.name] = state
            dropped = [state for name, state in self._models.items() if name not in models]
            self._models = models
            self._config = config
        for state in dropped:
            for loaded in state.versions.values():
                loaded.close()

    def reload_config(self, config):
        """HandleReloadConfigRequest: switch to `config`, load what it names, then return."""
        with self._reload_lock:
            self._apply_config(config)
            self.poll_once()
            for model in config.model_config_list.config:
                state = self._models.get(model.name)
                for label, version in model.version_labels.items():
                    if state is None or version not in state.versions:
                        raise ServingError(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"Request to assign label to version {version} of model "
                            f"{model.name}, which is not currently available for inference")

    # --- polling

    def poll_once(self):
        with self._lock:
            models = list(self._models.items())
        for name, state in models:
            available = version_dirs(state.config.base_path)
            wanted = wanted_versions(state.config, available)
            for version in sorted(wanted - set(state.versions)):
                self._load(name, state, version, available[version])
            with self._lock:
                stale = {version: loaded for version, loaded in state.versions.items()
                         if version not in wanted}
                if stale:
                    state.versions = {version: loaded for version, loaded in
                                      state.versions.items() if version not in stale}
                    for version in stale:
                        state.states[version] = VersionState(State.END)
            for version, loaded in stale.items():
                loaded.close()  # queued requests finish; later ones run unbatched
                log.info("unloaded %s version %d", name, version)

    def _load(self, name, state, version, path):
        previous = state.states.get(version)
        failures = previous.failures if previous is not None else 0
        if previous is not None and previous.state == State.END and previous.error_code != 0:
            if failures >= MAX_LOAD_RETRIES or \
                    time.monotonic() - previous.failed_at < LOAD_RETRY_SECONDS:
                return  # as TF Serving: a few retries, some time apart
        with self._lock:
            state.states[version] = VersionState(State.LOADING, failures=failures)
        started = time.monotonic()
        loaded = None
        try:
            loaded = LoadedVersion(name, version, path, self._batching, self._semaphore)
            warmed = loaded.warm_up() if self._warmup else 0
        except Exception as error:  # noqa: BLE001 - recorded in the model status
            if loaded is not None:
                loaded.close()
            code = error.code if isinstance(error, ServingError) else grpc.StatusCode.UNKNOWN
            message = error.message if isinstance(error, ServingError) else str(error)
            log.error("failed to load %s version %d from %s: %s", name, version, path, message)
            with self._lock:
                state.states[version] = VersionState(State.END, error_code(code), message,
                                                     failures + 1, time.monotonic())
            return
        with self._lock:
            state.versions = {**state.versions, version: loaded}
            state.states[version] = VersionState(State.AVAILABLE)
        log.info("loaded %s version %d (%d warmup requests) in %.1f s", name, version, warmed,
                 time.monotonic() - started)

    # --- lookups

    def resolve(self, model_spec):
        """The LoadedVersion a ModelSpec names, or ServingError as TF Serving answers."""
        name = model_spec.name
        with self._lock:
            state = self._models.get(name)
            versions = state.versions if state is not None else {}
            labels = state.labels if state is not None else {}
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            label = model_spec.version_label
            if label not in labels:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: {label}")
            version = labels[label]
        elif choice == "version":
            version = model_spec.version.value
        else:
            if not versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Latest({name})")
            return versions[max(versions)]
        if version not in versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Specific({name}, {version})")
        return versions[version]

    def version_states(self):
        """[(model name, version, ModelVersionStatus.State)] of every known version."""
        with self._lock:
            return [(name, version, entry.state) for name, state in sorted(self._models.items())
                    for version, entry in sorted(state.states.items())]

    def status(self, model_spec):
        """[(version, VersionState)], newest first, as GetModelStatus reports them."""
        name = model_spec.name
        with self._lock:
            state = self._models.get(name)
            states = dict(state.states) if state is not None else {}
            labels = dict(state.labels) if state is not None else {}
        if not states:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {name}")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            if model_spec.version_label not in labels:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Unrecognized servable version label: "
                                   f"{model_spec.version_label}")
            wanted = labels[model_spec.version_label]
        elif choice == "version":
            wanted = model_spec.version.value
        else:
            wanted = None
        if wanted is not None:
            if wanted not in states:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {wanted} of model {name}")
            states = {wanted: states[wanted]}
        return sorted(states.items(), reverse=True)

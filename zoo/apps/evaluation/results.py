"""Measured results, kept apart from the shipped weights (issue 17): the one module that writes
them and the one that reads them back (MODELS.md is rendered from its `read`).

A result is a record (a JSON object) of one declared kind (`KINDS`): each kind names the fields
every record must have, and which of them make its key, so a record says what it is about and
recording it again replaces it. Records live in reports/results/<kind>.json, one JSON object a
kind, {key: record}, keys and fields sorted, so a new measurement is a small diff in git.

`record(kind, *records)` validates each record (unknown kinds and missing fields are refused
with a ValueError), then, holding an exclusive lock on reports/results/.lock (fcntl.flock),
reads the kind's file, puts the records in under their keys and writes it back through a
temporary file and os.replace: two recording commands never lose each other's records, and a
failed write leaves the previous file as it was. `read(kind)` -> {key: record}, sorted by key.

The shipped weights' own provenance (sha256, hash head, training command and time) stays in
zoo/weights/manifest.json (zoo.registry); nothing measured goes there.
"""

import contextlib
import dataclasses
import fcntl
import json
import os

from zoo.atomic import atomic_file

RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "reports", "results")
LOCK_NAME = ".lock"


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of record: every record has the `key_fields` (strings, joined by "/" into its
    key: the one record of that kind about that thing) and the `fields`; more are allowed."""
    name: str
    key_fields: tuple
    fields: tuple
    what: str

    def key(self, record):
        return "/".join(record[field] for field in self.key_fields)


# A model's row and a baseline's row measured in the same run are records of the same kind:
# "subject" is the registry name of the model, or the baseline's name ("raw pixels", "MHD",
# "untrained NAME", "LSH, 16 bits"), and "baseline" tells them apart.
_KINDS = (
    Kind("retrieval", ("corpus", "subject"), ("baseline", "rows"),
         "`zoo evaluate retrieval --record`: P@8, mAP, R@k ... of each of a subject's table rows "
         "(a model's float and Hamming rows) on a corpus, {row: {metric: value}}"),
    Kind("invariance", ("corpus", "subject"),
         ("baseline", "seed", "num_samples", "chance", "rotation", "scale", "shift"),
         "`zoo evaluate invariance --record`: chance-normalised mean similarity under each "
         "transform"),
    Kind("oneshot", ("subject",), ("baseline", "mean_error", "runs"),
         "`zoo evaluate oneshot --record`: Omniglot 20-way one-shot mean error over `runs` runs"),
    Kind("hashing", ("corpus", "subject"),
         ("baseline", "bits", "protocol", "map_stable", "map_tie_aware", "precision_at"),
         "`zoo evaluate hashing --record`: mAP@1000 and P@k of binary codes (a model's, with its "
         "command; a baseline's, with its method)"),
    Kind("ablation", ("trained_on",), ("command", "steps", "rows"),
         "`zoo evaluate ablation --record`: the sketch-GAN+ ablation table for one archive"),
    Kind("transfer", ("command",),
         ("base", "name", "source", "archive", "images", "labels", "scored_images", "steps",
          "recipe", "train_seconds", "machine", "hash_bits", "neighbour_overlap@8",
          "retrieval"),
         "`zoo transfer --record`: retrieval before and after fine-tuning on an archive"),
    Kind("bingan_curve", ("curve",), ("command", "machine", "note", "baselines", "figure", "rows"),
         "`python -m benchmarks.bingan_curve --record`: mAP@1000 along a BinGAN(+) training run "
         "(curves recorded since issue 14, part 2 also have model, changes, all_baselines)"),
    Kind("map_protocols", ("corpus",), ("command", "machine", "protocol", "rows", "seconds"),
         "`python -m benchmarks.map_protocols --record`: the same codes under three mAP cuts"),
    Kind("code_head_probe", ("model",), ("command", "machine", "corpora", "rows"),
         "`python -m benchmarks.code_head_probe --record`: learned code heads against ITQ, "
         "one row per variant, [label, P@8 in-domain, P@8 transfer]"),
    Kind("learning_curve", ("curve",), ("command", "machine", "figure", "runs"),
         "`zoo evaluate curve --record`: the ablation's four columns at every snapshot of "
         "training runs, {run label: [{step, column: value}]}"),
    Kind("speed", ("report",), ("command", "machine", "date"),
         "the speed benchmarks' `--record` (zoo.apps.evaluation.speed): encode, training, "
         "index_build, serving_MODEL, grpc_floor"),
)
KINDS = {kind.name: kind for kind in _KINDS}


def get_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"Unknown result kind {kind!r}; expected one of "
                         f"{', '.join(sorted(KINDS))}.")
    return KINDS[kind]


def key_of(kind, record):
    """The key `record` is stored under, after checking it is a valid record of `kind`."""
    declared = get_kind(kind)
    if not isinstance(record, dict):
        raise ValueError(f"Expected a {kind!r} record as a dict; got {type(record).__name__}.")
    missing = [field for field in declared.key_fields + declared.fields if field not in record]
    if missing:
        raise ValueError(f"A {kind!r} record needs the fields "
                         f"{', '.join(declared.key_fields + declared.fields)}; it lacks "
                         f"{', '.join(missing)}.")
    for field in declared.key_fields:
        value = record[field]
        if not isinstance(value, str) or not value:
            raise ValueError(f"Expected the {kind!r} record's key field {field!r} as a "
                             f"non-empty string; got {value!r}.")
    return declared.key(record)


def path_of(kind, directory=None):
    """reports/results/<kind>.json (in `directory` if given)."""
    return os.path.join(directory or RESULTS_DIR, f"{get_kind(kind).name}.json")


def _load(path):
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"Results file {path!r} is not valid JSON ({error}); restore it "
                             f"from git before recording into it.") from error


@contextlib.contextmanager
def locked(directory=None):
    """Hold the results folder's lock (an exclusive flock on its .lock file)."""
    directory = directory or RESULTS_DIR
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, LOCK_NAME), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomically(path, document):
    """Serialise `document` into `path` (zoo.atomic: a failed write leaves `path` as it was)."""
    with atomic_file(path, "w") as stream:
        json.dump(document, stream, indent=1, sort_keys=True)
        stream.write("\n")


def record(kind, *records, directory=None):
    """Store `records` (dicts) of `kind`, each replacing the record under its key; return the
    kind's file. Every record is validated before anything is written; the read, update and
    write of the file happen under the folder's lock."""
    if not records:
        raise ValueError(f"Expected at least one {kind!r} record to store.")
    keyed = {key_of(kind, item): item for item in records}
    path = path_of(kind, directory)
    with locked(directory):
        document = _load(path)
        document.update(keyed)
        try:
            _write_atomically(path, document)
        except (TypeError, ValueError) as error:
            raise ValueError(f"A {kind!r} record is not JSON-serialisable ({error}); "
                             f"{path} is unchanged.") from error
    return path


def read(kind, directory=None):
    """{key: record} of every stored record of `kind`, sorted by key ({} when none)."""
    document = _load(path_of(kind, directory))
    return dict(sorted(document.items()))


def require_published(subject):
    """Refuse to record a model row for a model that ships no weights."""
    from zoo.registry import read_manifest

    if subject not in read_manifest()["models"]:
        raise ValueError(f"{subject!r} has no shipped weights in the manifest; only published "
                         f"models' numbers are recorded.")

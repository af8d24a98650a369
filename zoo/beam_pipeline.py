"""Encode an archive at scale with Apache Beam: image files in, embedding/code shards out.

An optional extra (`pip install -e ".[beam]"`). The pipeline runs an exported SavedModel
(`zoo export NAME --out models/`, export/saved_model.py) over any number of image files, on
Beam's DirectRunner on one machine or on a distributed runner (Dataflow, Flink, Spark):

    MatchFiles(input) -> ReadMatches -> (path, bytes)
        -> RunInference(KeyedModelHandler(SavedModelHandler(model_dir)))   # batches of bytes
        -> shards of `shard_size` results -> output/embeddings-<hash>.npz
        -> errors (unreadable, undecodable or blank files) -> output/errors-*.jsonl

`SavedModelHandler` is a RunInference ModelHandler of the zoo's own (Beam's TensorFlow
handlers cannot load Keras-3 SavedModels): `load_model` is `tf.saved_model.load(model_dir)`,
`run_inference` calls the model's `encode_images` and `hash_images` signatures on a batch of
file bytes, so decoding and preprocessing run inside the exported graph, exactly as in serving
(two passes through the graph: the export has no signature that returns both outputs).
A batch that fails (one corrupt file among many) is retried file by file, and only the bad files
become errors: one bad scan never stops a run over millions.

Shard format. Each shard `embeddings-<16 hex digits>.npz` (`numpy.load`, no pickle) holds
    paths      str [N]           the files' paths as matched, sorted
    embedding  float32 [N, D]    L2-normalised embeddings (similarity = dot product)
    bits       uint8 [N, K]      the model's K-bit hash codes, one 0/1 value per bit
    model      str []            "<model name>/<version>" from the SavedModel's metadata
The name is a hash of the shard's paths, so a retried bundle rewrites the same file; a shard is
written to a hidden temporary name in the output folder and renamed when complete, so a shard
that exists is whole. `read_shards(pattern)` reads them back as (paths, embeddings, bits), one
row per path (a path written twice by retried work is kept once), and refuses shards of
different models. The errors are JSON lines {"path": ..., "error": ...}.

    from zoo.beam_pipeline import encode_files, read_shards
    encode_files("models/sketch_gan_merchant/1", "scans/**/*.png", "shards/")
    paths, embeddings, bits = read_shards("shards/embeddings-*.npz")

The command line is `zoo beam encode --model-dir DIR --input GLOB --output DIR [beam flags]`.
"""

import dataclasses
import hashlib
import io
import json
import logging
import os
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

log = logging.getLogger(__name__)

SHARD_PREFIX = "embeddings-"
SHARD_PATTERN = SHARD_PREFIX + "*.npz"
ERRORS_PREFIX = "errors"
METRICS_NAMESPACE = "zoo_beam_encode"
DEFAULT_SHARD_SIZE = 10_000
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_FILE_MB = 64.0


# ----------------------------------------------------------------------------- the handler


def _reason(error):
    """The useful line of a TensorFlow error raised inside the exported graph."""
    from zoo.data.preprocess_tf import NO_INK_MESSAGE, UNDECODABLE_MESSAGE

    message = getattr(error, "message", None) or str(error)
    for known in (UNDECODABLE_MESSAGE, NO_INK_MESSAGE):
        if known in message:
            return known
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[")
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    first = (useful or lines or [""])[0][:300]
    import tensorflow as tf

    if isinstance(error, tf.errors.InvalidArgumentError):
        return f"cannot decode: {first}"
    return f"{type(error).__name__}: {first}"


class SavedModelHandler(ModelHandler):
    """RunInference handler for a zoo SavedModel version directory.

    Examples are image file bytes (PNG, JPEG, BMP or GIF, any size or colour); each prediction
    is {"embedding": float32 [D], "bits": uint8 [K]}, or {"error": reason} for a file the
    graph refused (undecodable, or no ink), so that results stay aligned with the batch.
    """

    def __init__(self, model_dir, min_batch_size=1, max_batch_size=DEFAULT_BATCH_SIZE):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.model_dir = model_dir

    def load_model(self):
        import tensorflow as tf

        model = tf.saved_model.load(self.model_dir)
        missing = {"encode_images", "hash_images"} - set(model.signatures)
        if missing:
            raise ValueError(f"{self.model_dir} is not a zoo SavedModel: it lacks the "
                             f"signatures {sorted(missing)} (export one with `zoo export`).")
        return model

    def run_inference(self, batch, model, inference_args=None):
        import tensorflow as tf

        try:
            return self._infer(batch, model)
        except tf.errors.OpError as error:
            if len(batch) == 1:
                return [{"error": _reason(error)}]
        # One or more bad files: find them one by one, keep the others.
        return [result for example in batch for result in self.run_inference([example], model)]

    @staticmethod
    def _infer(batch, model):
        import tensorflow as tf

        image_bytes = tf.constant(list(batch), dtype=tf.string)
        embeddings = model.signatures["encode_images"](image_bytes=image_bytes)["embedding"]
        bits = model.signatures["hash_images"](image_bytes=image_bytes)["bits"]
        return [{"embedding": embedding, "bits": code}
                for embedding, code in zip(embeddings.numpy(), bits.numpy())]

    def get_num_bytes(self, batch):
        return sum(len(example) for example in batch)

    def get_metrics_namespace(self):
        return METRICS_NAMESPACE


# ----------------------------------------------------------------------------- the steps


class _ReadFile(beam.DoFn):
    """ReadableFile -> (path, bytes); unreadable, empty or oversized files go to "errors"."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.failed = Metrics.counter(METRICS_NAMESPACE, "files_failed")

    def process(self, readable_file):
        path = readable_file.metadata.path
        size = readable_file.metadata.size_in_bytes
        reason = None
        if size > self.max_bytes:
            reason = f"file of {size} bytes is larger than the limit of {self.max_bytes} bytes"
        else:
            try:
                data = readable_file.read()
            except Exception as error:  # any storage error: report it, go on
                reason = f"cannot read: {type(error).__name__}: {error}"
            else:
                if not data:
                    reason = "empty file"
        if reason is not None:
            self.failed.inc()
            yield beam.pvalue.TaggedOutput("errors", {"path": path, "error": reason})
            return
        yield path, data


class _SplitErrors(beam.DoFn):
    """(path, prediction) -> (path, embedding, bits), or {"path", "error"} to "errors"."""

    def __init__(self):
        self.encoded = Metrics.counter(METRICS_NAMESPACE, "images_encoded")
        self.failed = Metrics.counter(METRICS_NAMESPACE, "files_failed")

    def process(self, keyed):
        path, prediction = keyed
        if "error" in prediction:
            self.failed.inc()
            yield beam.pvalue.TaggedOutput("errors", {"path": path, "error": prediction["error"]})
            return
        self.encoded.inc()
        yield path, prediction["embedding"], prediction["bits"]


class _WriteShard(beam.DoFn):
    """A batch of (path, embedding, bits) -> one .npz shard, written under a hidden temporary
    name and renamed; yields the shard's path."""

    def __init__(self, output_dir, model):
        self.output_dir = output_dir
        self.model = model
        self.shards = Metrics.counter(METRICS_NAMESPACE, "shards_written")

    def process(self, rows):
        rows = sorted(rows, key=lambda row: row[0])
        paths = [row[0] for row in rows]
        digest = hashlib.sha1("\n".join(paths).encode("utf-8")).hexdigest()[:16]
        buffer = io.BytesIO()
        np.savez(buffer, paths=np.array(paths, dtype=str),
                 embedding=np.stack([row[1] for row in rows]).astype(np.float32),
                 bits=np.stack([row[2] for row in rows]).astype(np.uint8),
                 model=np.array(self.model))
        final = FileSystems.join(self.output_dir, f"{SHARD_PREFIX}{digest}.npz")
        temporary = FileSystems.join(self.output_dir,
                                     f".{SHARD_PREFIX}{digest}.npz.incomplete-{uuid.uuid4().hex}")
        try:
            with FileSystems.create(temporary,
                                    compression_type=CompressionTypes.UNCOMPRESSED) as out:
                out.write(buffer.getvalue())
            # Replaces a shard of the same paths written by a retried bundle.
            FileSystems.rename([temporary], [final])
        except BaseException:
            if FileSystems.exists(temporary):
                FileSystems.delete([temporary])
            raise
        self.shards.inc()
        yield final


# ----------------------------------------------------------------------------- the pipeline


def model_id(model_dir):
    """The model's "<name>/<version>", from a SavedModel version's assets/metadata.json."""
    path = FileSystems.join(model_dir, "assets", "metadata.json")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            metadata = json.loads(handle.read().decode("utf-8"))
        return f"{metadata['name']}/{metadata['version']}"
    except Exception as error:
        raise ValueError(f"Expected --model-dir to be an exported zoo SavedModel version "
                         f"(NAME/VERSION/ with assets/metadata.json, written by `zoo export`); "
                         f"cannot read {path}: {error}") from None


def _patterns(inputs):
    """Glob patterns (a folder stands for every file below it); ValueError if none match."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    patterns = []
    for pattern in map(os.fspath, inputs):
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "**")
        patterns.append(pattern)
    if not patterns:
        raise ValueError("Expected at least one input file pattern.")
    for pattern, result in zip(patterns, FileSystems.match(patterns, limits=[1] * len(patterns))):
        if not result.metadata_list:
            raise ValueError(f"No files match the input pattern {pattern!r}.")
    return patterns


def build_pipeline(pipeline, model_dir, inputs, output_dir, shard_size=DEFAULT_SHARD_SIZE,
                   batch_size=DEFAULT_BATCH_SIZE, max_file_mb=DEFAULT_MAX_FILE_MB):
    """Add the encode steps to `pipeline`; returns the PCollections (shard paths, errors)."""
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"Expected shard_size and batch_size >= 1, got {shard_size}, "
                         f"{batch_size}.")
    model = model_id(model_dir)
    patterns = _patterns(inputs)
    handler = KeyedModelHandler(SavedModelHandler(model_dir, max_batch_size=batch_size))

    read = (pipeline
            | "Patterns" >> beam.Create(patterns)
            | "Match" >> fileio.MatchAll()
            | "Open" >> fileio.ReadMatches(skip_directories=True)
            | "Read" >> beam.ParDo(_ReadFile(int(max_file_mb * 2**20))).with_outputs(
                "errors", main="files"))
    encoded = (read.files
               | "Encode" >> RunInference(handler)
               | "Split" >> beam.ParDo(_SplitErrors()).with_outputs("errors", main="rows"))
    shards = (encoded.rows
              | "Shard" >> beam.BatchElements(min_batch_size=shard_size, max_batch_size=shard_size)
              | "Write" >> beam.ParDo(_WriteShard(output_dir, model)))
    errors = ((read.errors, encoded.errors) | "Errors" >> beam.Flatten())
    _ = (errors
         | "ErrorLines" >> beam.Map(lambda error: json.dumps(error, sort_keys=True))
         | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(output_dir, ERRORS_PREFIX),
                                                file_name_suffix=".jsonl"))
    return shards, errors


@dataclasses.dataclass(frozen=True)
class EncodeRun:
    """What a run did: counters from the pipeline's metrics, and where its output is."""

    images_encoded: int
    files_failed: int
    shards_written: int
    output_dir: str
    state: str


def encode_files(model_dir, inputs, output_dir, pipeline_args=(), shard_size=DEFAULT_SHARD_SIZE,
                 batch_size=DEFAULT_BATCH_SIZE, max_file_mb=DEFAULT_MAX_FILE_MB):
    """Run the pipeline (DirectRunner unless `pipeline_args` name another, e.g.
    ["--runner=DataflowRunner", "--project=...", ...]) and wait for it; returns an EncodeRun."""
    if "://" not in output_dir:  # a local folder; object stores need none
        os.makedirs(output_dir, exist_ok=True)
    options = PipelineOptions(list(pipeline_args))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, model_dir, inputs, output_dir, shard_size=shard_size,
                   batch_size=batch_size, max_file_mb=max_file_mb)
    result = pipeline.run()
    state = result.wait_until_finish()
    counters = {name: 0 for name in ("images_encoded", "files_failed", "shards_written")}
    try:
        query = result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))
        for counter in query["counters"]:
            if counter.key.metric.name in counters:
                counters[counter.key.metric.name] += counter.committed or counter.attempted or 0
    except Exception as error:  # some runners report no metrics
        log.warning("could not read the pipeline's metrics: %s", error)
    return EncodeRun(output_dir=output_dir, state=str(state), **counters)


# ----------------------------------------------------------------------------- reading


def read_shards(pattern):
    """(paths str [N], embeddings float32 [N, D], bits uint8 [N, K]) from every shard that
    matches `pattern` (a glob, or the output folder), in path order, each path once.
    Raises ValueError when nothing matches or the shards come from different models."""
    pattern = os.fspath(pattern)
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, SHARD_PATTERN)
    files = sorted(metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list)
    if not files:
        raise ValueError(f"No shards match {pattern!r} (expected {SHARD_PATTERN} files written "
                         f"by `zoo beam encode`).")
    paths, embeddings, bits, models = [], [], [], {}
    for path in files:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = io.BytesIO(handle.read())
        try:
            with np.load(data, allow_pickle=False) as shard:
                paths.append(shard["paths"])
                embeddings.append(shard["embedding"])
                bits.append(shard["bits"])
                models.setdefault(str(shard["model"]), path)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path} is not a shard written by `zoo beam encode`: {error}") \
                from None
    if len(models) > 1:
        described = ", ".join(f"{model} ({path})" for model, path in models.items())
        raise ValueError(f"The shards matching {pattern!r} come from different models: "
                         f"{described}; an index needs embeddings of one model.")
    paths = np.concatenate(paths)
    embeddings = np.concatenate(embeddings).astype(np.float32)
    bits = np.concatenate(bits).astype(np.uint8)
    order = np.argsort(paths, kind="stable")
    unique = order[np.unique(paths[order], return_index=True)[1]]
    return paths[unique], embeddings[unique], bits[unique]


def read_errors(output_dir):
    """[{"path", "error"}] from a run's errors-*.jsonl files."""
    pattern = FileSystems.join(output_dir, f"{ERRORS_PREFIX}*.jsonl")
    errors = []
    for metadata in sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path):
        with FileSystems.open(metadata.path,
                              compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            errors.extend(json.loads(line) for line in handle.read().decode("utf-8").splitlines()
                          if line.strip())
    return errors

"""Encode an archive at scale with Apache Beam: image files in, embedding/code shards out.

An optional extra (`pip install -e ".[beam]"`). Two pipelines run an exported SavedModel
(`zoo export NAME --out models/`, export/saved_model.py) over any number of files, on Beam's
DirectRunner on one machine or on a distributed runner (Dataflow, Flink, Spark): `zoo beam
encode` encodes each image file whole (below), `zoo beam regions` encodes the candidate regions
of page photographs for a region index (see "Regions" further down).

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

    from zoo.apps.beam_pipeline import encode_files, read_shards
    encode_files("models/sketch_gan_merchant/1", "scans/**/*.png", "shards/")
    paths, embeddings, bits = read_shards("shards/embeddings-*.npz")

The command line is `zoo beam encode --model-dir DIR --input GLOB --output DIR [beam flags]`.

Regions. `zoo beam regions` (`encode_regions`) does for a page archive what
`Index.build(out, pages, regions=True)` does in one process (zoo/apps/index/regions.py):

    MatchFiles(input) -> ReadMatches -> (path, bytes)                 # as above (_ReadFile)
        -> _ProposeRegions: decode, zoo.apps.index.regions.region_images   # boxes + prepared crops
        -> RunInference(KeyedModelHandler(RegionModelHandler(model_dir)))
             # batches of pages; their crops in calls of `batch_size` to the SavedModel's
             # serving_default (images -> embedding) and hash (images -> bits) signatures
        -> shards of `shard_size` pages -> output/regions-<hash>.npz
        -> errors (unreadable, undecodable, oversized, blank pages) -> output/errors-*.jsonl

The crops are prepared in Python with the zoo's own proposal and preprocessing code at the
SavedModel's input size (its metadata's input_shape), with `proposals` settings (default
ProposalSettings(); `--proposals` JSON text or a .json file), so the boxes are exactly those of
an in-process region build and the embeddings equal its own to float rounding. A page of more
than zoo.apps.index.regions.MAX_PAGE_PIXELS pixels is refused from its header, before decoding.
Each region shard `regions-<16 hex digits>.npz` (written atomically like the others) holds
    paths        str [P]          the pages' paths as matched, sorted
    width, height, file_size  int64 [P]
    page         int64 [R]        each region's page (position in `paths`)
    boxes        int64 [R, 4]     (x, y, w, h) in page pixels
    embedding    float32 [R, D]   bits uint8 [R, K]
    model        str []           "<model name>/<version>"; image_size int64 [] (S)
    proposals    str []           the ProposalSettings as JSON
`read_region_shards(pattern)` reads them back as one `Shards` (pages in path order, each once;
mixed models or proposal settings refused); `load_shards(folder_or_glob)` reads either kind
with the run's errors, for `zoo index build --from-shards DIR --out X [--model NAME]`
(`Index.build_from_shards`), which makes a region index of region shards and an index of images
of embedding shards, refusing shards whose model is not the registered zoo model named (or
whose embedding size, code length or image size are not its own), since queries are encoded
in-process by that model.

    from zoo.apps.beam_pipeline import encode_regions
    encode_regions("models/sketch_gan_plus_merchant/1", "pages/*", "shards/")
    index = zoo.Index.build_from_shards("pages.idx", "shards/")
"""

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
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
REGION_SHARD_PREFIX = "regions-"
REGION_SHARD_PATTERN = REGION_SHARD_PREFIX + "*.npz"
ERRORS_PREFIX = "errors"
METRICS_NAMESPACE = "zoo_beam_encode"
DEFAULT_SHARD_SIZE = 10_000
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_FILE_MB = 64.0
DEFAULT_PAGE_SHARD_SIZE = 500  # pages per region shard
DEFAULT_REGION_BATCH_SIZE = 256  # prepared region crops per model call
DEFAULT_PAGES_PER_BATCH = 8  # pages per RunInference batch
BLANK_PAGE = "no ink regions found (a blank page?)"  # as zoo.apps.index.encoding says it


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


def _load_saved_model(model_dir, signatures):
    """tf.saved_model.load(model_dir), refused unless it has the zoo's `signatures`."""
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)
    missing = set(signatures) - set(model.signatures)
    if missing:
        raise ValueError(f"{model_dir} is not a zoo SavedModel: it lacks the "
                         f"signatures {sorted(missing)} (export one with `zoo export`).")
    return model


class _RetryingHandler(ModelHandler):
    """A RunInference handler whose failing batch is retried example by example, so that only
    the bad examples become {"error": reason} predictions. Subclasses define `_infer`."""

    def run_inference(self, batch, model, inference_args=None):
        import tensorflow as tf

        try:
            return self._infer(batch, model)
        except tf.errors.OpError as error:
            if len(batch) == 1:
                return [{"error": _reason(error)}]
        return [result for example in batch for result in self.run_inference([example], model)]

    def get_metrics_namespace(self):
        return METRICS_NAMESPACE


class SavedModelHandler(_RetryingHandler):
    """RunInference handler for a zoo SavedModel version directory.

    Examples are image file bytes (PNG, JPEG, BMP or GIF, any size or colour); each prediction
    is {"embedding": float32 [D], "bits": uint8 [K]}, or {"error": reason} for a file the
    graph refused (undecodable, or no ink), so that results stay aligned with the batch.
    """

    def __init__(self, model_dir, min_batch_size=1, max_batch_size=DEFAULT_BATCH_SIZE):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.model_dir = model_dir

    def load_model(self):
        return _load_saved_model(self.model_dir, ("encode_images", "hash_images"))

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


def _page_bytes(page):
    return int(page["images"].nbytes) if isinstance(page, dict) and "images" in page else 0


class RegionModelHandler(_RetryingHandler):
    """RunInference handler for the prepared regions of page photographs (`zoo beam regions`).

    Examples are pages from `_ProposeRegions`: {"images": float32 [M, S, S] region crops
    prepared by zoo.apps.index.regions.region_images, "boxes": int64 [M, 4], page facts}; a batch
    is up to `pages_per_batch` pages whose crops are concatenated and encoded in calls of at
    most `batch_size` crops by the SavedModel's `serving_default` (images -> embedding) and
    `hash` (images -> bits) signatures. Each prediction is the page without its images, with
    "embedding" float32 [M, D] and "bits" uint8 [M, K] added, or {"error": reason}.
    """

    def __init__(self, model_dir, batch_size=DEFAULT_REGION_BATCH_SIZE,
                 pages_per_batch=DEFAULT_PAGES_PER_BATCH):
        if batch_size < 1 or pages_per_batch < 1:
            raise ValueError(f"Expected batch_size and pages_per_batch >= 1, got {batch_size}, "
                             f"{pages_per_batch}.")
        super().__init__(min_batch_size=1, max_batch_size=pages_per_batch)
        self.model_dir = model_dir
        self.batch_size = batch_size

    def load_model(self):
        return _load_saved_model(self.model_dir, ("serving_default", "hash"))

    def _infer(self, batch, model):
        import tensorflow as tf

        images = np.concatenate([page["images"] for page in batch]).astype(np.float32)[..., None]
        embeddings, bits = [], []
        for start in range(0, len(images), self.batch_size):
            crops = tf.constant(images[start : start + self.batch_size])
            embeddings.append(model.signatures["serving_default"](images=crops)["embedding"]
                              .numpy())
            bits.append(model.signatures["hash"](images=crops)["bits"].numpy())
        embeddings, bits = np.concatenate(embeddings), np.concatenate(bits)
        results, start = [], 0
        for page in batch:
            count = len(page["images"])
            result = {key: value for key, value in page.items() if key != "images"}
            result["embedding"] = embeddings[start : start + count].astype(np.float32)
            result["bits"] = bits[start : start + count].astype(np.uint8)
            results.append(result)
            start += count
        return results

    def get_num_bytes(self, batch):
        return sum(_page_bytes(page) for page in batch)


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
        yield self.encoded_row(path, prediction)

    def encoded_row(self, path, prediction):
        self.encoded.inc()
        return path, prediction["embedding"], prediction["bits"]


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
        final = write_shard(self.output_dir, SHARD_PREFIX, paths,
                            paths=np.array(paths, dtype=str),
                            embedding=np.stack([row[1] for row in rows]).astype(np.float32),
                            bits=np.stack([row[2] for row in rows]).astype(np.uint8),
                            model=np.array(self.model))
        self.shards.inc()
        yield final


def write_shard(output_dir, prefix, names, /, **arrays):
    """Write `arrays` as the .npz shard `<prefix><16 hex digits>.npz` in `output_dir`, the
    digits a hash of the files' `names` (so a retried bundle rewrites the same file), under a
    hidden temporary name renamed when complete; returns the shard's path."""
    digest = hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()[:16]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    final = FileSystems.join(output_dir, f"{prefix}{digest}.npz")
    temporary = FileSystems.join(output_dir,
                                 f".{prefix}{digest}.npz.incomplete-{uuid.uuid4().hex}")
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
    return final


class _ProposeRegions(beam.DoFn):
    """(path, bytes) of a page photograph -> (path, page): its candidate regions proposed and
    prepared by zoo.apps.index.regions.region_images, as `Index.build(..., regions=True)` prepares
    them; undecodable, oversized (> zoo.apps.index.regions.MAX_PAGE_PIXELS) and blank pages go to
    "errors"."""

    def __init__(self, size, settings):
        self.size = size
        self.settings = settings
        self.failed = Metrics.counter(METRICS_NAMESPACE, "files_failed")

    def process(self, element):
        from zoo.data.images import decode_image
        from zoo.apps.index import regions as region_search

        path, data = element
        reason = None
        try:
            region_search.check_page_size(io.BytesIO(data))
            gray = decode_image(data)
            boxes, images = region_search.region_images(gray, self.size, self.settings)
        except (OSError, ValueError) as error:
            reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", repr(path),
                            str(error).replace("image <bytes>", "image"))
        else:
            if not len(boxes):
                reason = BLANK_PAGE
        if reason is not None:
            self.failed.inc()
            yield beam.pvalue.TaggedOutput("errors", {"path": path, "error": reason})
            return
        height, width = gray.shape
        yield path, {"images": images, "boxes": boxes.astype(np.int64), "width": int(width),
                     "height": int(height), "file_size": len(data)}


class _SplitRegionErrors(_SplitErrors):
    """(path, prediction) -> (path, encoded page), or {"path", "error"} to "errors"."""

    def __init__(self):
        super().__init__()
        self.pages = Metrics.counter(METRICS_NAMESPACE, "pages_encoded")
        self.regions = Metrics.counter(METRICS_NAMESPACE, "regions_encoded")

    def encoded_row(self, path, prediction):
        self.pages.inc()
        self.regions.inc(len(prediction["boxes"]))
        return path, prediction


class _WriteRegionShard(beam.DoFn):
    """A batch of (path, encoded page) -> one regions-<hash>.npz shard (see the module
    docstring), written atomically like the embedding shards; yields the shard's path."""

    def __init__(self, output_dir, model, image_size, proposals):
        self.output_dir = output_dir
        self.model = model
        self.image_size = image_size
        self.proposals = proposals  # JSON text
        self.shards = Metrics.counter(METRICS_NAMESPACE, "shards_written")

    def process(self, rows):
        rows = sorted(rows, key=lambda row: row[0])
        paths = [path for path, _ in rows]
        pages = [page for _, page in rows]
        final = write_shard(
            self.output_dir, REGION_SHARD_PREFIX, paths,
            paths=np.array(paths, dtype=str),
            width=np.array([page["width"] for page in pages], np.int64),
            height=np.array([page["height"] for page in pages], np.int64),
            file_size=np.array([page["file_size"] for page in pages], np.int64),
            page=np.concatenate([np.full(len(page["boxes"]), number, np.int64)
                                 for number, page in enumerate(pages)]),
            boxes=np.concatenate([page["boxes"] for page in pages]).astype(np.int64),
            embedding=np.concatenate([page["embedding"] for page in pages]).astype(np.float32),
            bits=np.concatenate([page["bits"] for page in pages]).astype(np.uint8),
            model=np.array(self.model), image_size=np.array(self.image_size, np.int64),
            proposals=np.array(self.proposals))
        self.shards.inc()
        yield final


# ----------------------------------------------------------------------------- the pipeline


def model_metadata(model_dir):
    """The model card (dict) of a SavedModel version: its assets/metadata.json."""
    path = FileSystems.join(model_dir, "assets", "metadata.json")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            metadata = json.loads(handle.read().decode("utf-8"))
        missing = {"name", "version"} - set(metadata)
        if missing:
            raise KeyError(f"no {' or '.join(sorted(missing))}")
        return metadata
    except Exception as error:
        raise ValueError(f"Expected --model-dir to be an exported zoo SavedModel version "
                         f"(NAME/VERSION/ with assets/metadata.json, written by `zoo export`); "
                         f"cannot read {path}: {error}") from None


def model_id(model_dir, metadata=None):
    """The model's "<name>/<version>", from a SavedModel version's assets/metadata.json (or
    `metadata`, that file already read)."""
    metadata = metadata if metadata is not None else model_metadata(model_dir)
    return f"{metadata['name']}/{metadata['version']}"


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

    read = _read_files(pipeline, patterns, max_file_mb)
    encoded = (read.files
               | "Encode" >> RunInference(handler)
               | "Split" >> beam.ParDo(_SplitErrors()).with_outputs("errors", main="rows"))
    shards = (encoded.rows
              | "Shard" >> beam.BatchElements(min_batch_size=shard_size, max_batch_size=shard_size)
              | "Write" >> beam.ParDo(_WriteShard(output_dir, model)))
    errors = _write_errors((read.errors, encoded.errors), output_dir)
    return shards, errors


def _read_files(pipeline, patterns, max_file_mb):
    """The reading steps shared by the pipelines: patterns -> (path, bytes) in "files",
    {"path", "error"} in "errors"."""
    return (pipeline
            | "Patterns" >> beam.Create(patterns)
            | "Match" >> fileio.MatchAll()
            | "Open" >> fileio.ReadMatches(skip_directories=True)
            | "Read" >> beam.ParDo(_ReadFile(int(max_file_mb * 2**20))).with_outputs(
                "errors", main="files"))


def _write_errors(error_collections, output_dir):
    """Flatten the error PCollections and write them as output/errors-*.jsonl."""
    errors = (error_collections | "Errors" >> beam.Flatten())
    _ = (errors
         | "ErrorLines" >> beam.Map(lambda error: json.dumps(error, sort_keys=True))
         | "WriteErrors" >> beam.io.WriteToText(FileSystems.join(output_dir, ERRORS_PREFIX),
                                                file_name_suffix=".jsonl"))
    return errors


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
    state, counters = _run(
        output_dir, pipeline_args, ("images_encoded", "files_failed", "shards_written"),
        lambda pipeline: build_pipeline(pipeline, model_dir, inputs, output_dir,
                                        shard_size=shard_size, batch_size=batch_size,
                                        max_file_mb=max_file_mb))
    return EncodeRun(output_dir=output_dir, state=state, **counters)


def _run(output_dir, pipeline_args, counter_names, build):
    """Make the output folder, run the pipeline `build(pipeline)` adds its steps to, wait for
    it; -> (state, {counter: value}) from the METRICS_NAMESPACE counters."""
    if "://" not in output_dir:  # a local folder; object stores need none
        os.makedirs(output_dir, exist_ok=True)
    options = PipelineOptions(list(pipeline_args))
    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    result = pipeline.run()
    state = result.wait_until_finish()
    counters = {name: 0 for name in counter_names}
    try:
        query = result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))
        for counter in query["counters"]:
            if counter.key.metric.name in counters:
                counters[counter.key.metric.name] += counter.committed or counter.attempted or 0
    except Exception as error:  # some runners report no metrics
        log.warning("could not read the pipeline's metrics: %s", error)
    return str(state), counters


# ----------------------------------------------------------------------------- regions


def model_image_size(model_dir, metadata=None):
    """The side S of the [N, S, S, 1] images the SavedModel's `serving_default` takes: from its
    metadata's input_shape, else from the loaded signature."""
    metadata = metadata if metadata is not None else model_metadata(model_dir)
    shape = metadata.get("input_shape")
    if not shape:
        model = _load_saved_model(model_dir, ("serving_default", "hash"))
        (spec,) = model.signatures["serving_default"].structured_input_signature[1].values()
        shape = spec.shape.as_list()[1:]
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1 or not shape[0]:
        raise ValueError(f"The SavedModel {model_dir} takes images of shape {shape}; region "
                         f"encoding needs square one-channel images [S, S, 1].")
    return int(shape[0])


def proposal_settings(proposals):
    """ProposalSettings from None (the defaults), a ProposalSettings, its JSON dict, JSON text
    or the path of a .json file holding it."""
    from zoo.apps.proposals import ProposalSettings

    if isinstance(proposals, (str, os.PathLike)):
        text = os.fspath(proposals)
        if not text.lstrip().startswith("{"):
            try:
                with open(text, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as error:
                raise ValueError(f"Expected proposal settings as JSON text or a .json file; "
                                 f"cannot read {proposals!r}: {error}") from None
        try:
            proposals = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"The proposal settings are not JSON: {error}") from None
    return ProposalSettings.of(proposals)


def build_region_pipeline(pipeline, model_dir, inputs, output_dir, proposals=None,
                          shard_size=DEFAULT_PAGE_SHARD_SIZE, batch_size=DEFAULT_REGION_BATCH_SIZE,
                          pages_per_batch=DEFAULT_PAGES_PER_BATCH,
                          max_file_mb=DEFAULT_MAX_FILE_MB):
    """Add the region steps to `pipeline`; returns the PCollections (shard paths, errors)."""
    if shard_size < 1:
        raise ValueError(f"Expected shard_size >= 1, got {shard_size}.")
    metadata = model_metadata(model_dir)
    model = model_id(model_dir, metadata)
    size = model_image_size(model_dir, metadata)
    settings = proposal_settings(proposals)
    patterns = _patterns(inputs)
    handler = KeyedModelHandler(RegionModelHandler(model_dir, batch_size=batch_size,
                                                   pages_per_batch=pages_per_batch))

    read = _read_files(pipeline, patterns, max_file_mb)
    proposed = (read.files
                | "Propose" >> beam.ParDo(_ProposeRegions(size, settings)).with_outputs(
                    "errors", main="pages"))
    encoded = (proposed.pages
               | "Encode" >> RunInference(handler)
               | "Split" >> beam.ParDo(_SplitRegionErrors()).with_outputs("errors", main="pages"))
    shards = (encoded.pages
              | "Shard" >> beam.BatchElements(min_batch_size=shard_size, max_batch_size=shard_size)
              | "Write" >> beam.ParDo(_WriteRegionShard(
                  output_dir, model, size, json.dumps(settings.to_json(), sort_keys=True))))
    errors = _write_errors((read.errors, proposed.errors, encoded.errors), output_dir)
    return shards, errors


@dataclasses.dataclass(frozen=True)
class RegionRun:
    """What a `zoo beam regions` run did: counters from the pipeline's metrics, and where its
    output is."""

    pages_encoded: int
    regions_encoded: int
    files_failed: int
    shards_written: int
    output_dir: str
    state: str


def encode_regions(model_dir, inputs, output_dir, pipeline_args=(), proposals=None,
                   shard_size=DEFAULT_PAGE_SHARD_SIZE, batch_size=DEFAULT_REGION_BATCH_SIZE,
                   pages_per_batch=DEFAULT_PAGES_PER_BATCH, max_file_mb=DEFAULT_MAX_FILE_MB):
    """Run the region pipeline over the page photographs `inputs` (globs or folders) and wait
    for it (DirectRunner unless `pipeline_args` name another); returns a RegionRun.
    `proposals`: ProposalSettings, its JSON dict or text, or a .json file (default: defaults)."""
    state, counters = _run(
        output_dir, pipeline_args,
        ("pages_encoded", "regions_encoded", "files_failed", "shards_written"),
        lambda pipeline: build_region_pipeline(
            pipeline, model_dir, inputs, output_dir, proposals=proposals, shard_size=shard_size,
            batch_size=batch_size, pages_per_batch=pages_per_batch, max_file_mb=max_file_mb))
    return RegionRun(output_dir=output_dir, state=state, **counters)


# ----------------------------------------------------------------------------- reading


def read_shards(pattern):
    """(paths str [N], embeddings float32 [N, D], bits uint8 [N, K]) from every shard that
    matches `pattern` (a glob, or the output folder), in path order, each path once.
    Raises ValueError when nothing matches or the shards come from different models."""
    return _read_embedding_shards(pattern)[:3]


def _read_embedding_shards(pattern):
    """read_shards' arrays and the shards' model id."""
    pattern, files = _match_shards(pattern, SHARD_PATTERN, "encode")
    paths, embeddings, bits, models = [], [], [], {}
    for path, shard in _load_shards(files, ("paths", "embedding", "bits", "model"), "encode"):
        paths.append(shard["paths"])
        embeddings.append(shard["embedding"])
        bits.append(shard["bits"])
        models.setdefault(str(shard["model"]), path)
    _one_of(models, pattern, "models", "an index needs embeddings of one model")
    paths = np.concatenate(paths)
    embeddings = np.concatenate(embeddings).astype(np.float32)
    bits = np.concatenate(bits).astype(np.uint8)
    order = np.argsort(paths, kind="stable")
    unique = order[np.unique(paths[order], return_index=True)[1]]
    return paths[unique], embeddings[unique], bits[unique], next(iter(models))


def _match_shards(pattern, default_glob, command):
    """(pattern, sorted shard files): a folder stands for its `default_glob` files."""
    pattern = os.fspath(pattern)
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, default_glob)
    files = sorted(metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list)
    if not files:
        raise ValueError(f"No shards match {pattern!r} (expected {default_glob} files written "
                         f"by `zoo beam {command}`).")
    return pattern, files


def _load_shards(files, keys, command):
    """Yield (path, {key: array}) of each shard file, every one of `keys` read."""
    for path in files:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = io.BytesIO(handle.read())
        try:
            with np.load(data, allow_pickle=False) as shard:
                arrays = {key: shard[key] for key in keys}
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path} is not a shard written by `zoo beam {command}`: {error}") \
                from None
        yield path, arrays


def _one_of(found, pattern, what, why):
    """ValueError when the shards matching `pattern` hold more than one of `what`
    (`found`: {value: first shard path})."""
    if len(found) > 1:
        described = ", ".join(f"{value} ({path})" for value, path in found.items())
        raise ValueError(f"The shards matching {pattern!r} come from different {what}: "
                         f"{described}; {why}.")


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


@dataclasses.dataclass(frozen=True)
class Shards:
    """A run's shards read back for an index (`load_shards`): one entry of `paths` per page
    (kind "regions") or image (kind "images"), sorted, each once; rows are regions or images.

    paths str [P]; pages [P] dicts of what the shards know of each file (width, height,
    file_size); page int64 [R] each row's position in `paths`, rows grouped by page in that
    order; boxes int64 [R, 4] (x, y, w, h, page pixels) or None; embeddings float32 [R, D];
    bits uint8 [R, K]; model "<name>/<version>"; image_size S (None if the shards do not say);
    proposals the ProposalSettings JSON dict (regions); errors [(path, reason)] of the run.
    """

    kind: str
    paths: np.ndarray
    pages: list
    page: np.ndarray
    boxes: object
    embeddings: np.ndarray
    bits: np.ndarray
    model: str
    image_size: object
    proposals: object
    errors: list


_REGION_KEYS = ("paths", "width", "height", "file_size", "page", "boxes", "embedding", "bits",
                "model", "image_size", "proposals")


def read_region_shards(pattern):
    """The region shards matching `pattern` (a glob, or the output folder) as `Shards` (kind
    "regions", no errors): pages in path order, a page written twice by retried work kept
    once. Raises ValueError when nothing matches, a shard is malformed, or the shards come from
    different models or proposal settings."""
    pattern, files = _match_shards(pattern, REGION_SHARD_PATTERN, "regions")
    shards, models, settings = [], {}, {}
    for path, shard in _load_shards(files, _REGION_KEYS, "regions"):
        pages, rows = len(shard["paths"]), len(shard["page"])
        consistent = (
            shard["paths"].ndim == 1 and all(shard[key].shape == (pages,) for key in
                                             ("width", "height", "file_size"))
            and shard["boxes"].shape == (rows, 4) and shard["embedding"].ndim == 2
            and len(shard["embedding"]) == rows and shard["bits"].ndim == 2
            and len(shard["bits"]) == rows
            and (rows == 0 or 0 <= shard["page"].min() and shard["page"].max() < pages))
        if not consistent:
            raise ValueError(f"{path} is not a shard written by `zoo beam regions`: its arrays "
                             f"do not agree in shape.")
        models.setdefault(f"{shard['model']} (image size {int(shard['image_size'])})", path)
        settings.setdefault(str(shard["proposals"]), path)
        shards.append(shard)
    _one_of(models, pattern, "models", "an index needs embeddings of one model")
    _one_of(settings, pattern, "proposal settings",
            "an index needs regions proposed one way")
    offsets = np.cumsum([0] + [len(shard["paths"]) for shard in shards])
    paths = np.concatenate([shard["paths"] for shard in shards])
    order = np.argsort(paths, kind="stable")
    unique = order[np.unique(paths[order], return_index=True)[1]]  # first copy, path order
    position = np.full(len(paths), -1, np.int64)
    position[unique] = np.arange(len(unique))
    row_page = position[np.concatenate([shard["page"] + offset
                                        for shard, offset in zip(shards, offsets)])]
    keep = np.flatnonzero(row_page >= 0)
    rows = keep[np.argsort(row_page[keep], kind="stable")]

    def column(key):
        return np.concatenate([shard[key] for shard in shards])

    facts = {key: column(key)[unique] for key in ("width", "height", "file_size")}
    return Shards(
        kind="regions", paths=paths[unique],
        pages=[{key: int(facts[key][number]) for key in facts} for number in range(len(unique))],
        page=row_page[rows], boxes=column("boxes").astype(np.int64)[rows],
        embeddings=column("embedding").astype(np.float32)[rows],
        bits=column("bits").astype(np.uint8)[rows], model=str(shards[0]["model"]),
        image_size=int(shards[0]["image_size"]), proposals=json.loads(str(shards[0]["proposals"])),
        errors=[])


def load_shards(source):
    """`Shards` of a `zoo beam regions` or `zoo beam encode` run, for `zoo index build
    --from-shards`: `source` is the run's output folder (region shards if it holds any, else
    embedding shards; its errors-*.jsonl become `errors`) or a glob of shard files of one
    kind."""
    source = os.fspath(source)
    folder = os.path.isdir(source) or not (source.endswith(".npz") or any(
        char in source for char in "*?["))  # a folder, here or on an object store
    if folder:
        regions = FileSystems.match([FileSystems.join(source, REGION_SHARD_PATTERN)])[0]
        kind = "regions" if regions.metadata_list else "images"
        if kind == "images" and not FileSystems.match(
                [FileSystems.join(source, SHARD_PATTERN)])[0].metadata_list:
            raise ValueError(f"No shards in {source!r}: expected the {REGION_SHARD_PATTERN} "
                             f"files of `zoo beam regions` or the {SHARD_PATTERN} files of "
                             f"`zoo beam encode`.")
        pattern = FileSystems.join(source, REGION_SHARD_PATTERN if kind == "regions"
                                   else SHARD_PATTERN)
        errors = [(error.get("path"), error.get("error")) for error in read_errors(source)]
    else:
        pattern, files = source, [m.path for m in FileSystems.match([source])[0].metadata_list]
        names = {os.path.basename(path).split("-", 1)[0] + "-" for path in files}
        if names == {REGION_SHARD_PREFIX}:
            kind = "regions"
        elif names <= {SHARD_PREFIX}:
            kind = "images"  # (nothing matched: read_shards says so)
        else:
            raise ValueError(f"Expected {pattern!r} to match shards of one kind, "
                             f"{REGION_SHARD_PATTERN} or {SHARD_PATTERN}; it matches "
                             f"{sorted(names)} files.")
        errors = []
    if kind == "regions":
        return dataclasses.replace(read_region_shards(pattern), errors=errors)
    paths, embeddings, bits, model = _read_embedding_shards(pattern)
    return Shards(kind="images", paths=paths, pages=[{} for _ in paths],
                  page=np.arange(len(paths), dtype=np.int64), boxes=None, embeddings=embeddings,
                  bits=bits, model=model, image_size=None, proposals=None, errors=errors)

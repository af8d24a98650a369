"""The on-disk format of an index: a directory whose manifest.json is the only commit point.

    my_archive.idx/
      manifest.json                       format name and version, models, counts, the sha256
                                          of every file below that belongs to the index
      items-000001.json                   a segment's items: [{"path": ..., "metadata": {...}}]
      sketch_gan_merchant.embeddings-000001.npy    float32 [n, D], L2-normalised
      sketch_gan_merchant.codes-000001.npy         uint8 [n, K / 8], numpy.packbits order
      regions-000001.npy                  region indexes only: int64 [n, 5] (page id, x, y, w, h)
      sketch_gan_merchant.codes-hnsw-<digest>.faiss (+ .sha256)   optional: the saved HNSW
                                          graph of approximate search, named by a digest of the
                                          data it indexes (derived: rebuilt when missing/stale)
      .pending/                           an ingest in progress (build or add):
        progress.json                     what is being encoded (models, kind, archive metadata)
        chunk-000000.npz ...              encoded chunks, each complete or absent
      .lock                               held (flock) by the process writing the index

A build or an add encodes files in chunks; each chunk is written to a temporary file and
renamed into .pending/, so a killed run loses at most the chunk it was encoding and the next
run resumes from the chunks on disk. When all files are encoded the chunks become one new
segment: its files are written under new names, flushed, and then manifest.json is replaced
(os.replace, atomic). Until that rename the previous manifest, and every file it names, is
untouched, so a write killed at any point leaves the previous index loadable. Item ids are
positions in segment order and never change.

A region index (`Index.build(..., regions=True)`, manifest field "regions" holding the proposal
settings) indexes page photographs: its items are pages, and its embedding and code rows are
the pages' candidate regions, each row's page and box (in page pixels) in the segment's regions
file. Its segments count regions ("count") and pages ("pages"); the manifest likewise.

Reading verifies the format name and version and every file's sha256, size and array shape
before anything is used, and refuses anything else with a ValueError that says what is wrong.
"""

import contextlib
import datetime
import fcntl
import glob
import json
import os
import re

import numpy as np

from zoo.atomic import _fsync_directory, atomic_file  # noqa: F401 - atomic_file: this API
from zoo.weights import sha256_of

FORMAT = "gan-encoder-zoo-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PENDING = ".pending"
PROGRESS = "progress.json"
LOCK = ".lock"

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SEGMENT_FILE = re.compile(
    r"^(?:items|regions|.+\.(?:embeddings|codes))-(\d{6})\.(?:json|npy)$")


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def check_model_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"Expected a model name of letters, digits, '_', '.' or '-'; "
                         f"got {name!r}.")
    return name


# ----------------------------------------------------------------------------- atomic files


def write_json(path, data):
    with atomic_file(path) as stream:
        stream.write(json.dumps(data, indent=1, sort_keys=False).encode("utf-8"))




@contextlib.contextmanager
def writer_lock(directory):
    """Hold the index's write lock (one writer at a time); ValueError when another holds it."""
    handle = open(os.path.join(directory, LOCK), "a+b")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"Another process is writing the index {directory!r}; wait for it "
                             f"to finish.") from None
        yield
    finally:
        handle.close()


# ----------------------------------------------------------------------------- reading


def read_manifest(directory):
    """The validated manifest dict of the index at `directory`, or ValueError."""
    if not os.path.exists(directory):
        raise ValueError(f"No index at {directory!r}: it does not exist.")
    if not os.path.isdir(directory):
        raise ValueError(f"{directory!r} is a file, not an index; an index is a directory "
                         f"written by `zoo index build` (holding {MANIFEST}).")
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(directory, PENDING, PROGRESS)):
            done = len(pending_chunk_files(directory))
            raise ValueError(f"{directory!r} holds an interrupted `zoo index build` ({done} "
                             f"chunks encoded, not yet an index); rerun the same build command "
                             f"to resume it.")
        raise ValueError(f"{directory!r} is not a zoo index: it has no {MANIFEST}.")
    try:
        with open(path, "rb") as stream:
            manifest = json.loads(stream.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"The index manifest {path!r} is corrupt (not JSON: {error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path!r} is not a zoo index manifest (format {found!r}, expected "
                         f"{FORMAT!r}).")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"The index {directory!r} has format version {version!r}; this zoo "
                         f"reads version {FORMAT_VERSION}. Rebuild it with this version.")
    try:
        models = manifest["models"]
        segments = manifest["segments"]
        count = int(manifest["count"])
        names = [check_model_name(model["name"]) for model in models]
        for model in models:
            int(model["embedding_dim"]), int(model["num_bits"])
        regions = is_region_index(manifest)
        for segment in segments:
            int(segment["number"]), int(segment["count"])
            keys = ["items"] + [f"{name}.{kind}" for name in names for kind in ("embeddings",
                                                                                "codes")]
            if regions:
                int(segment["pages"])
                keys.append("regions")
            for key in keys:
                record = segment["files"][key]
                str(record["name"]), int(record["bytes"]), str(record["sha256"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"The index manifest {path!r} is corrupt (missing or bad field: "
                         f"{error}).") from None
    if not names:
        raise ValueError(f"The index manifest {path!r} is corrupt: it names no model.")
    if sum(int(segment["count"]) for segment in segments) != count:
        raise ValueError(f"The index manifest {path!r} is corrupt: its segments hold "
                         f"{sum(int(s['count']) for s in segments)} items, not {count}.")
    if regions and sum(int(segment["pages"]) for segment in segments) != int(
            manifest.get("pages", -1)):
        raise ValueError(f"The index manifest {path!r} is corrupt: its segments hold "
                         f"{sum(int(s['pages']) for s in segments)} pages, not "
                         f"{manifest.get('pages')}.")
    return manifest


def is_region_index(manifest):
    """True for an index of page regions (see the module docstring)."""
    return bool((manifest or {}).get("regions"))


def _verified_path(directory, record, verify=True):
    """Path of a manifest file record after checking its name, size and (with `verify`)
    sha256."""
    name = record["name"]
    if not _NAME.match(name) or name in (MANIFEST, PENDING, LOCK):
        raise ValueError(f"The index manifest names a bad file {name!r}.")
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise ValueError(f"The index {directory!r} is incomplete: {name} is missing.")
    if os.path.getsize(path) != record["bytes"]:
        raise ValueError(f"The index {directory!r} is corrupt: {name} has "
                         f"{os.path.getsize(path)} bytes, the manifest says {record['bytes']}.")
    if verify and sha256_of(path) != record["sha256"]:
        raise ValueError(f"The index {directory!r} is corrupt: {name} does not match its "
                         f"sha256 in the manifest.")
    return path


def _load_array(directory, record, verify, dtype, shape):
    path = _verified_path(directory, record, verify)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"The index {directory!r} has a corrupt array "
                         f"{os.path.basename(path)}: {error}") from None
    if array.dtype != dtype or array.shape != shape:
        raise ValueError(f"The index {directory!r} is corrupt: "
                         f"{os.path.basename(path)} is {array.dtype} {array.shape}, "
                         f"expected {np.dtype(dtype)} {shape}.")
    return array


def read_segment(directory, manifest, segment, verify=True):
    """(items list, {model: (embeddings float32 [n, D], codes uint8 [n, B])}, regions) of one
    segment, checked against the manifest (sizes, shapes and, with `verify`, every file's
    sha256); arrays are memory-mapped read-only. `regions` is int64 [n, 5] (page id, x, y, w,
    h) in a region index, None otherwise."""
    count = int(segment["count"])
    regions = None
    if is_region_index(manifest):
        regions = _load_array(directory, segment["files"]["regions"], verify, np.int64,
                              (count, 5))
    with open(_verified_path(directory, segment["files"]["items"], verify), "rb") as stream:
        try:
            items = json.loads(stream.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"The index {directory!r} has a corrupt items file: {error}") from None
    expected = int(segment["pages"]) if regions is not None else count
    if not isinstance(items, list) or len(items) != expected:
        raise ValueError(f"The index {directory!r} is corrupt: segment {segment['number']} "
                         f"should hold {expected} items.")
    arrays = {}
    for model in manifest["models"]:
        name, dim = model["name"], int(model["embedding_dim"])
        code_bytes = -(-int(model["num_bits"]) // 8)
        arrays[name] = tuple(
            _load_array(directory, segment["files"][f"{name}.{kind}"], verify, dtype, shape)
            for kind, dtype, shape in (("embeddings", np.float32, (count, dim)),
                                       ("codes", np.uint8, (count, code_bytes))))
    return items, arrays, regions


# ----------------------------------------------------------------------------- pending chunks


def pending_dir(directory):
    return os.path.join(directory, PENDING)


def pending_chunk_files(directory):
    """The complete encoded chunks of an interrupted write, in order."""
    return sorted(glob.glob(os.path.join(pending_dir(directory), "chunk-" + "[0-9]" * 6 + ".npz")))


def next_chunk_number(directory):
    """The number the next pending chunk takes: one after the last one on disk."""
    return max((int(os.path.basename(path)[6:12]) for path in pending_chunk_files(directory)),
               default=-1) + 1


def read_progress(directory):
    path = os.path.join(pending_dir(directory), PROGRESS)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as stream:
            return json.loads(stream.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"The progress record {path!r} of an interrupted index write is corrupt "
                         f"({error}); delete {pending_dir(directory)!r} to start over.") from None


def start_pending(directory, progress):
    os.makedirs(pending_dir(directory), exist_ok=True)
    write_json(os.path.join(pending_dir(directory), PROGRESS), progress)


def write_chunk(directory, number, items, errors, warnings, arrays, regions=None):
    """Persist one encoded chunk atomically. `items`: [{"path", "metadata"}]; `errors` and
    `warnings`: [(path, reason)]; `arrays`: {model: (embeddings, codes)}; `regions` (region
    indexes): int64 [n, 5] (item position in this chunk, x, y, w, h) of the arrays' rows."""
    payload = {"items": np.array(json.dumps(items)), "errors": np.array(json.dumps(errors)),
               "warnings": np.array(json.dumps(warnings))}
    if regions is not None:
        payload["regions"] = np.asarray(regions, np.int64).reshape(-1, 5)
    for name, (embeddings, codes) in arrays.items():
        payload[f"{name}.embeddings"] = np.asarray(embeddings, np.float32)
        payload[f"{name}.codes"] = np.asarray(codes, np.uint8)
    path = os.path.join(pending_dir(directory), f"chunk-{number:06d}.npz")
    with atomic_file(path) as stream:
        np.savez(stream, **payload)
    return path


def read_chunk(path, models):
    """(items, errors, warnings, {model: (embeddings, codes)}) of a chunk file written by
    write_chunk; only the arrays of `models` are read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            items = json.loads(str(stored["items"]))
            errors = [tuple(error) for error in json.loads(str(stored["errors"]))]
            warnings = [tuple(warning) for warning in json.loads(str(stored["warnings"]))]
            arrays = {name: (stored[f"{name}.embeddings"], stored[f"{name}.codes"])
                      for name in models}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"The encoded chunk {path!r} of an interrupted index write is "
                         f"unreadable ({error}); delete it to encode its files again.") from None
    return items, errors, warnings, arrays


def read_chunk_regions(path):
    """int64 [n, 5] (item position in the chunk, x, y, w, h) of a region index's chunk."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return np.asarray(stored["regions"], np.int64).reshape(-1, 5)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"The encoded chunk {path!r} of an interrupted index write holds no "
                         f"readable regions ({error}); delete it to encode its files "
                         f"again.") from None


def clear_pending(directory):
    folder = pending_dir(directory)
    for path in glob.glob(os.path.join(folder, "*")) + glob.glob(os.path.join(folder, ".*")):
        with contextlib.suppress(OSError):
            os.remove(path)
    with contextlib.suppress(OSError):
        os.rmdir(folder)


# ----------------------------------------------------------------------------- committing


def _next_segment_number(directory, manifest):
    """A number no committed segment and no leftover of a killed commit uses."""
    used = [int(segment["number"]) for segment in (manifest or {}).get("segments", [])]
    for name in os.listdir(directory):
        match = _SEGMENT_FILE.match(name)
        if match:
            used.append(int(match.group(1)))
    return max(used, default=0) + 1


def _file_record(path):
    return {"name": os.path.basename(path), "bytes": os.path.getsize(path),
            "sha256": sha256_of(path)}


def commit_segment(directory, manifest, models, chunk_files, segment_info=None, archive=None,
                   regions=None):
    """Turn the pending chunks into a new segment and atomically publish a manifest naming it.

    `manifest` is the current manifest (None for a new index), `models` the model records
    [{"name", "embedding_dim", "num_bits", ...}], `segment_info` extra facts recorded with the
    segment, `archive` the archive metadata (default: the current one), `regions` the proposal
    settings of a region index (None: an index of images). Returns the new manifest. Arrays
    are streamed chunk by chunk into memory-mapped .npy files.
    """
    names = [model["name"] for model in models]
    number = _next_segment_number(directory, manifest)
    page_counts = [len(read_chunk(path, [])[0]) for path in chunk_files]
    if regions is not None:  # rows are regions; their page ids become the index's
        first_page = int((manifest or {}).get("pages", 0))
        tables = [read_chunk_regions(path) for path in chunk_files]
        offsets = np.cumsum([0] + page_counts[:-1]) + first_page
        for table, offset, pages in zip(tables, offsets, page_counts):
            if len(table) and not (0 <= table[:, 0].min() and table[:, 0].max() < pages):
                raise ValueError("A pending chunk's regions name pages it does not hold; delete "
                                 "the index's .pending folder to encode again.")
            table[:, 0] += offset
        counts = [len(table) for table in tables]
    else:
        counts = page_counts
    count = sum(counts)
    targets = {}  # (model, kind) -> (final path, temporary path, memmap)
    for model in models:
        shapes = {"embeddings": (np.float32, (count, int(model["embedding_dim"]))),
                  "codes": (np.uint8, (count, -(-int(model["num_bits"]) // 8)))}
        for kind, (dtype, shape) in shapes.items():
            path = os.path.join(directory, f"{model['name']}.{kind}-{number:06d}.npy")
            temporary = f"{path}.tmp"
            targets[model["name"], kind] = (path, temporary, np.lib.format.open_memmap(
                temporary, mode="w+", dtype=dtype, shape=shape))
    all_items, start = [], 0
    for path, size in zip(chunk_files, counts):
        items, _, _, arrays = read_chunk(path, names)
        for name in names:
            for kind, block in zip(("embeddings", "codes"), arrays[name]):
                target = targets[name, kind][2]
                if block.shape != (size, *target.shape[1:]):
                    raise ValueError(f"The pending chunk {path!r} holds {name} {kind} of shape "
                                     f"{block.shape}, expected {(size, *target.shape[1:])}; "
                                     f"delete it to encode its files again.")
                target[start : start + size] = block
        all_items.extend(items)
        start += size

    files = {}
    items_path = os.path.join(directory, f"items-{number:06d}.json")
    with atomic_file(items_path) as stream:
        stream.write(json.dumps(all_items).encode("utf-8"))
    files["items"] = _file_record(items_path)
    if regions is not None:
        regions_path = os.path.join(directory, f"regions-{number:06d}.npy")
        with atomic_file(regions_path) as stream:
            np.save(stream, np.concatenate(tables) if tables else np.zeros((0, 5), np.int64))
        files["regions"] = _file_record(regions_path)
    for (name, kind), (path, temporary, array) in targets.items():
        array.flush()
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        files[f"{name}.{kind}"] = _file_record(path)
    targets.clear()
    _fsync_directory(directory)

    previous = manifest or {}
    new_manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": previous.get("created", now()),
        "updated": now(),
        "count": int(previous.get("count", 0)) + count,
        "metadata": archive if archive is not None else previous.get("metadata", {}),
        "models": models,
        "segments": list(previous.get("segments", [])) + [
            {"number": number, "count": count, "first_id": int(previous.get("count", 0)),
             "added": now(), **(segment_info or {}), "files": files}],
    }
    if regions is not None:
        new_manifest["regions"] = regions
        new_manifest["pages"] = int(previous.get("pages", 0)) + sum(page_counts)
        new_manifest["segments"][-1]["pages"] = sum(page_counts)
    write_json(os.path.join(directory, MANIFEST), new_manifest)
    remove_unreferenced(directory, new_manifest)
    return new_manifest


def remove_unreferenced(directory, manifest):
    """Delete segment files (and temporaries) left by killed commits that no manifest names."""
    referenced = {record["name"] for segment in manifest["segments"]
                  for record in segment["files"].values()}
    for name in os.listdir(directory):
        leftover = (_SEGMENT_FILE.match(name) and name not in referenced) or (
            name.endswith(".tmp") and (_SEGMENT_FILE.match(name[:-4]) or name.startswith(".")))
        if leftover:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))

"""Files in, encoded items out: listing a source, item metadata, preparing images, encoding.

An item is {"path": absolute path, "metadata": {...}} with metadata

    relative_path   the path below the source folder ('/'-separated)
    file_size       bytes
    mtime           modification time, ISO 8601 UTC
    width, height   of the decoded image, pixels
    user            optional: the JSON object of a sidecar file `<image file>.json`, or the row of
                    `metadata.csv` in the source folder whose `path` column names the image

Images are decoded with the zoo's decoder (`zoo.data.images.decode_image`, any PIL format) and
prepared with `zoo.apps.index.preprocess.preprocess_numpy` (the zoo's preprocessing) by a small
thread pool, one chunk ahead of the encoder, so that decoding, preprocessing and encoding
overlap. Encoding runs in-process (`LocalEncoder`, `zoo.load`) or through a running
TF-Serving-compatible server (`ServerEncoder`, `serving.client.EncoderClient`); both return
L2-normalised float32 embeddings and the hash head's bits packed eight a byte.
"""

import concurrent.futures
import csv
import datetime
import json
import os

import numpy as np

from zoo.data.images import decode_image, list_image_files
from zoo.apps.index.preprocess import preprocess_numpy

SIDECAR_SUFFIX = ".json"
PREPARE_GROUP = 16  # image files a preparing thread takes at a time (pages go one by one)
METADATA_CSV = "metadata.csv"


# ----------------------------------------------------------------------------- sources


def list_source(source):
    """(absolute image paths, root folder for relative paths) of a folder (recursive), one
    image file, or a list of image file paths."""
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if os.path.isdir(source):
            return [os.path.abspath(path) for path in list_image_files(source)], \
                os.path.abspath(source)
        if os.path.isfile(source):
            return [os.path.abspath(source)], os.path.dirname(os.path.abspath(source))
        raise ValueError(f"Expected a folder of images, an image file or a list of image "
                         f"files; {source!r} does not exist.")
    if isinstance(source, (bytes, bytearray)) or not hasattr(source, "__iter__"):
        raise ValueError(f"Expected a folder, an image file or a list of image file paths; got "
                         f"{type(source).__name__}.")
    paths = []
    for path in source:
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"Expected image file paths in the list; got "
                             f"{type(path).__name__} {path!r}.")
        paths.append(os.path.abspath(os.fspath(path)))
    if not paths:
        return [], os.getcwd()
    root = os.path.commonpath([os.path.dirname(path) for path in paths])
    return paths, root


class UserMetadata:
    """Per-image user metadata of a source: `<image>.json` sidecars and `<root>/metadata.csv`."""

    def __init__(self, root):
        self.root = root
        self.rows = {}
        self.warnings = []
        self._sidecars = {}  # folder -> names of the sidecar files in it, listed once
        path = os.path.join(root, METADATA_CSV)
        if os.path.isfile(path):
            try:
                with open(path, newline="", encoding="utf-8-sig") as stream:
                    for row in csv.DictReader(stream):
                        key = (row.pop("path", None) or "").replace(os.sep, "/")
                        if key:
                            self.rows[key] = {k: v for k, v in row.items() if k is not None}
                if not self.rows:
                    self.warnings.append((path, "no rows with a `path` column; ignored"))
            except (OSError, UnicodeDecodeError, csv.Error) as error:
                self.warnings.append((path, f"unreadable ({error}); ignored"))

    def __call__(self, path, relative_path):
        """(user metadata dict or None, warning or None) of one image."""
        user = dict(self.rows.get(relative_path, {}))
        sidecar = path + SIDECAR_SUFFIX
        if self._has_sidecar(sidecar):
            try:
                with open(sidecar, encoding="utf-8") as stream:
                    data = json.load(stream)
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got {type(data).__name__}")
                user.update(data)
            except (OSError, UnicodeDecodeError, ValueError) as error:
                return user or None, (sidecar, f"metadata sidecar ignored: {error}")
        return user or None, None

    def _has_sidecar(self, sidecar):
        """Whether the file `sidecar` exists, from one listing of its folder rather than a
        stat of every image's possible sidecar (which showed in the build's profile)."""
        folder, name = os.path.split(sidecar)
        names = self._sidecars.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as entries:
                    names = frozenset(entry.name for entry in entries
                                      if entry.name.endswith(SIDECAR_SUFFIX) and entry.is_file())
            except OSError:
                names = frozenset()
            self._sidecars[folder] = names  # threads may list a folder twice: same result
        return name in names


def file_metadata(path, root):
    stat = os.stat(path)
    mtime = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc)
    prefix = os.path.join(root, "")
    relative = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)
    return {"relative_path": relative.replace(os.sep, "/"),
            "file_size": stat.st_size, "mtime": mtime.isoformat(timespec="seconds")}


# ----------------------------------------------------------------------------- queries


def _to_gray(array):
    """A decoded image array -> float32 [H, W] in [0, 1]: gray, gray + alpha, RGB or RGBA
    (alpha composited on white paper, RGB weighted as PIL's "L" conversion)."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / max(float(array.max()), 1.0)
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError("The query image contains NaN or infinite values.")
        low, high = float(array.min(initial=0)), float(array.max(initial=0))
        if low < -1e-3 or high > 1 + 1e-3:
            raise ValueError(f"Expected a float query image in [0, 1]; got values in "
                             f"[{low:.3g}, {high:.3g}] (pass uint8 for 0-255 data).")
        array = np.clip(array, 0.0, 1.0)
    else:
        raise ValueError(f"Expected a query image array of uint8, uint16 or float; got "
                         f"{array.dtype}.")
    if array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4):
        if array.shape[-1] in (2, 4):  # alpha: transparent pixels are white paper
            alpha = array[..., -1:]
            array = array[..., :-1] * alpha + (1.0 - alpha)
        if array.shape[-1] == 3:
            array = array @ np.array([0.299, 0.587, 0.114], np.float32)
        else:
            array = array[..., 0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"Expected a query image array [H, W], [H, W, 1], [H, W, 3] or "
                         f"[H, W, 4]; got shape {array.shape}.")
    return array.astype(np.float32)


def prepare_query(query, size):
    """float32 [size, size, 1] of a query: a path, image file bytes, a PIL image, a decoded
    image array of any size, or an already preprocessed [size, size] / [size, size, 1] array
    (taken as it is)."""
    if isinstance(query, (str, os.PathLike, bytes, bytearray)) or hasattr(query, "getpixel"):
        if isinstance(query, (str, os.PathLike)) and not os.path.isfile(query):
            raise ValueError(f"The query image {os.fspath(query)!r} does not exist.")
        return preprocess_numpy(decode_image(query), size=size)[..., None]
    array = np.asarray(query)
    if array.dtype == object or array.ndim not in (2, 3):
        raise ValueError(f"Expected a query image: a path, file bytes, or an image array "
                         f"[H, W(, C)]; got {type(query).__name__} of shape "
                         f"{getattr(array, 'shape', None)}.")
    gray = _to_gray(array)
    if array.shape[:2] == (size, size) and (array.ndim == 2 or array.shape[-1] == 1):
        return gray[..., None]  # already preprocessed (strokes 1 on black 0)
    return preprocess_numpy(gray, size=size)[..., None]


# ----------------------------------------------------------------------------- encoders


class LocalEncoder:
    """Encode in this process with the zoo's registered model `name` (shipped weights), in
    `precision` (zoo.precision; the record says which, so that queries use the same)."""

    def __init__(self, name, batch_size=256, precision="float32"):
        import zoo

        self.encoder = zoo.load(name, precision=precision)
        if self.encoder.hash_head is None:
            raise ValueError(f"Model {name!r} has no hash head; an index needs binary codes.")
        self.name, self.batch_size = name, batch_size
        self.image_size = self.encoder.image_size
        published = self.encoder.entry.published if self.encoder.entry is not None else {}
        self.record = {"name": name, "embedding_dim": self.encoder.embedding_dim,
                       "num_bits": self.encoder.hash_head.num_bits,
                       "image_size": self.image_size,
                       "precision": self.encoder.precision,
                       "weights_sha256": published.get("sha256"),
                       "hash_head_sha256": (published.get("hash_head") or {}).get("sha256")}

    def __call__(self, images):
        """float32 [N, S, S, 1] -> (embeddings float32 [N, D], packed codes uint8 [N, K / 8]),
        the codes computed as `Encoder.hash` computes them, from the same embeddings."""
        import tensorflow as tf

        from zoo.hashing import linear_hash_bits_tf
        from zoo.hashing import pack_bits

        embeddings = self.encoder.encode(images, batch_size=self.batch_size)
        head = self.encoder.hash_head
        bits = linear_hash_bits_tf(tf.constant(embeddings), tf.constant(head.mean),
                                   tf.constant(head.projection)).numpy()
        return embeddings, pack_bits(bits)

    def close(self):
        pass


class ServerEncoder:
    """Encode through a running TF-Serving-compatible server ("host:port", gRPC) that serves
    the zoo's exported model `name`: prepared images go to its `serving_default` and `hash`
    signatures with serving.client.EncoderClient."""

    def __init__(self, name, target, batch_size=256):
        from serving.client import EncoderClient

        self.name = name
        self.client = EncoderClient(target, name, batch_size=batch_size, timeout=60)
        try:
            signature = self.client.metadata()["signature_def"]["serving_default"]
            (_, shape), = signature["inputs"].values()
            self.image_size = int(shape[1])
            probe = np.zeros((1, self.image_size, self.image_size, 1), np.float32)
            embedding_dim = self.client.encode(probe).shape[1]
            num_bits = self.client.hash(probe).bits.shape[1]
        except Exception as error:  # noqa: BLE001 - grpc errors, missing signatures
            self.client.close()
            details = error.details() if hasattr(error, "details") else error
            raise ValueError(f"Cannot use model {name!r} on the server {target!r}: "
                             f"{details}") from None
        if self.image_size < 8:
            raise ValueError(f"The server's {name!r} takes images of size {shape}; expected "
                             f"[N, S, S, 1].")
        self.record = {"name": name, "embedding_dim": int(embedding_dim),
                       "num_bits": int(num_bits), "image_size": self.image_size,
                       "weights_sha256": None, "hash_head_sha256": None}

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        return (self.client.encode(images).astype(np.float32),
                self.client.hash(images).packed.astype(np.uint8))

    def close(self):
        self.client.close()


def make_encoders(models, server=None, batch_size=256, precision="float32"):
    """One encoder per model name: through `server` if given, else in-process in `precision`
    (a server's models compute in the precision they were exported with)."""
    return [ServerEncoder(name, server, batch_size) if server
            else LocalEncoder(name, batch_size, precision) for name in models]


# ----------------------------------------------------------------------------- the pipeline


def _prepare_file(path, root, sizes, user_metadata):
    """(item, {size: image [S, S]}, warning, None) of one file, or (None, None, reason, None)
    when it cannot be used."""
    try:
        metadata = file_metadata(path, root)
        gray = decode_image(path)
        images = {size: preprocess_numpy(gray, size=size) for size in sizes}
    except (OSError, ValueError) as error:
        return None, None, str(error), None
    metadata["height"], metadata["width"] = (int(side) for side in gray.shape)
    user, warning = user_metadata(path, metadata["relative_path"])
    if user is not None:
        metadata["user"] = user
    return {"path": path, "metadata": metadata}, images, warning, None


def _prepare_page(path, root, sizes, user_metadata, settings):
    """(item, {size: images [M, S, S]}, warning, boxes [M, 4]) of one page photograph's
    candidate regions, or (None, None, reason, None) when it cannot be used."""
    from zoo.apps.index.regions import check_page_size, region_images_by_size

    try:
        check_page_size(path)
        metadata = file_metadata(path, root)
        gray = decode_image(path)
        boxes, images = region_images_by_size(gray, sizes, settings)
    except (OSError, ValueError) as error:
        return None, None, str(error), None
    if not len(boxes):
        return None, None, "no ink regions found (a blank page?)", None
    metadata["height"], metadata["width"] = (int(side) for side in gray.shape)
    metadata["regions"] = int(len(boxes))
    user, warning = user_metadata(path, metadata["relative_path"])
    if user is not None:
        metadata["user"] = user
    return {"path": path, "metadata": metadata}, images, warning, boxes


def encode_chunks(paths, root, encoders, chunk_size=1024, workers=None, regions=None):
    """Yield one (items, errors, warnings, {model: (embeddings, codes)}, region table) per
    chunk of `paths`.

    Files of the next chunk are decoded and preprocessed by a thread pool while the current
    chunk is encoded. `errors` are (path, reason) of files that could not be used (corrupt,
    unreadable, blank); they are left out of `items`, never fatal. With `regions` (proposal
    settings, zoo.apps.proposals.ProposalSettings) each file is a page whose candidate regions are
    encoded: the arrays' rows are regions and the region table (int64 [n, 5]: the page's
    position in `items`, x, y, w, h) says whose; without, the table is None.
    """
    if chunk_size < 1:
        raise ValueError(f"Expected chunk_size >= 1, got {chunk_size}.")
    workers = workers or min(4, os.cpu_count() or 1)
    sizes = sorted({encoder.image_size for encoder in encoders})
    user_metadata = UserMetadata(root)
    chunks = [paths[start : start + chunk_size] for start in range(0, len(paths), chunk_size)]
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="index-prep") as pool:
        def prepare(group):
            if regions is not None:
                return [_prepare_page(path, root, sizes, user_metadata, regions)
                        for path in group]
            return [_prepare_file(path, root, sizes, user_metadata) for path in group]

        def submit(chunk):  # files go to the threads in groups: a task each costs more
            step = 1 if regions is not None else PREPARE_GROUP
            return [pool.submit(prepare, chunk[start:start + step])
                    for start in range(0, len(chunk), step)]

        upcoming = submit(chunks[0]) if chunks else []
        for number, chunk in enumerate(chunks):
            prepared = [result for future in upcoming for result in future.result()]
            upcoming = submit(chunks[number + 1]) if number + 1 < len(chunks) else []
            items, errors, images = [], [], {size: [] for size in sizes}
            table = []
            warnings = user_metadata.warnings if number == 0 else []
            for path, (item, item_images, note, boxes) in zip(chunk, prepared):
                if item is None:
                    errors.append((path, note))
                    continue
                if boxes is not None:
                    table.append(np.concatenate([np.full((len(boxes), 1), len(items)), boxes],
                                                axis=1))
                items.append(item)
                if note:
                    warnings.append(note)
                for size in sizes:
                    images[size].append(item_images[size])
            # Files give one image each; pages give a stack of region images each.
            join = np.stack if regions is None else np.concatenate
            batches = {size: join(stack) for size, stack in images.items() if stack}
            if regions is not None:
                table = np.concatenate(table).astype(np.int64) if table else \
                    np.zeros((0, 5), np.int64)
            else:
                table = None
            arrays = {}
            for encoder in encoders:
                if encoder.image_size in batches:
                    arrays[encoder.name] = encoder(batches[encoder.image_size][..., None])
                else:
                    record = encoder.record
                    arrays[encoder.name] = (
                        np.zeros((0, record["embedding_dim"]), np.float32),
                        np.zeros((0, -(-record["num_bits"] // 8)), np.uint8))
            yield items, errors, warnings, arrays, table

"""`Index`: an archive's images encoded by one or more zoo models, persisted, searchable.

    idx = Index.build("my_archive.idx", "my_archive/", models=("sketch_neighbours_merchant",))
    idx = Index.open("my_archive.idx")
    report = idx.add("more_scans/")               # AddReport(added, skipped, ...)
    hits = idx.search("query.png", k=8)            # [Hit(rank, id, path, score, metadata)]
    hits = idx.search("query.png", mode="hamming") # score = Hamming distance of the codes

    pages = Index.build("pages.idx", "pages/", regions=True)   # models: zoo.registry.RECOMMENDED
    for hit in pages.search("mark.png", k=20):     # [PageHit(rank, id, path, score, box, ...)]
        print(hit.rank, hit.score, hit.path, hit.box)   # box = (x, y, w, h) in page pixels

Every model contributes an L2-normalised embedding (searched by cosine similarity, faiss
IndexFlatIP) and its hash head's binary code (searched by Hamming distance, faiss
IndexBinaryFlat) per item; `approximate=True` searches HNSW graphs instead (built on first
use and kept beside the index). The on-disk format and its crash safety are described in
zoo/apps/index/store.py, the item metadata and the encoding pipeline in zoo/apps/index/encoding.py,
region indexes of page photographs (items are pages, rows are their candidate regions) and their
two-stage search in zoo/apps/index/regions.py.
"""

import dataclasses
import glob
import hashlib
import json
import logging
import os
import threading
import uuid

import numpy as np

from zoo.apps.index import store
from zoo.apps.index import regions as region_search
from zoo.apps.index.encoding import encode_chunks, list_source, make_encoders, prepare_query
from zoo.apps.index.search import make_searcher, searcher_class
from zoo.apps.proposals import ProposalSettings
from zoo.registry import RECOMMENDED

log = logging.getLogger(__name__)

DEFAULT_MODELS = (RECOMMENDED,)  # images and page regions alike
MODES = ("embedding", "hamming")
GRAPH_VERSION = 1  # of the saved HNSW graphs' parameters (zoo.apps.index.search defaults)


@dataclasses.dataclass(frozen=True)
class Item:
    """One indexed image: its stable id, absolute path and metadata (see encoding.py)."""

    id: int
    path: str
    metadata: dict


@dataclasses.dataclass(frozen=True)
class Hit:
    """A search result. `rank` counts from 1 over the whole result list (offset included);
    `score` is the cosine similarity (mode "embedding", higher is closer) or the Hamming
    distance in bits (mode "hamming", lower is closer)."""

    rank: int
    id: int
    path: str
    score: float
    metadata: dict


@dataclasses.dataclass(frozen=True)
class AddReport:
    """What a build or add did: `added` items (the index grew by that many), `skipped`
    (path, reason) of files that could not be used, `already_indexed` files of the source that
    were in the index already (left alone), `resumed` how many of the added items an
    interrupted earlier run had encoded, `warnings` (path, message) such as unreadable
    metadata sidecars."""

    added: int
    skipped: list
    already_indexed: int = 0
    resumed: int = 0
    warnings: list = dataclasses.field(default_factory=list)


def _models_tuple(models):
    if isinstance(models, str):
        models = (models,)
    models = tuple(models)
    if not models:
        raise ValueError("Expected at least one model name.")
    if len(set(models)) != len(models):
        raise ValueError(f"Each model can be named once; got {list(models)}.")
    return tuple(store.check_model_name(name) for name in models)


def _check_compatible(index_record, encoder_record, where):
    """ValueError unless an encoder gives what the index holds for the same model."""
    for key in ("embedding_dim", "num_bits", "image_size"):
        if index_record.get(key) is not None and index_record[key] != encoder_record[key]:
            raise ValueError(f"{where}: the index holds {index_record['name']} with {key} "
                             f"{index_record[key]}, the encoder gives {encoder_record[key]}.")
    for key, what in (("weights_sha256", "other weights"), ("hash_head_sha256", "another hash head")):
        if index_record.get(key) and encoder_record.get(key) and \
                index_record[key] != encoder_record[key]:
            raise ValueError(f"{where}: the index was encoded with {what} of "
                             f"{index_record['name']} ({key} {index_record[key][:12]}..., "
                             f"installed {encoder_record[key][:12]}...); rebuild the index.")


class Index:
    """An index directory opened for searching and adding (see the module docstring)."""

    def __init__(self, path, manifest, server=None, verify=True):
        """Use `Index.open` or `Index.build`."""
        self.path = os.path.abspath(path)
        self.server = server
        self._verify = verify
        self._manifest = manifest
        self._items = []  # [(path, metadata)], position = id
        self._codes = {}  # model -> [segment codes]
        self._embeddings = {}  # model -> [segment embeddings (memory-mapped)]
        self._regions = []  # region index: [segment region tables (page, x, y, w, h)]
        self._searchers = {}  # (model, mode, approximate) -> searcher
        self._query_encoders = {}
        self._lock = threading.Lock()
        self.report = None  # Index.build sets the AddReport of the build here
        for segment in manifest["segments"]:
            self._append_segment(segment)

    def _append_segment(self, segment):
        items, arrays, regions = store.read_segment(self.path, self._manifest, segment,
                                                    self._verify)
        if regions is not None:
            self._regions.append(regions)
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise ValueError(f"The index {self.path!r} is corrupt: a bad item record.")
            self._items.append((item["path"], item.get("metadata") or {}))
        for name, (embeddings, codes) in arrays.items():
            self._embeddings.setdefault(name, []).append(embeddings)
            self._codes.setdefault(name, []).append(np.asarray(codes))

    # ------------------------------------------------------------------------- opening

    @classmethod
    def open(cls, path, server=None, verify=True):
        """Open the index directory at `path`, checking its format, every file's size and
        array shape, and (unless verify=False, quicker on very large indexes) its sha256.

        `server` ("host:port"): encode queries (and `add`) through that TF-Serving-compatible
        server instead of in-process. Corrupt, foreign or incomplete indexes raise ValueError.
        """
        return cls(path, store.read_manifest(os.fspath(path)), server=server, verify=verify)

    @classmethod
    def build(cls, out_path, source, models=None, server=None, batch_size=256,
              progress=True, metadata=None, chunk_size=None, workers=None, regions=False,
              proposals=None, precision="float32"):
        """Encode every image of `source` (a folder, recursively, or a list of files) with
        each of `models` (default DEFAULT_MODELS) into a new
        index directory `out_path`, and return it opened.

        regions=True: the files are page photographs; every page's candidate regions
        (zoo.apps.proposals, with `proposals` settings, a ProposalSettings or its JSON dict) are
        encoded and searches return pages with boxes (zoo/apps/index/regions.py).

        Resumable: chunks of `chunk_size` encoded images (default 1024; pages: 16) are kept in
        `out_path`/.pending, so running the same build again after an interruption continues
        where it stopped.
        `metadata` is a JSON-able dict about the archive, stored in the manifest. Files that
        cannot be used are skipped and listed in the returned index's `report`.
        `precision`: what in-process encoders compute in (zoo.precision: "float32", "bfloat16"
        or "auto"); recorded per model, and used again by `add` and for queries.
        """
        from zoo.precision import resolve

        precision = resolve(precision)
        out_path = os.path.abspath(os.fspath(out_path))
        models = _models_tuple(models or DEFAULT_MODELS)
        _check_new_index(out_path, metadata)
        if proposals is not None and not regions:
            raise ValueError("Proposal settings are for region indexes: pass regions=True.")
        settings = ProposalSettings.of(proposals) if regions else None
        os.makedirs(out_path, exist_ok=True)
        report = _ingest(out_path, None, models, source, kind="build", server=server,
                         batch_size=batch_size, progress=progress, archive=metadata,
                         chunk_size=chunk_size, workers=workers, known_paths=set(),
                         regions=settings, precision=precision)
        index = cls.open(out_path, server=server)
        index.report = report
        return index

    @classmethod
    def build_from_shards(cls, out_path, shards, model=None, metadata=None, progress=True,
                          chunk_size=None):
        """A new index `out_path` from the shards of an Apache Beam run (zoo/apps/beam_pipeline.py,
        the [beam] extra), returned opened: `zoo beam regions` shards become a region index
        (pages, their regions and proposal settings), `zoo beam encode` shards an index of
        images. `shards`: the run's output folder (its errors-*.jsonl become the report's
        skipped files) or a glob of shard files.

        `model`: the registered zoo model the shards were encoded with (default: the name the
        shards record), which encodes the queries in-process; shards of another model, or whose
        embedding size, code length or image size are not the registered model's, are refused
        (ValueError). Written like `build` (chunks in .pending, one segment, the manifest
        last); rerunning an interrupted one continues it.
        """
        try:
            from zoo.apps.beam_pipeline import load_shards
        except ImportError as error:
            raise ValueError(f"Reading Beam shards needs Apache Beam ({error}); install the "
                             f"extra: pip install -e '.[beam]'.") from None
        out_path = os.path.abspath(os.fspath(out_path))
        _check_new_index(out_path, metadata)
        source = os.fspath(shards)
        encoded = load_shards(source)
        record = _shards_model_record(encoded, model, source)
        os.makedirs(out_path, exist_ok=True)
        report = _ingest_shards(out_path, encoded, record, source, metadata, progress,
                                chunk_size)
        index = cls.open(out_path)
        index.report = report
        return index

    # ------------------------------------------------------------------------- adding

    def add(self, source, progress=True, batch_size=256, chunk_size=None, workers=None):
        """Encode the images of `source` not yet in the index (same absolute path) and append
        them, with new ids after the existing ones (a region index: pages, with the index's
        proposal settings). Resumable like `build`. -> AddReport."""
        known = {path for path, _ in self._items}
        report = _ingest(self.path, self._manifest, self.models, source, kind="add",
                         server=self.server, batch_size=batch_size, progress=progress,
                         archive=None, chunk_size=chunk_size, workers=workers,
                         known_paths=known, regions=self.proposals,
                         precision=self._precision(self.models[0]))
        manifest = store.read_manifest(self.path)
        with self._lock:
            committed = len(self._manifest["segments"])
            self._manifest = manifest
            for segment in manifest["segments"][committed:]:
                self._append_segment(segment)
            self._searchers.clear()
        return report

    # ------------------------------------------------------------------------- contents

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        if self.is_region_index:
            return (f"Index({self.path!r}, {len(self)} pages, {self.region_count} regions, "
                    f"models={self.models})")
        return f"Index({self.path!r}, {len(self)} items, models={self.models})"

    @property
    def is_region_index(self):
        """True when the items are pages and the rows their regions (Index.build regions=True)."""
        return store.is_region_index(self._manifest)

    @property
    def proposals(self):
        """The region proposal settings of a region index (None for an index of images)."""
        settings = self._manifest.get("regions")
        return ProposalSettings.from_json(settings) if settings else None

    @property
    def region_count(self):
        """How many regions (embedding rows) the index holds: len(index) for images."""
        return int(self._manifest["count"])

    def regions(self):
        """int64 [R, 5] (page id, x, y, w, h) of every region of a region index (a copy)."""
        if not self.is_region_index:
            raise ValueError(f"{self.path!r} indexes images, not pages: it has no regions.")
        return np.concatenate(self._regions) if self._regions else np.zeros((0, 5), np.int64)

    def page_regions(self, item_id):
        """int64 [M, 4] (x, y, w, h) of the regions of page `item_id` in a region index."""
        item_id = self.item(item_id).id
        rows = np.flatnonzero(self._region_pages() == item_id)
        return self._gather(self._regions, rows, (5,), np.int64)[:, 1:5]

    @property
    def models(self):
        """Names of the models the index holds, the default (used when none is named) first."""
        return [model["name"] for model in self._manifest["models"]]

    @property
    def metadata(self):
        """The archive metadata dict given at build time."""
        return dict(self._manifest.get("metadata") or {})

    @property
    def manifest(self):
        return self._manifest

    def model_info(self, model=None):
        """{"name", "embedding_dim", "num_bits", "image_size", "weights_sha256", ...}."""
        name = self._model(model)
        return dict(next(m for m in self._manifest["models"] if m["name"] == name))

    def item(self, item_id):
        """The Item with id `item_id` (0 <= id < len(index))."""
        if isinstance(item_id, bool) or not isinstance(item_id, (int, np.integer)) or \
                not 0 <= item_id < len(self._items):
            raise ValueError(f"Expected an item id in [0, {len(self._items)}); got {item_id!r}.")
        path, metadata = self._items[int(item_id)]
        return Item(int(item_id), path, dict(metadata))

    def items(self, offset=0, limit=None):
        """Items offset .. offset + limit - 1 (all from `offset` when limit is None)."""
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError(f"Expected offset >= 0 and limit >= 0; got {offset}, {limit}.")
        stop = len(self._items) if limit is None else min(len(self._items), offset + limit)
        return [self.item(item_id) for item_id in range(offset, stop)]

    def embeddings(self, model=None):
        """float32 [N, D] embeddings of all items by `model` (a copy)."""
        name = self._model(model)
        blocks = self._embeddings[name]
        return np.concatenate(blocks) if blocks else np.zeros((0, self.model_info(name)[
            "embedding_dim"]), np.float32)

    def codes(self, model=None):
        """Packed uint8 [N, K / 8] codes of all items by `model`."""
        name = self._model(model)
        blocks = self._codes[name]
        return np.concatenate(blocks) if blocks else np.zeros(
            (0, -(-self.model_info(name)["num_bits"] // 8)), np.uint8)

    # ------------------------------------------------------------------------- searching

    def _model(self, model):
        if model is None:
            return self.models[0]
        if model not in self.models:
            raise ValueError(f"The index holds no model {model!r}; it holds "
                             f"{', '.join(self.models)}.")
        return model

    def _precision(self, name):
        """What the index's in-process encoder of `name` computes in (float32 for indexes
        built before precisions were recorded)."""
        return self.model_info(name).get("precision") or "float32"

    def _query_encoder(self, name):
        with self._lock:
            if name not in self._query_encoders:
                (encoder,) = make_encoders([name], self.server,
                                           precision=self._precision(name))
                _check_compatible(self.model_info(name), encoder.record,
                                  f"Cannot encode queries for {self.path!r}")
                self._query_encoders[name] = encoder
            return self._query_encoders[name]

    def encode_query(self, query, model=None):
        """(embedding float32 [D], bits uint8 [K]) of a query image: a path, image file bytes,
        a decoded image array of any size (gray, RGB, RGBA), or an already preprocessed
        [S, S] / [S, S, 1] array; prepared with the zoo's preprocessing."""
        name = self._model(model)
        encoder = self._query_encoder(name)
        image = prepare_query(query, encoder.image_size)
        embeddings, packed = encoder(image[None])
        bits = np.unpackbits(packed, axis=1, count=self.model_info(name)["num_bits"])
        return embeddings[0], bits[0]

    def search(self, query, k=8, model=None, mode="embedding", offset=0, approximate=False,
               candidates=region_search.DEFAULT_CANDIDATES):
        """The k best matches of `query` after skipping the first `offset`, best first:
        [Hit(rank, id, path, score, metadata)]. mode "embedding": cosine similarity of the
        embeddings; mode "hamming": Hamming distance of the binary codes. approximate=True
        searches an HNSW graph (faster on large indexes, may miss neighbours).

        A region index returns pages: [PageHit(rank, id, path, score, box, boxes, metadata,
        region)], its regions ranked by Hamming distance and the best `candidates` re-ranked
        by cosine similarity read from disk (candidates=None: an exact scan of every
        embedding); see zoo/apps/index/regions.py."""
        self._check_search(k, mode, offset)
        name = self._model(model)
        embedding, bits = self.encode_query(query, name)
        if self.is_region_index:
            if approximate:
                raise ValueError("A region index searches its codes exactly; approximate=True "
                                 "is for indexes of images.")
            return self._search_pages(name, mode, embedding, np.packbits(bits), k, offset,
                                      candidates)
        return self._search_vector(name, mode, embedding, np.packbits(bits), k, offset,
                                   approximate)

    def search_box(self, item_id, box, k=8, model=None, mode="embedding", offset=0,
                   candidates=region_search.DEFAULT_CANDIDATES):
        """Search with a box (x, y, w, h, page pixels) drawn on indexed page `item_id` as the
        query, cropped from the page file as a person would crop it."""
        from zoo.data.images import decode_image

        query = region_search.crop_box(decode_image(self.item(item_id).path), box)
        return self.search(query, k=k, model=model, mode=mode, offset=offset,
                           candidates=candidates)

    def similar(self, item_id, k=8, model=None, mode="embedding", offset=0, approximate=False):
        """Like `search`, with the stored encoding of item `item_id` as the query (the item
        itself is normally the first hit)."""
        if self.is_region_index:
            raise ValueError("The items of a region index are whole pages; search with a box "
                             "drawn on a page instead (Index.search_box(item_id, box)).")
        self._check_search(k, mode, offset)
        name = self._model(model)
        item_id = self.item(item_id).id
        return self._search_vector(name, mode, self._row(self._embeddings[name], item_id),
                                   self._row(self._codes[name], item_id), k, offset,
                                   approximate)

    @staticmethod
    def _row(blocks, row):
        for block in blocks:
            if row < len(block):
                return np.asarray(block[row])
            row -= len(block)
        raise IndexError(row)

    @staticmethod
    def _check_search(k, mode, offset):
        if mode not in MODES:
            raise ValueError(f"Expected mode 'embedding' or 'hamming'; got {mode!r}.")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"Expected k to be a positive integer; got {k!r}.")
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"Expected offset to be a non-negative integer; got {offset!r}.")

    def searcher(self, model=None, mode="embedding", approximate=False):
        """The faiss searcher (zoo.apps.index.search) over `model`'s embeddings or codes, made on
        first use. An approximate searcher's HNSW graph is kept in the index directory, named
        by a digest of the data it was built on, and loaded (after a sha256 check) next time."""
        name = self._model(model)
        key = (name, mode, bool(approximate))
        with self._lock:
            if key not in self._searchers:
                data = list(self._codes[name] if mode == "hamming" else self._embeddings[name])
                if approximate:
                    self._searchers[key] = self._graph(name, mode, data)
                else:
                    self._searchers[key] = make_searcher(mode, False, data)
            return self._searchers[key]

    def _graph(self, name, mode, data):
        """The approximate searcher: loaded from its saved graph, or built and saved."""
        kind = "codes" if mode == "hamming" else "embeddings"
        digest = hashlib.sha256(json.dumps(
            [GRAPH_VERSION, mode, [segment["files"][f"{name}.{kind}"]["sha256"]
                                   for segment in self._manifest["segments"]]]).encode())
        path = os.path.join(self.path, f"{name}.{kind}-hnsw-{digest.hexdigest()[:16]}.faiss")
        cls = searcher_class(mode, True)
        try:
            with open(f"{path}.sha256") as stream:
                if stream.read().strip() == store.sha256_of(path):
                    return cls.load(path)
        except (OSError, RuntimeError):
            pass  # not saved yet, or unreadable: build it again
        searcher = make_searcher(mode, True, data)
        try:
            searcher.save(path)
            with store.atomic_file(f"{path}.sha256") as stream:
                stream.write(store.sha256_of(path).encode())
            for old in glob.glob(os.path.join(self.path, f"{name}.{kind}-hnsw-*.faiss*")):
                if not old.startswith(path):
                    os.remove(old)
        except (OSError, RuntimeError) as error:
            log.warning("could not save the search graph in %s: %s", self.path, error)
        return searcher

    def _search_vector(self, name, mode, embedding, packed, k, offset, approximate):
        if len(self) == 0 or offset >= len(self):
            return []
        searcher = self.searcher(name, mode, approximate)
        query = packed[None] if mode == "hamming" else embedding[None].astype(np.float32)
        scores, ids = searcher.search(query, offset + k)
        hits = []
        for position in range(offset, scores.shape[1]):
            item_id = int(ids[0, position])
            if item_id < 0:
                break
            path, metadata = self._items[item_id]
            score = int(scores[0, position]) if mode == "hamming" else float(scores[0, position])
            hits.append(Hit(position + 1, item_id, path, score, dict(metadata)))
        return hits

    def _region_pages(self):
        """int32 [R]: the page of every region (4 bytes a region in memory; the boxes stay in
        the memory-mapped region files)."""
        if not self.is_region_index:
            raise ValueError(f"{self.path!r} indexes images, not pages: it has no regions.")
        with self._lock:
            if "pages" not in self._searchers:
                self._searchers["pages"] = np.concatenate(
                    [np.asarray(table[:, 0], np.int32) for table in self._regions]) \
                    if self._regions else np.zeros(0, np.int32)
            return self._searchers["pages"]

    @staticmethod
    def _gather(blocks, rows, tail, dtype):
        """dtype [len(rows), *tail]: rows of the concatenated (memory-mapped) segment arrays
        `blocks`, reading only those rows."""
        rows = np.asarray(rows, np.int64)
        ends = np.cumsum([len(block) for block in blocks])
        segment = np.searchsorted(ends, rows, side="right")
        out = np.empty((len(rows), *tail), dtype)
        for number in np.unique(segment):
            chosen = segment == number
            start = ends[number] - len(blocks[number])
            local = rows[chosen] - start
            order = np.argsort(local)
            out[np.flatnonzero(chosen)[order]] = blocks[number][local[order]]
        return out

    def code_words(self, model=None):
        """The codes of a region index's regions as uint64 words (8 bytes a 64-bit region),
        what its search keeps in memory; made on first use (the search page warms it up)."""
        name = self._model(model)
        with self._lock:
            if ("words", name) not in self._searchers:
                self._searchers["words", name] = region_search.code_words(self.codes(name))
            return self._searchers["words", name]

    def _search_pages(self, name, mode, embedding, packed, k, offset, candidates):
        count = self.region_count
        if not count:
            return []
        if candidates is not None and (isinstance(candidates, bool) or not isinstance(
                candidates, (int, np.integer)) or candidates < 0):
            raise ValueError(f"Expected candidates to be a non-negative integer or None; got "
                             f"{candidates!r}.")
        if mode == "hamming" or candidates:
            words = self.code_words(name)
            wanted = min(count, int(candidates or 0) or count)
            rows, distances = region_search.nearest_codes(
                words, region_search.code_words(packed[None])[0], wanted)
            if mode == "hamming":
                scores = distances.astype(np.int64)
            else:
                dim = self.model_info(name)["embedding_dim"]
                scores = self._gather(self._embeddings[name], rows, (dim,), np.float32) @ \
                    embedding.astype(np.float32)
        else:
            scores, rows = self.searcher(name, "embedding").search(
                embedding[None].astype(np.float32), count)
            scores, rows = scores[0], rows[0]
        # Only the ranked regions' boxes are read, as a table of their own.
        table = self._gather(self._regions, rows, (5,), np.int64)
        higher = mode != "hamming"
        grouped = region_search.group_by_page(np.arange(len(rows)), np.asarray(scores), table,
                                              higher, k, offset)
        return region_search.page_hits(grouped, table, self._items, offset, not higher, rows)

    def close(self):
        for encoder in self._query_encoders.values():
            encoder.close()
        self._query_encoders.clear()


# ----------------------------------------------------------------------------- ingesting


def _check_new_index(out_path, metadata):
    """ValueError unless `out_path` can become a new index (absent, empty, or an interrupted
    build) and `metadata` is a dict or None."""
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"Expected archive metadata as a dict; got "
                         f"{type(metadata).__name__}.")
    if os.path.exists(os.path.join(out_path, store.MANIFEST)):
        raise ValueError(f"{out_path!r} already holds an index; add files to it with "
                         f"`zoo index add` (Index.open(path).add), or choose another path.")
    if os.path.exists(out_path) and not os.path.isdir(out_path):
        raise ValueError(f"{out_path!r} is a file; an index is written as a directory.")
    if os.path.isdir(out_path) and not os.path.isdir(store.pending_dir(out_path)) and \
            set(os.listdir(out_path)) - {store.LOCK}:
        raise ValueError(f"{out_path!r} exists and is not an index; choose a new path.")


def _ingest(directory, manifest, models, source, kind, server, batch_size, progress, archive,
            chunk_size, workers, known_paths, regions=None, precision="float32"):
    """Encode `source`'s new files into .pending chunks (after any chunks an interrupted run
    left), then commit all pending chunks as one segment. Shared by Index.build (manifest
    None) and Index.add; `regions`: the proposal settings of a region index. Returns an
    AddReport."""
    if chunk_size is None:
        chunk_size = region_search.DEFAULT_PAGE_CHUNK if regions is not None else 1024
    paths, root = list_source(source)
    paths = list(dict.fromkeys(paths))  # a path named twice is indexed once
    if kind == "build" and not paths:
        raise ValueError(f"No image files found in {source!r}.")
    with store.writer_lock(directory):
        if manifest is not None and \
                store.read_manifest(directory)["segments"] != manifest["segments"]:
            raise ValueError(f"The index {directory!r} was changed by another process since it "
                             f"was opened; open it again, then add.")
        progress_record = _pending_progress(directory, manifest, models, regions)
        done, errors, warnings, resumed = _pending_chunks(directory)
        if resumed or errors:
            log.info("resuming an interrupted %s: %d items already encoded", kind, resumed)
        todo = [path for path in paths if path not in known_paths and path not in done]

        encoders = make_encoders(models, server, batch_size, precision) if todo else []
        try:
            records = _model_records(directory, manifest, progress_record, encoders)
            if progress_record is None:
                progress_record = {"kind": kind, "token": uuid.uuid4().hex,
                                   "models": list(models), "records": records,
                                   "started": store.now(), "metadata": archive,
                                   "encoded_by": server or "in-process",
                                   "regions": regions.to_json() if regions else None}
                store.start_pending(directory, progress_record)
            new_errors, new_warnings = _encode_to_chunks(directory, todo, len(done), root,
                                                         encoders, kind, progress, chunk_size,
                                                         workers, regions)
            errors += new_errors
            warnings += new_warnings
        finally:
            for encoder in encoders:
                encoder.close()

        chunk_files = store.pending_chunk_files(directory)
        added = sum(len(store.read_chunk(path, [])[0]) for path in chunk_files)
        if added == 0 and manifest is None:
            store.clear_pending(directory)
            first = f"; first error: {errors[0][0]}: {errors[0][1]}" if errors else ""
            raise ValueError(f"None of the {len(paths)} image files in {source!r} could be "
                             f"used{first}")
        if added:
            store.commit_segment(
                directory, manifest, records, chunk_files,
                segment_info={"kind": kind, "ingest": progress_record["token"],
                              "encoded_by": progress_record["encoded_by"], "source": root},
                archive=(archive or progress_record.get("metadata")) if manifest is None
                else None, regions=regions.to_json() if regions is not None else None)
        store.clear_pending(directory)
    return AddReport(added=added, skipped=errors,
                     already_indexed=sum(path in known_paths for path in paths),
                     resumed=resumed, warnings=warnings)


def _pending_chunks(directory):
    """What an interrupted write left in .pending: (paths done, errors, warnings, items
    encoded); every file it encoded or refused counts as done."""
    done, errors, warnings, resumed = set(), [], [], 0
    for path in store.pending_chunk_files(directory):
        items, chunk_errors, chunk_warnings, _ = store.read_chunk(path, [])
        done.update(item["path"] for item in items)
        done.update(error[0] for error in chunk_errors)
        errors += chunk_errors
        warnings += chunk_warnings
        resumed += len(items)
    return done, errors, warnings, resumed


def _pending_progress(directory, manifest, models, regions=None):
    """The progress record of an interrupted build or add to resume, or None. Leftovers of a
    run that was killed after its commit are cleared; a run with other models (or other
    region settings) is refused."""
    progress_record = store.read_progress(directory)
    if progress_record is None:
        return None
    committed = {segment.get("ingest") for segment in (manifest or {}).get("segments", [])}
    if progress_record.get("token") in committed:
        store.clear_pending(directory)
        return None
    if progress_record.get("models") != list(models):
        raise ValueError(f"{directory!r} holds an interrupted {progress_record.get('kind')} "
                         f"with models {progress_record.get('models')}, not {list(models)}; "
                         f"rerun it with those models, or delete "
                         f"{store.pending_dir(directory)!r} to start over.")
    wanted = regions.to_json() if regions is not None else None
    if progress_record.get("regions") != wanted:
        raise ValueError(f"{directory!r} holds an interrupted {progress_record.get('kind')} "
                         f"with region settings {progress_record.get('regions')}, not {wanted}; "
                         f"rerun it as it was started, or delete {store.pending_dir(directory)!r} "
                         f"to start over.")
    return progress_record


def _model_records(directory, manifest, progress_record, encoders):
    """The model records of the index (or of the interrupted build), checked against the
    encoders about to add to it; the encoders' own for a new build."""
    records = [encoder.record for encoder in encoders]
    if manifest is not None:
        known, where = manifest["models"], f"Cannot add to {directory!r}"
    elif progress_record is not None:
        known, where = progress_record["records"], f"Cannot resume {directory!r}"
    else:
        return records
    for index_record, record in zip(known, records):
        _check_compatible(index_record, record, where)
    return known


def _encode_to_chunks(directory, paths, done, root, encoders, kind, progress, chunk_size,
                      workers, regions=None):
    """Encode `paths` chunk by chunk into .pending, with a progress bar that starts at the
    `done` files of an interrupted run; -> (errors, warnings)."""
    from tqdm.auto import tqdm

    errors, warnings = [], []
    if not paths:
        return errors, warnings
    number = store.next_chunk_number(directory)
    unit = "page" if regions is not None else "img"
    with tqdm(total=done + len(paths), initial=done, desc=f"index {kind}", unit=unit,
              disable=not progress) as bar:
        for items, chunk_errors, chunk_warnings, arrays, table in encode_chunks(
                paths, root, encoders, chunk_size=chunk_size, workers=workers, regions=regions):
            store.write_chunk(directory, number, items, chunk_errors, chunk_warnings, arrays,
                              regions=table)
            number += 1
            errors += chunk_errors
            warnings += chunk_warnings
            for path, reason in chunk_errors:
                log.warning("skipped %s: %s", path, reason)
            bar.update(len(items) + len(chunk_errors))
    return errors, warnings


# ----------------------------------------------------------------------------- from shards

SHARD_PAGE_CHUNK = 1024  # pages a chunk when ingesting shards (nothing to encode: big chunks)
SHARD_IMAGE_CHUNK = 16384


def _shards_model_record(encoded, model, source):
    """The index's model record for shards (zoo.apps.beam_pipeline.Shards) encoded by `model` (a
    registered zoo model; default the shards' own): the in-process encoder's record, after
    checking that the shards are that model's."""
    from zoo.apps.index.encoding import LocalEncoder
    from zoo.registry import get_entry

    shard_name = encoded.model.rsplit("/", 1)[0]
    name = store.check_model_name(model or shard_name)
    if name != shard_name:
        raise ValueError(f"The shards in {source!r} were encoded by {encoded.model}, not by "
                         f"{name!r}: queries encoded by {name} would not match them. Build the "
                         f"index with the model that encoded them (--model {shard_name}).")
    try:
        get_entry(name)
    except ValueError as error:
        raise ValueError(f"The shards in {source!r} were encoded by {encoded.model}, and "
                         f"{name!r} is not a registered zoo model, so queries could not be "
                         f"encoded for the index ({error})") from None
    encoder = LocalEncoder(name)
    record = dict(encoder.record)
    encoder.close()
    found = {"embedding_dim": encoded.embeddings.shape[1], "num_bits": encoded.bits.shape[1],
             "image_size": encoded.image_size}
    wrong = [f"{key} {value} (the registered model's: {record[key]})"
             for key, value in found.items() if value is not None and value != record[key]]
    if wrong:
        raise ValueError(f"The shards in {source!r} do not fit the registered model {name!r}: "
                         f"they hold {', '.join(wrong)}; refusing to index them, as queries "
                         f"encoded by {name} could not be compared with them.")
    record["encoded_from"] = encoded.model
    return record


def _shard_root(paths):
    """The deepest folder ('/'-separated) holding every path: relative paths start below it."""
    parts = [path.split("/")[:-1] for path in paths]
    common = parts[0] if parts else []
    for other in parts[1:]:
        length = 0
        while length < min(len(common), len(other)) and common[length] == other[length]:
            length += 1
        common = common[:length]
    return "/".join(common)


def _ingest_shards(directory, encoded, record, source, archive, progress, chunk_size):
    """Write the shards' pages (or images) into .pending chunks (after any chunks an
    interrupted run left), then commit them as the index's first segment. -> AddReport."""
    from tqdm.auto import tqdm

    regions = ProposalSettings.from_json(encoded.proposals) if encoded.kind == "regions" \
        else None
    chunk_size = chunk_size or (SHARD_PAGE_CHUNK if regions is not None else SHARD_IMAGE_CHUNK)
    if chunk_size < 1:
        raise ValueError(f"Expected chunk_size >= 1, got {chunk_size}.")
    name = record["name"]
    paths = [path if "://" in path else os.path.abspath(path) for path in map(str,
                                                                              encoded.paths)]
    root = _shard_root(paths)
    starts = np.searchsorted(encoded.page, np.arange(len(paths) + 1))
    with store.writer_lock(directory):
        progress_record = _pending_progress(directory, None, [name], regions)
        if progress_record is not None and progress_record.get("shards") != source:
            raise ValueError(f"{directory!r} holds an interrupted build of "
                             f"{progress_record.get('shards') or 'image files'}, not of the "
                             f"shards {source!r}; rerun it as it was started, or delete "
                             f"{store.pending_dir(directory)!r} to start over.")
        done, _, _, resumed = _pending_chunks(directory)
        if progress_record is None:
            records = [record]
            progress_record = {"kind": "build", "token": uuid.uuid4().hex, "models": [name],
                               "records": records, "started": store.now(),
                               "metadata": archive, "encoded_by": f"beam ({encoded.model})",
                               "regions": regions.to_json() if regions else None,
                               "shards": source}
            store.start_pending(directory, progress_record)
        else:
            records = progress_record["records"]
            _check_compatible(records[0], record, f"Cannot resume {directory!r}")
        todo = [number for number, path in enumerate(paths) if path not in done]
        errors = [(str(path), str(reason)) for path, reason in encoded.errors
                  if path not in done]
        chunks = [todo[start : start + chunk_size] for start in range(0, len(todo), chunk_size)]
        if errors and not chunks:
            chunks = [[]]
        number = store.next_chunk_number(directory)
        with tqdm(total=len(paths), initial=len(paths) - len(todo), desc="index from shards",
                  unit="page" if regions is not None else "img", disable=not progress) as bar:
            for chunk in chunks:
                items, rows, table = [], [], []
                for position, page in enumerate(chunk):
                    page_rows = np.arange(starts[page], starts[page + 1])
                    metadata = {"relative_path": paths[page][len(root):].lstrip("/"),
                                **encoded.pages[page]}
                    if regions is not None:
                        metadata["regions"] = int(len(page_rows))
                        table.append(np.concatenate(
                            [np.full((len(page_rows), 1), position, np.int64),
                             encoded.boxes[page_rows]], axis=1))
                    items.append({"path": paths[page], "metadata": metadata})
                    rows.append(page_rows)
                rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
                arrays = {name: (encoded.embeddings[rows],
                                 np.packbits(encoded.bits[rows].astype(np.uint8), axis=1))}
                if regions is not None:
                    table = np.concatenate(table) if table else np.zeros((0, 5), np.int64)
                else:
                    table = None
                store.write_chunk(directory, number, items, errors, [], arrays, regions=table)
                number += 1
                bar.update(len(chunk))
                errors = []
        chunk_files = store.pending_chunk_files(directory)
        added, skipped = 0, []
        for path in chunk_files:
            items, chunk_errors, _, _ = store.read_chunk(path, [])
            added += len(items)
            skipped += chunk_errors
        if added == 0:
            store.clear_pending(directory)
            raise ValueError(f"The shards in {source!r} hold no pages or images to index.")
        store.commit_segment(
            directory, None, records, chunk_files,
            segment_info={"kind": "build", "ingest": progress_record["token"],
                          "encoded_by": progress_record["encoded_by"], "source": source},
            archive=archive or progress_record.get("metadata"),
            regions=regions.to_json() if regions is not None else None)
        store.clear_pending(directory)
    return AddReport(added=added, skipped=skipped, resumed=resumed)


# ----------------------------------------------------------------------------- presenting


def format_hits(hits, mode="embedding"):
    """A plain table of hits: rank, score, id, path."""
    score_name = "distance" if mode == "hamming" else "cosine"
    lines = [f"{'rank':>4}  {score_name:>8}  {'id':>7}  path"]
    for hit in hits:
        score = f"{hit.score:8d}" if mode == "hamming" else f"{hit.score:8.4f}"
        lines.append(f"{hit.rank:>4}  {score}  {hit.id:>7}  {hit.path}")
    return "\n".join(lines)


def format_report(report):
    """A few lines summarising an AddReport."""
    lines = [f"added {report.added} items"
             + (f" ({report.resumed} encoded by an interrupted earlier run)" if report.resumed
                else "")
             + (f"; {report.already_indexed} files already in the index, left alone"
                if report.already_indexed else "")]
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} files that could not be used:")
        lines += [f"  {path}: {reason}" for path, reason in report.skipped]
    if report.warnings:
        lines.append(f"{len(report.warnings)} warnings:")
        lines += [f"  {path}: {message}" for path, message in report.warnings]
    return "\n".join(lines)


def save_search_grid(path, index, query, hits, model=None, size=96):
    """A PNG of the query (blue frame) and the hits with their scores
    (zoo.visualize.save_retrieval_grid), each shown as the archive holds it: the files
    themselves in their own colours, fitted into size x size on white. A query given as an
    already preprocessed array (strokes 1 on black) is drawn as dark ink on light paper; a hit
    whose file can no longer be read shows as a grey tile."""
    from zoo.visualize import save_retrieval_grid, thumbnail

    if not hits:
        raise ValueError("No hits to draw.")
    tiles = []
    for hit in hits:
        try:
            tiles.append(thumbnail(hit.path, size))
        except (OSError, ValueError):
            tiles.append(np.full((size, size, 3), 128, np.uint8))
    array = None if isinstance(query, (str, os.PathLike, bytes, bytearray)) else np.asarray(query)
    image_size = index.model_info(model)["image_size"]
    if (array is not None and array.dtype != object and array.ndim in (2, 3)
            and array.shape[:2] == (image_size, image_size)
            and (array.ndim == 2 or array.shape[-1] == 1)):
        query = 1.0 - np.asarray(prepare_query(query, image_size), np.float32)
    return save_retrieval_grid(path, thumbnail(query, size)[None], np.stack(tiles)[None],
                               scores=np.array([[hit.score for hit in hits]], np.float64),
                               scale=1)

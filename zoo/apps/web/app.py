"""The search page's HTTP app: a JSON API over `zoo.apps.index.Index` and `zoo.apps.locating`,
plus the static page in zoo/apps/web/static/ (plain HTML, CSS and JavaScript, no build step,
nothing from other hosts).

    GET  /                                   the page
    GET  /api/info                           index kind and size, models, limits
    GET  /api/items?offset=&limit=           archive items, in index order
    GET  /api/items/{id}                     one item's metadata
    GET  /api/items/{id}/thumbnail           a small image of the item (160 px, a page 320 px)
    GET  /api/items/{id}/image               the item's image file
    POST /api/search?model=&mode=&k=&offset=[&box=x,y,w,h]   body: the query image's bytes
    GET  /api/search?item=ID&model=&mode=&k=&offset=          an archive item as the query
    GET  /api/search?item=ID&box=x,y,w,h&...  region index: a box drawn on indexed page ID
         (search and items: &thumbnails=inline adds small thumbnails as data: URLs)
    POST /api/locate?item=ID|box=x,y,w,h&model=              body: a page photograph

An index of images (`"kind": "images"` in /api/info) searches and lists images. A region index
of page photographs (`Index.build(..., regions=True)`; `"kind": "regions"`, with `pages` and
`regions` counts) lists pages, and its search hits are pages: each also has the page's `width`
and `height`, its best matching region `box` [x, y, w, h] and all its matching regions `boxes`
[[x, y, w, h, score], ...], best first, in page pixels (the page draws them over the page's
thumbnail and image). An item of a region index is a whole page: `item=ID` searches with a
box drawn on it (`box=` is required, and refused for an index of images).

The app is read-only: it opens the index and the image files the index registered, and writes
nothing. Images are served by item id only, never by a path from the request. Uploads are
checked (zoo/apps/web/uploads.py) before they reach the index; a refused upload is answered with a
JSON `{"error": message}` and the server carries on.
"""

import base64
import collections
import io
import logging
import os
import threading
import time

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from zoo.apps.web.uploads import MAX_PIXELS, MAX_UPLOAD_BYTES, UploadError, clip_box, crop_box, \
    decode_upload, too_large

log = logging.getLogger(__name__)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MODES = ("embedding", "hamming")
PAGE_SIZE = 24
MAX_K = 200
THUMBNAIL_SIZE = 160
PAGE_THUMBNAIL_SIZE = 320  # a page's thumbnail: its marks must still be told apart
SMALL_FILE_BYTES = 64 * 1024  # a small image file in a browser format is its own thumbnail
HEATMAP_SIDE = 512
LOCATE_MAX_SIDE = 1600  # pixels: larger page photographs are searched at this size
# Browsers show these formats themselves; anything else (TIFF) is served converted to PNG.
BROWSER_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif",
                   "WEBP": "image/webp", "BMP": "image/bmp"}
SECURITY_HEADERS = {
    # Only this server's own scripts, styles and images: the page works offline and cannot
    # be made to load anything from elsewhere.
    "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class _SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name.encode(), value.encode()) for name, value in
                            SECURITY_HEADERS.items() if name.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status, message):
    return JSONResponse({"error": message}, status_code=status)


class _LRU:
    """A small thread-safe least-recently-used cache (thumbnails)."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.entries = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        return None

    def put(self, key, value):
        with self.lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)


class SearchService:
    """What the HTTP routes call: the index's own methods, argument checks, JSON shapes.

    Searches go through one lock: the index and its encoders are shared by every request.
    """

    def __init__(self, index, name="index", max_upload_bytes=MAX_UPLOAD_BYTES,
                 max_pixels=MAX_PIXELS, page_size=PAGE_SIZE):
        if not max_upload_bytes >= 1024:
            raise ValueError(f"Expected an upload limit of at least 1 KB, got "
                             f"{max_upload_bytes} bytes.")
        if not 1 <= page_size <= MAX_K:
            raise ValueError(f"Expected a page size from 1 to {MAX_K}, got {page_size}.")
        self.index = index
        self.regions = bool(index.is_region_index)  # items are pages, hits have boxes
        self.name = name
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self.page_size = int(page_size)
        self.lock = threading.Lock()  # one search at a time
        self.locate_lock = threading.Lock()  # one locate at a time (seconds of encoding)
        self.decode_slots = threading.BoundedSemaphore(2)  # uploads decoded at once (memory)
        self.thumbnails = _LRU(4096)

    # -- arguments -------------------------------------------------------------------------

    def model(self, value):
        models = list(self.index.models)
        if value in (None, ""):
            return models[0]
        if value not in models:
            raise UploadError(400, f"Unknown model {value!r}; this index holds "
                                   f"{', '.join(models)}.")
        return value

    @staticmethod
    def mode(value):
        value = value or "embedding"
        if value not in MODES:
            raise UploadError(400, f"Unknown mode {value!r}; expected one of {', '.join(MODES)}.")
        return value

    @staticmethod
    def integer(params, name, default, low, high):
        value = params.get(name)
        if value in (None, ""):
            return default
        try:
            number = int(value)
        except ValueError:
            raise UploadError(400, f"Expected an integer for {name}, got {value!r}.") from None
        if not low <= number <= high:
            raise UploadError(400, f"Expected {low} <= {name} <= {high}, got {number}.")
        return number

    def item_id(self, value):
        try:
            item_id = int(value)
        except (TypeError, ValueError):
            raise UploadError(400, f"Expected an archive item id (an integer), got {value!r}.") \
                from None
        if not 0 <= item_id < len(self.index):
            raise UploadError(404, f"No archive item {item_id}; the index holds items 0 to "
                                   f"{len(self.index) - 1}.")
        return item_id

    def page_box(self, item_id, value):
        """The `box=x,y,w,h` of a search by archive item `item_id`: on a page of a region index
        the mark to search with, clipped to the page -> (x, y, w, h); None for an index of
        images, whose items are searched whole."""
        if not self.regions:
            if value:
                raise UploadError(400, "box= with item= is a mark drawn on a page of a region "
                                       "index; this index holds images: POST the cropped image "
                                       "instead.")
            return None
        if not value:
            raise UploadError(400, f"Archive item {item_id} is a whole page: add box=x,y,w,h "
                                   f"(a mark drawn on the page, in its pixels) to search with "
                                   f"part of it.")
        item, _ = self.item_file(item_id)  # 404 when the page's file is gone
        return clip_box(value, item.metadata["width"], item.metadata["height"])

    # -- JSON shapes -----------------------------------------------------------------------

    @staticmethod
    def item_name(item):
        metadata = item.metadata or {}
        return str(metadata.get("relative_path") or os.path.basename(item.path))

    def item_json(self, item, inline=False):
        """An item as the page sees it: id, file name (relative to the archive), metadata,
        thumbnail and image URLs (a page of a region index: also its `width` and `height`);
        with `inline`, also `thumbnail_data` (a data: URL) where that costs no image work (see
        inline_thumbnail)."""
        metadata = {key: value for key, value in (item.metadata or {}).items()
                    if key not in ("path", "absolute_path")}
        entry = {"id": int(item.id), "name": self.item_name(item), "metadata": metadata,
                 "thumbnail": f"/api/items/{int(item.id)}/thumbnail",
                 "image": f"/api/items/{int(item.id)}/image"}
        if self.regions:
            entry.update(width=int(metadata["width"]), height=int(metadata["height"]))
        if inline:
            data_url = self.inline_thumbnail(item)
            if data_url is not None:
                entry["thumbnail_data"] = data_url
        return entry

    def inline_thumbnail(self, item):
        """The item's thumbnail as a data: URL when it is cached or the file is small (so the
        results grid is drawn from one response, not one request per image); else None and
        the page fetches the thumbnail URL."""
        cached = self.thumbnails.get(int(item.id))
        if cached is None:
            try:
                if os.path.getsize(item.path) > SMALL_FILE_BYTES:
                    return None
                cached = self.thumbnail(int(item.id))
            except (OSError, UploadError):
                return None
        data, media_type = cached
        return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"

    def info(self):
        info = {"name": self.name, "kind": "regions" if self.regions else "images",
                "items": len(self.index), "models": list(self.index.models),
                "modes": list(MODES), "page_size": self.page_size,
                "max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                "locate": _locate_available(), "read_only": True}
        if self.regions:
            info.update(pages=len(self.index), regions=self.index.region_count)
        return info

    def items(self, offset, limit, inline=False):
        items = self.index.items(offset=offset, limit=limit)
        return {"total": len(self.index), "offset": offset,
                "items": [self.item_json(item, inline) for item in items]}

    # -- search and locate -----------------------------------------------------------------

    def search(self, query, model, mode, k, offset, inline=False, box=None):
        """`query`: a decoded PIL image (Index.search) or an archive item id: with `box`
        (x, y, w, h) a mark drawn on that page of a region index (Index.search_box), else the
        item's stored encoding (Index.similar). Asks for one hit more than shown to tell
        whether a next page exists. A region index's hits are pages with their boxes."""
        started = time.perf_counter()
        with self.lock:
            one_thread_per_query()
            if box is not None:
                hits = self.index.search_box(query, box, k=k + 1, model=model, mode=mode,
                                             offset=offset)
            elif isinstance(query, int):
                hits = self.index.similar(query, k=k + 1, model=model, mode=mode, offset=offset)
            else:
                hits = self.index.search(query, k=k + 1, model=model, mode=mode, offset=offset)
        took = time.perf_counter() - started
        results = []
        for hit in hits[:k]:
            entry = self.item_json(hit, inline)
            entry.update(rank=int(hit.rank), score=_plain_number(hit.score))
            if self.regions:
                entry.update(box=[int(value) for value in hit.box],
                             boxes=[[*(int(value) for value in found[:4]),
                                     _plain_number(found[4])] for found in hit.boxes])
            results.append(entry)
        bits = int(self.index.model_info(model)["num_bits"])
        answer = {"model": model, "mode": mode, "offset": offset, "k": k, "bits": bits,
                  "has_more": len(hits) > k, "hits": results,
                  "search_ms": round(1000 * took, 1)}
        if box is not None:
            answer["query_box"] = list(box)  # as searched: clipped to the page
        return answer

    def locate(self, page, template, model):
        """zoo.apps.locating.locate of `template` (a path or PIL image) over the PIL image `page`
        -> JSON, boxes in `page`'s pixels. A page larger than LOCATE_MAX_SIDE is searched at
        that size (the default boxes are fractions of the page, so the same marks are found)
        and the boxes scaled back; one locate runs at a time."""
        from zoo.apps.locating import locate

        width, height = page.size
        scale = min(1.0, LOCATE_MAX_SIDE / max(width, height))
        if scale < 1.0:
            page = page.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                               Image.Resampling.BOX)
        with self.locate_lock:
            result = locate(page, template, model=model, progress=False)
        return _locate_json(result, (width, height), scale)

    # -- images ----------------------------------------------------------------------------

    def item_file(self, item_id):
        """The image file of a registered item (from the index, never from the request)."""
        item = self.index.item(item_id)
        path = item.path
        if not os.path.isfile(path):
            raise UploadError(404, f"The image file of archive item {item_id} "
                                   f"({self.item_name(item)}) is no longer there.")
        return item, path

    def image(self, item_id):
        item, path = self.item_file(item_id)
        try:
            with Image.open(path) as image:
                kind = image.format
                if kind in BROWSER_FORMATS:
                    return path, BROWSER_FORMATS[kind], None
                image.load()
                return None, "image/png", _png_bytes(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise UploadError(404, f"The image of archive item {item_id} cannot be read: "
                                   f"{error}") from None

    def thumbnail(self, item_id):
        """(bytes, media type) of a small image of the item: the file itself when it is
        already small and in a format browsers show, else a PNG at most THUMBNAIL_SIZE a side
        (a page of a region index: PAGE_THUMBNAIL_SIZE)."""
        cached = self.thumbnails.get(item_id)
        if cached is not None:
            return cached
        item, path = self.item_file(item_id)
        side = PAGE_THUMBNAIL_SIZE if self.regions else THUMBNAIL_SIZE
        try:
            with Image.open(path) as image:
                kind = image.format
                if kind in BROWSER_FORMATS and max(image.size) <= side and \
                        os.path.getsize(path) <= SMALL_FILE_BYTES:
                    with open(path, "rb") as stream:
                        thumbnail = stream.read(), BROWSER_FORMATS[kind]
                else:
                    image.thumbnail((side, side),
                                    Image.Resampling.LANCZOS)  # decodes large JPEGs reduced
                    image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA")
                                          else "RGB")
                    thumbnail = _png_bytes(image), "image/png"
        except (OSError, SyntaxError, ValueError) as error:
            raise UploadError(404, f"The image of archive item {item_id} cannot be read: "
                                   f"{error}") from None
        self.thumbnails.put(item_id, thumbnail)
        return thumbnail

    def warm_up(self):
        """Load every model's query encoder and searchers, so that the first search is fast.
        A region index searches its codes and reads only the candidates' embeddings from disk:
        its codes and region table are loaded, no embedding searcher is made."""
        if len(self.index) == 0:
            return
        path = self.index.item(0).path
        for model in self.index.models:
            try:
                with self.lock:
                    if self.regions:
                        self.index.code_words(model)
                        self.index.page_regions(0)  # loads the region table
                    else:
                        for mode in MODES:
                            self.index.searcher(model, mode)
                    with Image.open(path) as image:
                        image.load()
                        self.index.search(image, k=1, model=model)
            except Exception as error:  # noqa: BLE001 - a warm-up failure must not stop serving
                log.warning("warm-up of %s failed: %s", model, error)


def one_thread_per_query():
    """Let faiss search on one thread in the calling thread (OpenMP's setting is per thread).
    A search answers one query; on a busy two-core machine faiss's OpenMP threads waiting for
    each other made one exact search of 10,000 embeddings take ~40 ms instead of ~4 ms."""
    import faiss

    faiss.omp_set_num_threads(1)


def _plain_number(value):
    value = value.item() if hasattr(value, "item") else value
    return int(value) if float(value).is_integer() and isinstance(value, (int, np.integer)) \
        else float(value)


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _locate_available():
    import importlib.util

    return importlib.util.find_spec("zoo.apps.locating") is not None


def _heatmap_png(heat, max_side=HEATMAP_SIDE):
    """The locate heat map [H, W] (cosine scores; -1 where no box was scored) as a data: URL of
    an RGBA PNG at most `max_side` pixels a side (the page stretches it over the photograph):
    transparent where nothing was scored, yellow to red from the lowest to the highest score."""
    from zoo.apps.locating import NO_MATCH

    heat = np.asarray(heat, dtype=np.float32)
    height, width = heat.shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scored = heat > NO_MATCH
    level = np.zeros_like(heat)
    if scored.any():
        low, high = float(heat[scored].min()), float(heat[scored].max())
        level = np.where(scored, np.clip((heat - low) / max(high - low, 1e-6), 0.0, 1.0), 0.0)
    rgba = np.stack([np.full_like(level, 255.0), 230.0 * (1.0 - level), np.zeros_like(level),
                     np.where(scored, 60.0 + 190.0 * level, 0.0)], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.BOX)
    return "data:image/png;base64," + base64.b64encode(_png_bytes(image)).decode("ascii")


def _locate_json(result, size, scale):
    """The locate result for the page: boxes in the uploaded page's pixels (`size`), found on
    the page resized by `scale`."""
    def page_pixels(value):
        return int(round(value / scale))

    return {"width": int(size[0]), "height": int(size[1]), "heatmap": _heatmap_png(result.heat),
            "boxes": [{"x": page_pixels(box.x), "y": page_pixels(box.y), "w": page_pixels(box.w),
                       "h": page_pixels(box.h), "score": float(box.score)}
                      for box in result.boxes],
            "searched_at_scale": scale, "windows": int(len(result.windows)),
            "locate_ms": round(1000 * result.seconds, 1)}


async def _read_body(request, max_bytes):
    """The request body, refusing more than `max_bytes` without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(int(declared), max_bytes)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise too_large(total, max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(index, name="index", max_upload_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_PIXELS,
               page_size=PAGE_SIZE, warm_up=True):
    """The Starlette app serving `index` (a zoo.apps.index.Index)."""
    service = SearchService(index, name=name, max_upload_bytes=max_upload_bytes,
                            max_pixels=max_pixels, page_size=page_size)

    def handle(function):
        """Wrap a route: refusals and bad values become JSON errors; the server carries on."""
        async def endpoint(request):
            try:
                return await function(request)
            except UploadError as error:
                return _error(error.status, str(error))
            except ValueError as error:  # the index's own message for bad input
                return _error(400, str(error))
            except Exception as error:  # noqa: BLE001 - report, keep serving
                log.exception("request %s failed", request.url.path)
                return _error(500, f"The server could not answer: {type(error).__name__}: {error}")
        return endpoint

    async def page(request):
        return FileResponse(os.path.join(STATIC_DIR, "index.html"),
                            headers={"cache-control": "no-cache"})

    async def info(request):
        return JSONResponse(service.info())

    async def items(request):
        params = request.query_params
        offset = service.integer(params, "offset", 0, 0, max(len(index), 0))
        limit = service.integer(params, "limit", service.page_size, 1, MAX_K)
        return JSONResponse(await run_in_threadpool(service.items, offset, limit,
                                                    inline_thumbnails(request)))

    async def item(request):
        item_id = service.item_id(request.path_params["item_id"])
        return JSONResponse(service.item_json(await run_in_threadpool(index.item, item_id)))

    async def thumbnail(request):
        item_id = service.item_id(request.path_params["item_id"])
        data, media_type = await run_in_threadpool(service.thumbnail, item_id)
        return Response(data, media_type=media_type,
                        headers={"cache-control": "private, max-age=600"})

    async def image(request):
        item_id = service.item_id(request.path_params["item_id"])
        path, media_type, data = await run_in_threadpool(service.image, item_id)
        headers = {"cache-control": "private, max-age=600"}
        if path is not None:
            return FileResponse(path, media_type=media_type, headers=headers)
        return Response(data, media_type=media_type, headers=headers)

    def inline_thumbnails(request):
        value = request.query_params.get("thumbnails", "url")
        if value not in ("url", "inline"):
            raise UploadError(400, f"Expected thumbnails=url or thumbnails=inline, got {value!r}.")
        return value == "inline"

    def search_arguments(request):
        params = request.query_params
        model = service.model(params.get("model"))
        mode = service.mode(params.get("mode"))
        k = service.integer(params, "k", service.page_size, 1, MAX_K)
        offset = service.integer(params, "offset", 0, 0, max(len(index) - 1, 0))
        return model, mode, k, offset

    async def search_upload(request):
        model, mode, k, offset = search_arguments(request)
        data = await _read_body(request, service.max_upload_bytes)

        def run():
            with service.decode_slots:
                image = decode_upload(data, service.max_upload_bytes, service.max_pixels)
                if request.query_params.get("box"):
                    image, _ = crop_box(image, request.query_params["box"])
                return service.search(image, model, mode, k, offset, inline_thumbnails(request))

        return JSONResponse(await run_in_threadpool(run))

    async def search_item(request):
        model, mode, k, offset = search_arguments(request)
        if "item" not in request.query_params:
            raise UploadError(400, "Expected item=ID to search with an archive item, or POST "
                                   "an image.")
        item_id = service.item_id(request.query_params["item"])
        box = service.page_box(item_id, request.query_params.get("box"))
        return JSONResponse(await run_in_threadpool(service.search, item_id, model, mode, k,
                                                    offset, inline_thumbnails(request), box))

    async def locate(request):
        if not _locate_available():
            raise UploadError(501, "Locating marks on a page needs zoo.apps.locating, which this "
                                   "installation lacks.")
        params = request.query_params
        model = service.model(params.get("model"))
        data = await _read_body(request, service.max_upload_bytes)
        if ("item" in params) == ("box" in params):
            raise UploadError(400, "Expected either item=ID (an archive item to find on the "
                                   "page) or box=x,y,w,h (a mark on the page to find again).")

        def run():
            with service.decode_slots:
                page_image = decode_upload(data, service.max_upload_bytes, service.max_pixels)
            if "item" in params:
                _, template = service.item_file(service.item_id(params["item"]))
            else:
                template = crop_box(page_image, params["box"])[0]
            return service.locate(page_image, template, model)

        return JSONResponse(await run_in_threadpool(run))

    async def not_found(request, exc=None):
        return _error(404, f"Nothing at {request.url.path}.")

    routes = [
        Route("/", handle(page)),
        Route("/api/info", handle(info)),
        Route("/api/items", handle(items)),
        Route("/api/items/{item_id}", handle(item)),
        Route("/api/items/{item_id}/thumbnail", handle(thumbnail)),
        Route("/api/items/{item_id}/image", handle(image)),
        Route("/api/search", handle(search_upload), methods=["POST"]),
        Route("/api/search", handle(search_item), methods=["GET"]),
        Route("/api/locate", handle(locate), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)],
                    exception_handlers={404: not_found})
    app.state.service = service
    if warm_up:  # in the background: the page is served at once, the first search waits
        threading.Thread(target=service.warm_up, name="zoo-web-warm-up", daemon=True).start()
    return app


def serve(index_path, host="127.0.0.1", port=8080, max_upload_mb=MAX_UPLOAD_BYTES / 2**20,
          page_size=PAGE_SIZE, server=None, log_level="info"):
    """Open the index at `index_path` and serve the search page until interrupted; `server`
    ("host:port"): encode queries through that model server (Index.open's `server`)."""
    import uvicorn

    from zoo.apps.index import Index

    index = Index.open(index_path, server=server)
    name = os.path.basename(os.path.normpath(index_path))
    app = create_app(index, name=name, max_upload_bytes=int(max_upload_mb * 2**20),
                     page_size=page_size)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can search the archive "
                    "and see its images", host)
    size = f"{len(index)} pages ({index.region_count} regions)" if index.is_region_index else \
        f"{len(index)} items"
    print(f"searching {size} of {index_path} at http://{_url_host(host)}:{port}/ (Ctrl+C stops)",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _url_host(host):
    return f"[{host}]" if ":" in host else host


def start_server(app, host="127.0.0.1", port=0):
    """Serve `app` with uvicorn in a daemon thread (tests, benchmarks): -> (base URL, stop)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="zoo-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"The web server did not start on {host}:{port}.")
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://{_url_host(host)}:{bound_port}", stop

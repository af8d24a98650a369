"""Find a mark on a page photograph: encode the page's candidate regions (or slide a box over
it), rank them by similarity with the query.

By default (`proposals="ink"`) the candidates are the page's ink regions (`zoo.apps.proposals`:
connected components of the binarised ink and their merges at a few distances, each crop
masked to its own ink), a few dozen to a few hundred a page, the same regions a region index
(`zoo index build --regions`) encodes; when a page yields none, the sliding grid below is
searched instead. Each region is prepared exactly as a query is and encoded in batches; the
boxes are the regions' ink boxes, and non-maximum suppression keeps the `top` best.

`proposals="grid"` (or giving `scales` or `stride`) is the exhaustive search, kept as the
fallback and as the recall reference. The paper's motivation (Creswell & Bharath 2016): an
encoder that is invariant to small shifts lets a sliding-window search take large steps:

1. the page is read as grayscale and turned strokes-bright (light paper is inverted once, for
   the whole page), so that every crop sees the same polarity;
2. square boxes of a few sizes (`scales`, in page pixels) slide over the page in steps of
   `stride` times the box side; the last box of a row or column touches the page edge;
3. a crop counts as blank when its ink peak (above the paper level of its border) is below
   `min_ink`, or its strokes span less than a quarter of the box (a speck of grain or the tip
   of a stroke); blank crops are not encoded and score -1, no match. Every other crop is
   prepared exactly as a query is (`zoo.data.preprocess_tf.preprocess_image_tf`: crop to the
   ink, pad to square, resize), a batch at a time inside one TensorFlow graph;
4. crops are encoded in batches and scored by cosine similarity with the query's embedding;
5. each crop's box is snapped to the ink it holds (the part of the crop the encoder actually
   saw, `snap_to_ink=True`); non-maximum suppression keeps the `top` best boxes.

The heat map holds, for every page pixel, the best score of the boxes centred within half a
step of it (ink regions: of the regions covering it; -1 where none is): `draw_locate` overlays
it on the page with the best boxes.

    import zoo
    found = zoo.locate('page.jpg', 'query.png')        # model=zoo.registry.RECOMMENDED
    found.boxes[0]                                     # Box(x=412, y=96, w=88, h=131, score=0.91)
    from zoo.apps.locating import draw_locate
    draw_locate('page.jpg', found, 'heat.png')         # heat map + boxes, written atomically

The command line is `zoo locate page.jpg query.png --out heat.png`. (The module is
`zoo.apps.locating`, as `zoo.load` lives in `zoo.loading`, so that `zoo.locate` stays the function.)
`python -m benchmarks.locate_bench` measures hits and time per page for the ink regions and the
grid at several strides, with a raw-pixel baseline.
"""

import dataclasses
import functools
import logging
import os
import time
from typing import NamedTuple

import numpy as np

from zoo.visualize import save_png
from zoo.data.images import DEFAULT_MARGIN, decode_image
from zoo.apps.proposals import box_iou, non_max_suppression  # noqa: F401 - part of this API
from zoo.apps.proposals import strokes_bright
from zoo.registry import RECOMMENDED

log = logging.getLogger(__name__)

# Box sides as fractions of the page's shorter side when `scales` is not given.
DEFAULT_SCALE_FRACTIONS = (0.1, 0.15, 0.22, 0.33)
DEFAULT_STRIDE = 0.25  # of the box side
MIN_BOX = 8  # pixels: the smallest box side searched
MIN_INK_EXTENT = 0.25  # a crop's ink must span this fraction of the box side to be encoded
NO_MATCH = -1.0  # the score of a crop without ink (the lowest cosine similarity)
PROPOSALS = ("ink", "grid")


class Box(NamedTuple):
    """A found box in page pixels: top-left corner (x, y), width, height, cosine score."""

    x: int
    y: int
    w: int
    h: int
    score: float


@dataclasses.dataclass(frozen=True)
class Located:
    """What `locate` found.

    boxes: the ranked best boxes (after non-maximum suppression), best first.
    heat: float32 [H, W], for every page pixel the best score of the windows centred within
        half a step of it; -1 where there is none (page margins) or no ink.
    windows: int [M, 4] every window (or ink region) searched as (x, y, w, h); scores:
        float32 [M] their scores (-1 for windows without ink); ink_boxes: int [M, 4] the part
        of each window that holds its ink (the window itself where there is none).
    proposals: "ink" or "grid", what was searched.
    query: float32 [S, S] the query as the encoder saw it.
    seconds: wall-clock time of the search.
    """

    boxes: list
    heat: np.ndarray
    windows: np.ndarray
    scores: np.ndarray
    ink_boxes: np.ndarray
    query: np.ndarray
    seconds: float
    proposals: str = "grid"


# ----------------------------------------------------------------------------- inputs


def _as_gray(image, what):
    """A path, bytes, PIL image or array -> float32 [H, W] in [0, 1]; ValueError otherwise."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray)) or hasattr(image, "getbands"):
        return decode_image(image)
    array = np.asarray(image)
    expected = (f"Expected the {what} as a file path, image bytes, a PIL image, or an array "
                f"[H, W] / [H, W, 1|3|4], float in [0, 1] or uint8")
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating)
                                     or array.dtype == np.uint8):
        raise ValueError(f"{expected}; got dtype {array.dtype}.")
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        pass
    elif array.ndim != 2:
        raise ValueError(f"{expected}; got shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"{expected}; got an empty array of shape {array.shape}.")
    scale = 1.0 / 255.0 if array.dtype == np.uint8 else 1.0
    array = array.astype(np.float32) * np.float32(scale)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"The {what} contains NaN or infinite values.")
    if array.min() < -1e-3 or array.max() > 1 + 1e-3:
        raise ValueError(f"{expected}; got float values in [{array.min():.3g}, {array.max():.3g}].")
    array = np.clip(array, 0.0, 1.0)
    if array.ndim == 3:
        if array.shape[-1] == 4:  # transparent pixels are white paper, as decode_image does
            array = array[..., :3] * array[..., 3:] + (1.0 - array[..., 3:])
        if array.shape[-1] == 3:  # ITU-R 601-2 luma, as PIL's convert("L")
            array = array @ np.array([0.299, 0.587, 0.114], np.float32)
        else:
            array = array[..., 0]
    return np.ascontiguousarray(array, dtype=np.float32)


def _auto_min_ink(page):
    """Five robust standard deviations of the page's paper: brighter peaks are ink, not grain."""
    from zoo.data.preprocess_tf import MIN_INK

    sample = page[:: max(1, page.shape[0] // 512), :: max(1, page.shape[1] // 512)]
    median = np.median(sample)
    sigma = 1.4826 * float(np.median(np.abs(sample - median)))
    return max(MIN_INK, 5.0 * sigma)


def _box_sides(scales, height, width):
    shorter = min(height, width)
    if scales is None:
        if shorter < 2 * MIN_BOX:
            raise ValueError(f"The page of {width}x{height} px is too small to search: expected "
                             f"at least {2 * MIN_BOX} px on its shorter side.")
        sides = [max(MIN_BOX, int(round(f * shorter))) for f in DEFAULT_SCALE_FRACTIONS]
        return sorted(set(sides))
    if isinstance(scales, (int, np.integer)):
        scales = (scales,)
    try:
        sides = [int(s) for s in scales]
    except (TypeError, ValueError):
        raise ValueError(f"Expected scales as box sides in page pixels (integers), got "
                         f"{scales!r}.") from None
    if not sides or any(s != float(t) for s, t in zip(sides, scales)):
        raise ValueError(f"Expected scales as box sides in page pixels (whole numbers), got "
                         f"{scales!r}.")
    for side in sides:
        if side < MIN_BOX:
            raise ValueError(f"Expected box sides of at least {MIN_BOX} px, got {side}.")
        if side > shorter:
            raise ValueError(f"The page of {width}x{height} px is smaller than the box of "
                             f"{side}x{side} px; pass scales (box sides in pixels) of at most "
                             f"{shorter}.")
    return sorted(set(sides))


def _positions(length, side, step):
    """Offsets of boxes of `side` every `step` pixels; the last one touches the far edge."""
    positions = list(range(0, length - side + 1, step))
    if positions[-1] != length - side:
        positions.append(length - side)
    return positions


@functools.lru_cache(maxsize=4)
def _load_encoder(name):
    from zoo import load

    return load(name, with_hash_head=False)


def _encoder(model):
    if isinstance(model, str):
        return _load_encoder(model)
    if not (hasattr(model, "encode") and hasattr(model, "image_size")):
        raise ValueError(f"Expected model to be a registered model name or a zoo Encoder, got "
                         f"{type(model).__name__}.")
    return model


# ----------------------------------------------------------------------------- the graph


@functools.lru_cache(maxsize=None)
def _compiled_prepare(size, margin):
    """crops float32 [B, s, s] (strokes bright), min_ink -> (has_ink bool [B], ink boxes int32
    [B, 4] as (top, left, bottom, right) in crop pixels, canvases [K, size, size] of the K
    crops with ink, in order)."""
    import tensorflow as tf

    from zoo.data.preprocess_tf import preprocess_image_tf

    def first_and_last(mask):
        """First and last index where each row of a boolean [B, n] is true (0, n-1 if none)."""
        length = tf.shape(mask)[1]
        mask = tf.cast(mask, tf.int32)
        first = tf.argmax(mask, axis=1, output_type=tf.int32)
        last = length - 1 - tf.argmax(tf.reverse(mask, axis=[1]), axis=1, output_type=tf.int32)
        return first, last

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32),
                                  tf.TensorSpec([], tf.float32)], autograph=False)
    def prepare(crops, min_ink):
        # Batched, the first steps of preprocess_image_tf: paper level (median of the border,
        # corners counted twice), ink above it, strokes above half the ink peak.
        border = tf.concat([crops[:, 0], crops[:, -1], crops[:, :, 0], crops[:, :, -1]], axis=1)
        ordered = tf.sort(border, axis=1)
        count = tf.shape(ordered)[1]
        background = (ordered[:, count // 2] + ordered[:, (count - 1) // 2]) / 2.0
        ink = tf.maximum(crops - background[:, None, None], 0.0)
        peak = tf.reduce_max(ink, axis=[1, 2])
        strokes = ink > 0.5 * peak[:, None, None]
        rows, columns = tf.reduce_any(strokes, axis=2), tf.reduce_any(strokes, axis=1)
        # A speck of grain or the tip of a stroke, blown up to the whole canvas, looks like
        # anything: the ink must also span MIN_INK_EXTENT of the box.
        extent = tf.cast(tf.maximum(tf.reduce_sum(tf.cast(rows, tf.int32), axis=1),
                                    tf.reduce_sum(tf.cast(columns, tf.int32), axis=1)),
                         tf.float32) / tf.cast(tf.shape(crops)[1], tf.float32)
        has_ink = (peak >= min_ink) & (extent >= MIN_INK_EXTENT)
        top, bottom = first_and_last(rows)
        left, right = first_and_last(columns)
        # Only crops with ink go through the full preprocessing, one by one.
        canvases = tf.map_fn(
            lambda crop: preprocess_image_tf(crop, size=size, margin=margin),
            tf.boolean_mask(crops, has_ink),
            fn_output_signature=tf.TensorSpec([size, size], tf.float32))
        return has_ink, tf.stack([top, left, bottom, right], axis=1), canvases

    return prepare


# ----------------------------------------------------------------------------- search


def locate(page, query, model=RECOMMENDED, scales=None, stride=None, top=5,
           batch_size=256, min_ink=None, snap_to_ink=True, iou_threshold=0.3, progress=True,
           proposals=None):
    """Search `page` for the mark in `query`; return a `Located` (ranked boxes + heat map).
    (`encode_grid` and `zoo.apps.index.regions.region_images` are its query-independent halves.)

    page, query: file paths, image bytes, PIL images or arrays ([H, W] or [H, W, 1|3|4], float
        in [0, 1] or uint8), dark on light or bright on dark.
    model: a registered model name or a zoo Encoder.
    proposals: "ink" (the page's ink regions, zoo.apps.proposals; the grid when there are none) or
        "grid" (sliding boxes); default "ink", or "grid" when `scales` or `stride` is given.
    scales: grid box sides in page pixels; default `DEFAULT_SCALE_FRACTIONS` of the shorter
        side.
    stride: the grid's step between boxes as a fraction of the box side, in (0, 1] (default
        DEFAULT_STRIDE).
    top: how many boxes to return; iou_threshold: the overlap non-maximum suppression allows.
    batch_size: crops prepared and encoded at a time.
    min_ink: grid: the ink peak (above the crop's paper level, in [0, 1]) below which a crop
        counts as blank; default: five robust standard deviations of the page's paper grain
        (ink regions have their own threshold of the same kind, zoo.apps.proposals).
    snap_to_ink: grid: report each box as the ink it holds rather than the whole window.
    """
    from zoo.data.images import preprocess

    started = time.perf_counter()
    encoder = _encoder(model)
    if proposals is None:
        proposals = "grid" if scales is not None or stride is not None else "ink"
    if proposals not in PROPOSALS:
        raise ValueError(f"Expected proposals 'ink' or 'grid', got {proposals!r}.")
    if proposals == "ink" and (scales is not None or stride is not None):
        raise ValueError("scales and stride set the sliding grid; pass proposals='grid' with "
                         "them (or leave them out to search the page's ink regions).")
    stride = DEFAULT_STRIDE if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, (int, float, np.number)) \
            or not 0 < float(stride) <= 1:
        raise ValueError(f"Expected stride as a fraction of the box side in (0, 1], got "
                         f"{stride!r}.")
    for name, value in (("top", top), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"Expected {name} to be a positive integer, got {value!r}.")
    if not 0 <= iou_threshold < 1:
        raise ValueError(f"Expected iou_threshold in [0, 1), got {iou_threshold!r}.")

    query_gray = _as_gray(query, "query")
    try:
        query_image = preprocess(query_gray, size=encoder.image_size, margin=DEFAULT_MARGIN)
    except ValueError as error:
        raise ValueError(f"The query cannot be used: {error} Expected a crop of one mark.") \
            from None
    query_embedding = encoder.encode(query_image[None, ..., None])[0]

    page_gray = _as_gray(page, "page")
    height, width = page_gray.shape
    sides = _box_sides(scales, height, width)
    if proposals == "ink":
        found = _locate_regions(page_gray, encoder, query_embedding, batch_size)
        if found is not None:
            windows, scores = found
            return _located(windows, windows, scores, _region_heat(windows, scores, height,
                                                                    width),
                            top, iou_threshold, query_image, started, "ink", min_ink)
        log.info("locate: no ink regions on the page; searching the sliding grid")
    grid = encode_grid(page_gray, encoder, sides, stride, batch_size, min_ink, progress)
    scores = np.full(len(grid.windows), NO_MATCH, np.float32)
    if grid.has_ink.any():
        scores[grid.has_ink] = grid.embeddings[grid.has_ink] @ query_embedding
    heat = _heat_map(grid.windows, scores, grid.steps, height, width)
    return _located(grid.windows, grid.ink_boxes if snap_to_ink else grid.windows, scores, heat,
                    top, iou_threshold, query_image, started, "grid", grid.min_ink,
                    grid.ink_boxes)


@dataclasses.dataclass(frozen=True)
class GridEncoding:
    """A page's sliding-grid windows, encoded once (any number of queries can then be scored
    against them): windows and ink_boxes int [M, 4] (x, y, w, h), has_ink bool [M],
    embeddings float32 [M, D] (zero rows where there is no ink), steps [M] (pixels), and the
    min_ink used."""

    windows: np.ndarray
    ink_boxes: np.ndarray
    has_ink: np.ndarray
    embeddings: np.ndarray
    steps: list
    min_ink: float


def encode_grid(page_gray, encoder, sides, stride=DEFAULT_STRIDE, batch_size=256, min_ink=None,
                progress=False):
    """Encode every window of the sliding grid (box `sides` in page pixels, steps of `stride` x
    side) of a page (float32 [H, W] in [0, 1]): the exhaustive search's work, query aside."""
    from tqdm.auto import tqdm

    height, width = page_gray.shape
    page_bright = strokes_bright(page_gray)
    if min_ink is None:
        min_ink = _auto_min_ink(page_bright)
    elif not 0 < float(min_ink) < 1:
        raise ValueError(f"Expected min_ink in (0, 1), got {min_ink!r}.")
    from zoo.data.preprocess_tf import MIN_INK
    min_ink = max(float(min_ink), MIN_INK)  # below it preprocess_image_tf finds no ink

    prepare = _compiled_prepare(encoder.image_size, DEFAULT_MARGIN)
    grids = []
    for side in sides:
        step = max(1, int(round(float(stride) * side)))
        grids.append((side, step, _positions(height, side, step), _positions(width, side, step)))
    total = sum(len(ys) * len(xs) for _, _, ys, xs in grids)

    windows, has_ink_all, ink_boxes, steps, inked_embeddings = [], [], [], [], []
    with tqdm(total=total, desc="locate", unit="box", disable=not progress) as bar:
        for side, step, ys, xs in grids:
            corners = [(y, x) for y in ys for x in xs]
            for start in range(0, len(corners), batch_size):
                chunk = corners[start : start + batch_size]
                crops = np.stack([page_bright[y : y + side, x : x + side] for y, x in chunk])
                has_ink, bounds, canvases = (t.numpy() for t in prepare(crops, np.float32(min_ink)))
                if has_ink.any():
                    inked_embeddings.append(encoder.encode(canvases[..., None],
                                                           batch_size=batch_size))
                for (y, x), inked, (top_, left, bottom, right) in zip(chunk, has_ink, bounds):
                    windows.append((x, y, side, side))
                    if inked:
                        ink_boxes.append((x + left, y + top_, right - left + 1, bottom - top_ + 1))
                    else:
                        ink_boxes.append((x, y, side, side))
                has_ink_all.append(has_ink)
                steps.extend([step] * len(chunk))
                bar.update(len(chunk))

    has_ink = np.concatenate(has_ink_all).astype(bool) if has_ink_all else np.zeros(0, bool)
    dim = inked_embeddings[0].shape[1] if inked_embeddings else \
        getattr(encoder, "embedding_dim", 1)
    embeddings = np.zeros((len(has_ink), dim), np.float32)
    if inked_embeddings:
        embeddings[has_ink] = np.concatenate(inked_embeddings)
    return GridEncoding(np.asarray(windows, np.int64).reshape(-1, 4),
                        np.asarray(ink_boxes, np.int64).reshape(-1, 4), has_ink, embeddings,
                        steps, min_ink)


def _locate_regions(page_gray, encoder, query_embedding, batch_size):
    """(boxes, scores) of the page's ink regions, or None when it has none."""
    from zoo.apps.index.regions import region_images

    boxes, images = region_images(page_gray, encoder.image_size)
    if not len(boxes):
        return None
    embeddings = encoder.encode(images[..., None], batch_size=batch_size)
    return boxes, (embeddings @ query_embedding).astype(np.float32)


def _region_heat(boxes, scores, height, width):
    """Each region's score painted over its box; the best where boxes overlap."""
    heat = np.full((height, width), NO_MATCH, np.float32)
    for (x, y, w, h), score in sorted(zip(boxes.tolist(), scores.tolist()), key=lambda t: t[1]):
        heat[y : y + h, x : x + w] = score
    return heat


def _located(windows, candidates, scores, heat, top, iou_threshold, query_image, started,
             proposals, min_ink, ink_boxes=None):
    """The Located of scored windows: the `top` best `candidates` boxes after NMS."""
    inked = np.flatnonzero(scores > NO_MATCH)
    kept = inked[non_max_suppression(candidates[inked], scores[inked], top, iou_threshold)] \
        if inked.size else []
    if not inked.size:
        log.warning("locate: no box on the page holds ink above min_ink=%.3g", min_ink)
    boxes = [Box(*(int(v) for v in candidates[i]), score=float(scores[i])) for i in kept]
    return Located(boxes=boxes, heat=heat, windows=windows, scores=scores,
                   ink_boxes=windows if ink_boxes is None else ink_boxes, query=query_image,
                   seconds=time.perf_counter() - started, proposals=proposals)


def format_located(located):
    """The ranked boxes as a text table, and what the search covered."""
    inked = int((located.scores > NO_MATCH).sum())
    if located.proposals == "ink":
        searched = f"{len(located.scores)} ink regions of the page encoded"
    else:
        sides = sorted({int(w) for w in located.windows[:, 2]})
        searched = (f"{len(located.scores)} boxes of {', '.join(map(str, sides))} px searched, "
                    f"{inked} with ink encoded")
    lines = [f"{searched}, in {located.seconds:.2f} s",
             f"{'rank':>4} {'x':>6} {'y':>6} {'w':>5} {'h':>5} {'score':>7}"]
    lines += [f"{rank:>4} {box.x:>6} {box.y:>6} {box.w:>5} {box.h:>5} {box.score:>7.3f}"
              for rank, box in enumerate(located.boxes, start=1)]
    if not located.boxes:
        lines.append("   (no box holds ink: is the page blank, or min_ink too high?)")
    return "\n".join(lines)


def _heat_map(windows, scores, steps, height, width):
    """Paint each window's score on the step x step cell around its centre; keep the best."""
    heat = np.full((height, width), NO_MATCH, np.float32)
    for (x, y, w, h), score, step in zip(windows, scores, steps):
        if score <= NO_MATCH:
            continue
        top, left = y + h // 2 - step // 2, x + w // 2 - step // 2
        cell = heat[max(0, top) : top + step, max(0, left) : left + step]
        np.maximum(cell, score, out=cell)
    return heat


# ----------------------------------------------------------------------------- drawing


def draw_locate(page, located, path, top=None, colormap="inferno"):
    """Write a PNG of the page with the heat map laid over it and the best boxes (ranked and
    scored; the best in green, the others in orange), the query in a panel on the right.

    The heat map shows the upper half of the scores (the median and below stay clear), more
    opaque the higher. The PNG appears atomically (written beside `path`, then renamed).
    """
    import matplotlib
    from PIL import Image, ImageDraw

    gray = _as_gray(page, "page")
    height, width = gray.shape
    if located.heat.shape != gray.shape:
        raise ValueError(f"The heat map ({located.heat.shape}) is not of this page "
                         f"({gray.shape}); pass the page that was searched.")
    base = np.repeat((gray * 255)[..., None], 3, axis=-1).astype(np.float32)

    scored = located.heat > NO_MATCH
    if scored.any():
        low = float(np.median(located.heat[scored]))
        high = float(located.heat[scored].max())
        level = np.clip((located.heat - low) / max(high - low, 1e-6), 0.0, 1.0)
        colours = matplotlib.colormaps[colormap](level)[..., :3] * 255.0
        alpha = np.where(scored, 0.7 * level, 0.0)[..., None]
        base = base * (1.0 - alpha) + colours * alpha

    query = (np.clip(located.query, 0, 1) * 255).astype(np.uint8)
    scale = max(1, min(height // 3, 256) // query.shape[0])
    inset = Image.fromarray(query).resize((query.shape[1] * scale, query.shape[0] * scale),
                                          Image.NEAREST).convert("RGB")
    panel = inset.width + 16
    canvas = Image.new("RGB", (width + panel, max(height, inset.height + 24)), (255, 255, 255))
    canvas.paste(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((width + 8, 4), "query", fill=(0, 0, 0))
    draw.rectangle([width + 6, 16, width + 9 + inset.width, 19 + inset.height],
                   fill=(80, 140, 255))
    canvas.paste(inset, (width + 8, 18))

    line = max(2, min(height, width) // 250)
    boxes = located.boxes if top is None else located.boxes[:top]
    for rank, box in reversed(list(enumerate(boxes, start=1))):
        colour = (40, 200, 80) if rank == 1 else (255, 150, 30)
        draw.rectangle([box.x, box.y, box.x + box.w - 1, box.y + box.h - 1], outline=colour,
                       width=line)
        label = f"{rank}: {box.score:.3f}"
        text_y = box.y - 12 if box.y >= 12 else box.y + box.h + 2
        draw.rectangle([box.x, text_y, box.x + 6 * len(label) + 4, text_y + 11], fill=colour)
        draw.text((box.x + 2, text_y), label, fill=(0, 0, 0))
    return save_png(canvas, path)


# ----------------------------------------------------------------------------- test pages


def synthetic_page(marks, places, height=800, width=1000, paper=0.88, ink=0.65, noise=0.03,
                   seed=0):
    """A page photograph stand-in: light paper with grain, `marks` (bright-stroke images
    [h, w] or [h, w, 1] in [0, 1]) drawn dark at `places` (x, y, w, h), resized to fit.
    Returns float32 [height, width] in [0, 1]."""
    from PIL import Image

    if len(marks) != len(places):
        raise ValueError(f"Expected one place per mark; got {len(marks)} marks and "
                         f"{len(places)} places.")
    rng = np.random.default_rng(seed)
    page = paper + noise * rng.standard_normal((height, width))
    page += 0.04 * np.linspace(-1, 1, width)[None, :]  # uneven lighting
    darkness = np.zeros((height, width), np.float32)
    for mark, (x, y, w, h) in zip(marks, places):
        mark = np.asarray(mark, np.float32).reshape(np.shape(mark)[:2])
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise ValueError(f"The place {(x, y, w, h)} is not inside the {width}x{height} page.")
        resized = np.asarray(Image.fromarray(mark).resize((w, h), Image.BILINEAR), np.float32)
        region = darkness[y : y + h, x : x + w]
        np.maximum(region, np.clip(resized, 0, 1), out=region)
    page -= ink * darkness
    return np.clip(page, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SearchPage:
    """A synthetic page with a known answer: `page` float32 [H, W], the `query` (another
    drawing of the target's identity, [64, 64] strokes bright), the target's ink box
    `truth` (x, y, w, h), and the `places` (x, y, w, h) every mark was drawn into."""

    page: np.ndarray
    query: np.ndarray
    truth: tuple
    places: tuple


def make_search_page(height=800, width=1000, num_marks=8, target=0, seed=0):
    """`num_marks` procedural merchant marks (zoo.data.merchant_marks, one identity each) drawn
    dark on grainy paper, one per cell of a grid, at random sizes and offsets; the query is
    another drawing of mark `target`'s identity."""
    from PIL import Image

    from zoo.data.merchant_marks import make_corpus

    if not 0 <= target < num_marks:
        raise ValueError(f"Expected 0 <= target < num_marks, got target={target}, "
                         f"num_marks={num_marks}.")
    rng = np.random.default_rng([seed, 11])
    columns = int(np.ceil(np.sqrt(num_marks * width / height)))
    rows = -(-num_marks // columns)
    cell_h, cell_w = height // rows, width // columns
    corpus = make_corpus(num_marks, 2, seed=seed)
    places = []
    for index in range(num_marks):
        row, column = divmod(index, columns)
        side = int(min(cell_h, cell_w) * rng.uniform(0.55, 0.8))
        places.append((column * cell_w + int(rng.integers(0, cell_w - side + 1)),
                       row * cell_h + int(rng.integers(0, cell_h - side + 1)), side, side))
    marks = [corpus.images[2 * index, :, :, 0] for index in range(num_marks)]
    page = synthetic_page(marks, places, height, width, seed=seed)
    x, y, w, h = places[target]
    resized = np.asarray(Image.fromarray(marks[target]).resize((w, h), Image.BILINEAR))
    ink_rows, ink_columns = np.nonzero(resized > 0.5)
    truth = (x + int(ink_columns.min()), y + int(ink_rows.min()),
             int(ink_columns.max() - ink_columns.min() + 1),
             int(ink_rows.max() - ink_rows.min() + 1))
    return SearchPage(page, corpus.images[2 * target + 1, :, :, 0], truth, tuple(places))

"""Region indexes: every candidate region of every page photograph encoded, searched by page.

A historian's question is "on which pages does this mark appear, and where?". A region index
(`Index.build(out, pages, regions=True)`) answers it without sliding a box over every page for
every query: at build time each page's candidate regions (`zoo.apps.proposals`: connected ink and
its merges, a few hundred boxes a page at most) are prepared like queries and encoded once; a
search then ranks the regions and groups them by page.

Search works in two stages so that it never needs every float embedding in memory:

1. candidates: the query's binary code (the model's 64-bit hash head) against every region's
   code by Hamming distance (`nearest_codes`, a numpy popcount scan; in memory: 8 bytes of
   code and 4 of page id a region);
2. re-ranking: the `candidates` nearest regions' float embeddings are read from the index's
   memory-mapped embedding files and scored by cosine similarity with the query's embedding;
   their boxes are read from the memory-mapped region files.

`candidates=None` (or 0) scans every float embedding exactly instead (the reference the
benchmark measures the two stages against). Hits are pages: `PageHit(rank, id, path, score,
box, boxes, metadata)`, one a page, scored by its best region, with that region's `box`
(x, y, w, h in page pixels) and the page's other matching regions in `boxes` (non-maximum
suppressed, best first, as (x, y, w, h, score)).

Pages are decoded with the zoo's decoder; a page of more than `MAX_PAGE_PIXELS` pixels is
refused (reported and skipped, like a corrupt file); one whose longer side exceeds
`zoo.apps.proposals.MAX_WORKING_SIDE` is searched on a downscaled copy, boxes still in page pixels.
A page without ink regions (blank) is reported and skipped.
"""

import dataclasses
import os

import numpy as np

from zoo.apps.index.preprocess import preprocess_numpy
from zoo.apps.proposals import non_max_suppression, propose_regions, region_crops

MAX_PAGE_PIXELS = 60_000_000  # 60 megapixels: larger pages are refused
DEFAULT_CANDIDATES = 4096  # regions re-ranked by their float embeddings
DEFAULT_PAGE_CHUNK = 16  # pages encoded per resumable chunk
MAX_BOXES_PER_HIT = 10
BOX_IOU = 0.3  # regions of one page overlapping more than this are one match
# A page's other regions count as matches when they score within this of its best region.
COSINE_MARGIN = 0.1
HAMMING_MARGIN = 4  # bits


@dataclasses.dataclass(frozen=True)
class PageHit:
    """One page of a region search. `rank` counts from 1 over the whole result list; `score`
    is the best region's cosine similarity (mode "embedding") or Hamming distance ("hamming");
    `box` that region (x, y, w, h) in page pixels; `boxes` the page's matching regions
    [(x, y, w, h, score)], best first, the first being `box` (the others score within
    COSINE_MARGIN, or HAMMING_MARGIN bits, of it); `region` the best region's row."""

    rank: int
    id: int
    path: str
    score: float
    box: tuple
    boxes: list
    metadata: dict
    region: int


def region_images(gray, size, settings=None):
    """(boxes int64 [M, 4] in page pixels, images float32 [M, size, size]) of a page's
    candidate regions, each prepared as a query is (crop to the ink, pad, resize); regions
    whose crop holds no ink to the preprocessing are left out."""
    boxes, images = region_images_by_size(gray, (size,), settings)
    return boxes, images[size]


def region_images_by_size(gray, sizes, settings=None):
    """`region_images` for several image sizes at once (the page's regions are proposed
    once): (boxes [M, 4], {size: images float32 [M, size, size]})."""
    regions = propose_regions(gray, settings)
    boxes, images = [], {size: [] for size in sizes}
    for box, crop in zip(regions.boxes, region_crops(regions)):
        try:
            prepared = {size: preprocess_numpy(crop, size=size) for size in sizes}
        except ValueError:  # no ink to the preprocessing, whatever the size
            continue
        boxes.append(box)
        for size in sizes:
            images[size].append(prepared[size])
    return (np.asarray(boxes, np.int64).reshape(-1, 4),
            {size: np.asarray(stack, np.float32).reshape(-1, size, size)
             for size, stack in images.items()})


def crop_box(gray, box, what="page"):
    """gray[y : y + h, x : x + w] of a box (x, y, w, h) in pixels; ValueError unless the box is
    at least 4 x 4 px and inside the image."""
    try:
        x, y, w, h = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"Expected a box (x, y, w, h) in {what} pixels; got {box!r}.") from None
    height, width = gray.shape
    if w < 4 or h < 4 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"Expected a box of at least 4 x 4 px inside the {width}x{height} "
                         f"{what}; got {(x, y, w, h)}.")
    return gray[y : y + h, x : x + w]


def check_page_size(path):
    """ValueError when the image file at `path` has more than MAX_PAGE_PIXELS pixels (read
    from its header, before decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - the decoder reports unreadable files with their reason
        return
    if width * height > MAX_PAGE_PIXELS:
        raise ValueError(f"page of {width}x{height} px is over the {MAX_PAGE_PIXELS // 10**6} "
                         f"megapixel limit; downscale it (e.g. to 400 dpi) and add it again")


def code_words(packed):
    """Packed codes uint8 [N, B] as uint64 words [N, ceil(B / 8)] (zero-padded), for
    `nearest_codes`."""
    packed = np.ascontiguousarray(packed, np.uint8)
    width = -(-packed.shape[1] // 8) * 8
    if width != packed.shape[1]:
        padded = np.zeros((len(packed), width), np.uint8)
        padded[:, : packed.shape[1]] = packed
        packed = padded
    return packed.view(np.uint64).reshape(len(packed), width // 8)


def nearest_codes(words, query_words, count):
    """(rows int64, distances int32) of the `count` codes nearest to the query by Hamming
    distance, ordered by distance, then row (as a stable sort of a full scan). words: uint64
    [N, W] (`code_words`). A scan with numpy's popcount; the cut-off distance comes from a
    histogram of the (small, integer) distances rather than a partial sort, so selecting costs
    a pass, not a sort."""
    if words.shape[1] == 1:
        distances = np.bitwise_count(words[:, 0] ^ query_words[0])
    else:
        distances = np.bitwise_count(words ^ query_words[None, :]).sum(axis=1, dtype=np.int32)
    count = min(int(count), len(distances))
    cumulative = np.cumsum(np.bincount(distances))
    cutoff = int(np.searchsorted(cumulative, count))  # the least d with count codes at <= d
    below = np.flatnonzero(distances < cutoff)
    rows = np.concatenate([below, np.flatnonzero(distances == cutoff)[: count - len(below)]])
    order = np.lexsort((rows, distances[rows]))
    return rows[order].astype(np.int64), distances[rows[order]].astype(np.int32)


def group_by_page(region_ids, scores, table, higher_is_better, k, offset=0):
    """Group ranked regions by page: [(page, [(row, score), ...])], pages ordered by their best
    region (ties by page id), regions of a page best first. `table`: int64 [N, 5] rows of
    (page, x, y, w, h); only rows `region_ids` with `scores` are considered."""
    order = np.lexsort((region_ids, -scores if higher_is_better else scores))
    pages = {}
    for position in order:
        row = int(region_ids[position])
        pages.setdefault(int(table[row, 0]), []).append((row, scores[position]))
    ranked = sorted(pages.items(), key=lambda item: (
        -item[1][0][1] if higher_is_better else item[1][0][1], item[0]))
    return ranked[offset : offset + k]


def page_hits(grouped, table, items, offset, integer_scores, row_ids=None):
    """PageHits of `group_by_page`'s result; each page's regions are non-maximum suppressed.
    `row_ids`: the index's row of each `table` row (default: the same)."""
    hits = []
    for rank, (page, regions) in enumerate(grouped, start=offset + 1):
        best = regions[0][1]
        regions = [(row, score) for row, score in regions
                   if (score - best <= HAMMING_MARGIN if integer_scores
                       else best - score <= COSINE_MARGIN)]
        rows = np.asarray([row for row, _ in regions], np.int64)
        scores = np.asarray([score for _, score in regions], np.float64)
        boxes = table[rows, 1:5]
        kept = non_max_suppression(boxes, scores if not integer_scores else -scores,
                                   MAX_BOXES_PER_HIT, BOX_IOU)
        cast = int if integer_scores else float
        found = [(*(int(v) for v in boxes[i]), cast(scores[i])) for i in kept]
        path, metadata = items[page]
        region = int(rows[0] if row_ids is None else row_ids[rows[0]])
        hits.append(PageHit(rank, page, path, cast(scores[0]), tuple(found[0][:4]), found,
                            dict(metadata), region))
    return hits


def format_page_hits(hits, mode="embedding"):
    """A plain table of page hits: rank, score, page id, box, other matches, path."""
    score_name = "distance" if mode == "hamming" else "cosine"
    lines = [f"{'rank':>4}  {score_name:>8}  {'page':>6}  {'x':>5} {'y':>5} {'w':>4} {'h':>4}  "
             f"{'more':>4}  path"]
    for hit in hits:
        score = f"{hit.score:8d}" if mode == "hamming" else f"{hit.score:8.4f}"
        x, y, w, h = hit.box
        lines.append(f"{hit.rank:>4}  {score}  {hit.id:>6}  {x:>5} {y:>5} {w:>4} {h:>4}  "
                     f"{len(hit.boxes) - 1:>4}  {hit.path}")
    return "\n".join(lines)


def save_page_grid(path, hits, query_tile, columns=4, thumb=256):
    """A PNG of the query (blue frame) and each hit's page, downscaled, with its best box in
    green and its other matching boxes in orange, rank and score above; written atomically."""
    from PIL import Image, ImageDraw

    from zoo.data.images import decode_image
    from zoo.apps.index.store import atomic_file

    if not hits:
        raise ValueError("No hits to draw.")
    tiles = []
    query = Image.fromarray((255 - np.clip(query_tile, 0, 1) * 255).astype(np.uint8))
    query = query.resize((thumb // 2, thumb // 2), Image.NEAREST).convert("RGB")
    for hit in hits:
        try:
            page = Image.fromarray((decode_image(hit.path) * 255).astype(np.uint8))
        except ValueError:
            page = Image.new("L", (thumb, thumb), 0)
        scale = thumb / max(page.size)
        small = page.resize((max(1, round(page.width * scale)), max(1, round(page.height * scale))),
                            Image.BILINEAR).convert("RGB")
        draw = ImageDraw.Draw(small)
        for number, (x, y, w, h, _) in reversed(list(enumerate(hit.boxes))):
            colour = (40, 200, 80) if number == 0 else (255, 150, 30)
            draw.rectangle([x * scale - 1, y * scale - 1, (x + w) * scale + 1,
                            (y + h) * scale + 1], outline=colour, width=2)
        tiles.append((hit, small))
    rows = -(-len(tiles) // columns)
    label = 14
    canvas = Image.new("RGB", (thumb // 2 + 16 + columns * (thumb + 8), rows * (thumb + label + 8)
                               + 8), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([4, 4 + label, 12 + query.width, 12 + label + query.height], fill=(80, 140, 255))
    canvas.paste(query, (8, 8 + label))
    draw.text((8, 4), "query", fill=(0, 0, 0))
    for number, (hit, small) in enumerate(tiles):
        row, column = divmod(number, columns)
        left = thumb // 2 + 16 + column * (thumb + 8)
        top = 4 + row * (thumb + label + 8)
        score = f"{hit.score:d}" if isinstance(hit.score, int) else f"{hit.score:.3f}"
        draw.text((left, top), f"{hit.rank}: {score}  {os.path.basename(hit.path)}"[:44],
                  fill=(0, 0, 0))
        canvas.paste(small, (left, top + label))
    with atomic_file(path) as stream:
        canvas.save(stream, format="PNG")
    return path

"""A synthetic archive of page photographs with ground truth: where is this mark in the archive?

`zoo.apps.locating.make_search_page` asks "where on this page is the mark?". A historian asks a
harder question of a whole archive: "on which pages does this mark appear, and where?". This
module generates an archive to measure that: many page photographs, a set of query marks, and
for every query the pages and ink boxes where other drawings of its identity are hidden.

A page (1000 x 800 px by default, grayscale, dark ink on light paper) holds

* `marks_per_page` procedural merchant marks (`zoo.data.merchant_marks`), 80-170 px squares
  placed by rejection sampling at least 12 px apart, each drawn by its own hand at its own
  size (no upscaling) and with its own ink darkness;
* `characters_per_page` real handwritten characters from Omniglot's background set (the raw
  105 x 105 drawings, 40-80 px), clear of the marks;
* paragraphs of cursive-looking scribble (a looping pen path with ascenders, descenders, slant
  and gaps between words, 150-400 px long) in the free space between them;
* paper: blotchy low-frequency shading, fibre grain and a few foxing spots, uneven lighting
  (a gradient and a vignette), a slight rotation of the whole sheet (at most 1.5 degrees),
  a slight blur (sigma 0.6-1.2 px) and sensor noise.

Ground truth. Query q is merchant-mark identity `query_identity(spec, q)`; it is hidden on
`pages_per_query` distinct random pages, each time as a different drawing (another hand), and
the query image is yet another drawing, on its own bit of paper, like a crop a person made.
Every other mark is a distractor identity drawn from an id range disjoint from the queries'
(and from the corpora the shipped encoders were trained on). A hidden mark's box (x, y, w, h)
is tight around its ink on the final, rotated page: the pixels where its pen left at least
35 % of full ink, rotated with the page.

Determinism. Everything derives from integer seeds, `np.random.default_rng([seed, page, ...])`
style, one stream per part of the page, so page i does not depend on how many pages are
generated or in which order. Which pages hide which queries depends on the archive's size,
`hide_among` pages (default: all of them); a hidden mark takes one of the page's mark places
instead of a distractor and leaves the rest of the page as it is. Fix `hide_among` to make a
bigger archive the smaller one plus pages of distractors only, page for page:
`PageArchiveSpec(num_pages=10_000, hide_among=1_000)` holds the 1,000-page archive (of the same
`hide_among`) as its first 1,000 pages, with the same truth.

Typical use::

    spec = PageArchiveSpec(num_pages=1000)          # 50 queries x 3 pages, 1000 x 800 pages
    page = render_page(spec, 17)                    # .image float32 [800, 1000], ink dark
    page.hidden                                     # [(query_index, (x, y, w, h)), ...]
    query = render_query(spec, 4)                   # float32 [128, 128], ink dark on paper
    truth = write_page_archive(spec, 'archive/')    # pages/*.jpg, queries/*.png, truth.json

`write_page_archive` is resumable: every file is written atomically (a temporary file in the
same folder, then os.replace), `spec.json` first and `truth.json` last, so a killed run leaves
only whole files and a rerun with the same spec writes just the missing pages. A folder that
holds another spec's archive is refused. Omniglot is read in place from
`images_background.zip` (or `images_background_small1.zip`) in `omniglot_dir`, by default
`zoo.data.omniglot.default_omniglot_dir()` (ZOO_OMNIGLOT_DIR); nothing is downloaded.

Speed: a default page takes about 45-60 ms to render on one core and about 65 ms with its
JPEG written (about 105 KB); `write_page_archive` with two workers writes about 25 pages/s on
two cores, so 10,000 pages take 7 minutes or so.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import zipfile

import numpy as np

from zoo.atomic import atomic_file, write_json
from zoo.data.merchant_marks import draw_instance, make_identity

__all__ = [
    "PageArchiveSpec",
    "RenderedPage",
    "query_identity",
    "hidden_pages",
    "render_page",
    "render_query",
    "write_page_archive",
    "OMNIGLOT_ZIPS",
    "QUERY_SIZE",
]

OMNIGLOT_ZIPS = ("images_background.zip", "images_background_small1.zip")
"""The Omniglot zips a page's handwriting is read from, the first one present in omniglot_dir."""

QUERY_SIZE = 128  # side of a query image in pixels

# Sizes on the page, in pixels.
_MARK_SIDE = (80, 170)  # side of a mark's square (its drawing's canvas)
_CHARACTER_SIDE = (40, 80)  # longer side of an Omniglot character's ink
_GAP = 12  # free paper kept between a mark's square and anything else
_SMALL_GAP = 6  # between characters and scribbles
_MAX_ROTATION = 1.5  # degrees, either way
_BLUR_SIGMA = (0.6, 1.2)
_PLACEMENT_TRIES = 200  # random places tried for one item before it is shrunk (marks) or dropped
_MAX_DENSITY = 0.45  # of the usable page area that marks and characters of average size may cover
_INK_THRESHOLD = 0.35  # pen coverage that counts as ink for a truth box
_GRAIN_CUTOFF = 0.2  # draw_instance's paper grain stays below this; it is removed from marks

# Identity ids. Queries: _QUERY_ID_BASE + seed * _QUERY_ID_STRIDE + q. Distractors: drawn from
# [_DISTRACTOR_ID_LOW, _DISTRACTOR_ID_HIGH). Both ranges lie above the ids of the training
# corpora (make_corpus: seed * 1_000_003 + i) and below the stream's fresh ids (2**40 up).
_QUERY_ID_BASE = 2**38
_QUERY_ID_STRIDE = 2**20
_MAX_SEED = 2**17  # keeps query ids below 2**38 + 2**37, clear of the distractors
_DISTRACTOR_ID_LOW = 2**39
_DISTRACTOR_ID_HIGH = 2**40

# Salts keep the random streams of a page's parts apart.
_MARKS_SALT = 0x4D41
_CHARACTERS_SALT = 0x4348
_SCRIBBLE_SALT = 0x5343
_PAPER_SALT = 0x5041
_SLOT_SALT = 0x534C
_HIDDEN_SALT = 0x4849
_QUERY_SALT = 0x5155
_PLACEMENT_SALT = 0x504C

_FORMAT = 1  # of truth.json and spec.json


# --------------------------------------------------------------------------------------------
# The spec and what a page is.
# --------------------------------------------------------------------------------------------


def _check_int(name, value, low):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    return int(value)


def _rotation_margin(height, width):
    """Pixels from the page edge that a rotation of at most _MAX_ROTATION can move ink by."""
    return (
        int(math.ceil(0.5 * math.hypot(height, width) * math.sin(math.radians(_MAX_ROTATION)))) + 4
    )


@dataclasses.dataclass(frozen=True)
class PageArchiveSpec:
    """What archive to generate. `hide_among` (default `num_pages`): the queries are hidden on
    pages [0, hide_among) only, so that archives of different sizes can share their pages.
    `omniglot_dir` (default `default_omniglot_dir()`) says where the Omniglot zips are; it is
    not part of the archive's identity. Invalid values raise ValueError here."""

    num_pages: int = 1000
    num_queries: int = 50
    pages_per_query: int = 3
    height: int = 800
    width: int = 1000
    marks_per_page: int = 6
    characters_per_page: int = 8
    seed: int = 0
    omniglot_dir: str | None = None
    hide_among: int | None = None

    def __post_init__(self):
        for name, low in (
            ("num_pages", 1),
            ("num_queries", 1),
            ("pages_per_query", 1),
            ("height", 1),
            ("width", 1),
            ("marks_per_page", 1),
            ("characters_per_page", 0),
            ("seed", 0),
        ):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), low))
        if self.seed >= _MAX_SEED:
            raise ValueError(f"seed must be below {_MAX_SEED}, got {self.seed}")
        if self.num_queries > _QUERY_ID_STRIDE:
            raise ValueError(
                f"num_queries must be at most {_QUERY_ID_STRIDE}, got {self.num_queries}"
            )
        if self.hide_among is not None:
            object.__setattr__(self, "hide_among", _check_int("hide_among", self.hide_among, 1))
            if self.hide_among > self.num_pages:
                raise ValueError(
                    f"hide_among ({self.hide_among}) must be at most num_pages "
                    f"({self.num_pages})"
                )
        among = self.hiding_pages
        if self.pages_per_query > among:
            raise ValueError(
                f"pages_per_query ({self.pages_per_query}) must be at most the number of "
                f"pages the queries are hidden among ({among}): each drawing of a query "
                f"goes on a different page"
            )
        if self.num_queries * self.pages_per_query > among * self.marks_per_page:
            raise ValueError(
                f"{self.num_queries} queries x {self.pages_per_query} pages = "
                f"{self.num_queries * self.pages_per_query} hidden marks do not fit on "
                f"{among} pages x {self.marks_per_page} marks per page"
            )
        margin = _rotation_margin(self.height, self.width)
        usable_h, usable_w = self.height - 2 * margin, self.width - 2 * margin
        if min(usable_h, usable_w) < _MARK_SIDE[1]:
            raise ValueError(
                f"A {self.width} x {self.height} page is too small: marks up to "
                f"{_MARK_SIDE[1]} px need height and width of at least "
                f"{_MARK_SIDE[1] + 2 * margin} px"
            )
        mark_area = self.marks_per_page * (sum(_MARK_SIDE) / 2 + _GAP) ** 2
        character_area = self.characters_per_page * (sum(_CHARACTER_SIDE) / 2 + _GAP) ** 2
        if mark_area + character_area > _MAX_DENSITY * usable_h * usable_w:
            raise ValueError(
                f"{self.marks_per_page} marks and {self.characters_per_page} characters "
                f"do not fit on a {self.width} x {self.height} page (they may cover "
                f"{_MAX_DENSITY:.0%} of it on average): use fewer or a larger page"
            )

    @property
    def hiding_pages(self) -> int:
        """The queries are hidden on pages [0, hiding_pages)."""
        return self.num_pages if self.hide_among is None else self.hide_among

    def identity(self) -> dict:
        """The fields that determine the archive's content (not where Omniglot lives), with
        `hide_among` resolved: what spec.json and truth.json record and compare."""
        fields = dataclasses.asdict(self)
        del fields["omniglot_dir"]
        fields["hide_among"] = self.hiding_pages
        return fields


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class RenderedPage:
    """One page photograph with its ground truth. Boxes are (x, y, w, h) in page pixels on the
    final page, tight around the ink.

    image: float32 [height, width] in [0, 1], dark ink on light paper.
    marks: every merchant mark on the page as (identity_id, box), hidden queries included.
    hidden: the query marks hidden on the page as (query_index, box), by query index.
    """

    image: np.ndarray
    marks: list
    hidden: list


def query_identity(spec: PageArchiveSpec, query_index: int) -> int:
    """The merchant-mark identity id of query `query_index` (disjoint from every distractor)."""
    query_index = _check_query_index(spec, query_index)
    return _QUERY_ID_BASE + spec.seed * _QUERY_ID_STRIDE + query_index


def _check_query_index(spec, query_index):
    query_index = _check_int("query_index", query_index, 0)
    if query_index >= spec.num_queries:
        raise ValueError(
            f"query_index must be below num_queries ({spec.num_queries}), got {query_index}"
        )
    return query_index


def _check_page_index(spec, page_index):
    page_index = _check_int("page_index", page_index, 0)
    if page_index >= spec.num_pages:
        raise ValueError(f"page_index must be below num_pages ({spec.num_pages}), got {page_index}")
    return page_index


# --------------------------------------------------------------------------------------------
# Which pages hide which queries.
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _hiding_plan(num_queries, pages_per_query, hiding_pages, marks_per_page, seed):
    """pages[q] = the sorted pages query q is hidden on (its drawings k = 0, 1, ... in that
    order), and on_page = {page: [(q, k), ...]}.

    Each query in turn takes `pages_per_query` distinct random pages among those with a mark
    place left, so the first queries keep their pages when more queries are added. Should that
    run out of room (only near full capacity), every query instead takes the pages with the
    most places left, random among ties, which always succeeds when the totals fit.
    """
    rng = np.random.default_rng([seed, _PLACEMENT_SALT])
    capacity = np.full(hiding_pages, marks_per_page)
    pages = []
    for _ in range(num_queries):
        available = np.flatnonzero(capacity > 0)
        if len(available) < pages_per_query:
            pages = None
            break
        chosen = np.sort(rng.choice(available, pages_per_query, replace=False))
        capacity[chosen] -= 1
        pages.append(chosen)
    if pages is None:  # the balanced fallback
        capacity = np.full(hiding_pages, marks_per_page)
        pages = []
        for _ in range(num_queries):
            order = np.lexsort((rng.random(hiding_pages), -capacity))
            chosen = np.sort(order[:pages_per_query])
            if capacity[chosen].min() <= 0:
                raise RuntimeError(
                    "hidden marks could not be placed"
                )  # excluded by the spec's checks
            capacity[chosen] -= 1
            pages.append(chosen)
    on_page = {}
    for q, chosen in enumerate(pages):
        for k, page in enumerate(chosen):
            on_page.setdefault(int(page), []).append((q, k))
    return tuple(tuple(int(p) for p in chosen) for chosen in pages), on_page


def hidden_pages(spec: PageArchiveSpec, query_index: int) -> tuple:
    """The page indices query `query_index` is hidden on, ascending."""
    query_index = _check_query_index(spec, query_index)
    return _plan(spec)[0][query_index]


def _plan(spec):
    return _hiding_plan(
        spec.num_queries, spec.pages_per_query, spec.hiding_pages, spec.marks_per_page, spec.seed
    )


# --------------------------------------------------------------------------------------------
# Placing things on the page.
# --------------------------------------------------------------------------------------------


def _find_place(rng, w, h, height, width, margin, taken, gap):
    """A random top-left corner (x, y) for a w x h box inside the margins and clear of
    everything in `taken`, a list of (boxes, gap): at least max(gap, that gap) pixels from each
    of those boxes (x, y, w, h). None when _PLACEMENT_TRIES random corners all collide.

    The corners are drawn all at once and the first free one is taken, so the result (and the
    generator's state afterwards) does not depend on how many were free.
    """
    if w > width - 2 * margin or h > height - 2 * margin:
        return None
    xs = rng.integers(margin, width - margin - w + 1, _PLACEMENT_TRIES)
    ys = rng.integers(margin, height - margin - h + 1, _PLACEMENT_TRIES)
    free = np.ones(_PLACEMENT_TRIES, bool)
    for boxes, item_gap in taken:
        if len(boxes) == 0:
            continue
        boxes = np.asarray(boxes)[None, :, :]
        clear = max(gap, item_gap)
        hits = (
            (xs[:, None] < boxes[..., 0] + boxes[..., 2] + clear)
            & (boxes[..., 0] < xs[:, None] + w + clear)
            & (ys[:, None] < boxes[..., 1] + boxes[..., 3] + clear)
            & (boxes[..., 1] < ys[:, None] + h + clear)
        )
        free &= ~hits.any(axis=1)
    first = np.flatnonzero(free)
    return None if len(first) == 0 else (int(xs[first[0]]), int(ys[first[0]]))


@dataclasses.dataclass(frozen=True)
class _MarkLayout:
    """The merchant marks' part of a page: all that the truth boxes depend on."""

    slots: tuple  # (x, y, side) of each mark's square, in placement order
    darkness: tuple  # per slot, the ink's darkness (fraction of the paper's brightness it takes)
    distractors: tuple  # per slot, the identity id drawn there unless a query takes the slot
    hidden_order: tuple  # slot indices in the order hidden queries take them
    angle: float  # the sheet's rotation in degrees


@functools.lru_cache(maxsize=64)
def _mark_layout(spec, page_index):
    """Where the page's marks go, how dark each is, its distractors and the sheet's rotation:
    all from the page's own random stream, whatever queries the page hides."""
    rng = np.random.default_rng([spec.seed, page_index, _MARKS_SALT])
    angle = float(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
    margin = _rotation_margin(spec.height, spec.width)
    slots, placed = [], []
    for _ in range(spec.marks_per_page):
        side = int(rng.integers(_MARK_SIDE[0], _MARK_SIDE[1] + 1))
        while True:  # shrink a mark that finds no place; the spec's density check makes it rare
            corner = _find_place(
                rng, side, side, spec.height, spec.width, margin, [(placed, _GAP)], _GAP
            )
            if corner is not None:
                break
            if side <= _MARK_SIDE[0] // 2:
                raise RuntimeError(
                    f"page {page_index}: no place for mark {len(slots) + 1} of "
                    f"{spec.marks_per_page}; use fewer marks or a larger page"
                )
            side = max(_MARK_SIDE[0] // 2, int(side * 0.9))
        slots.append((corner[0], corner[1], side))
        placed.append((corner[0], corner[1], side, side))
    darkness = tuple(float(d) for d in rng.uniform(0.55, 0.9, len(slots)))
    distractors = tuple(
        int(i) for i in rng.integers(_DISTRACTOR_ID_LOW, _DISTRACTOR_ID_HIGH, len(slots))
    )
    hidden_order = tuple(int(i) for i in rng.permutation(len(slots)))
    return _MarkLayout(tuple(slots), darkness, distractors, hidden_order, angle)


def _page_marks(spec, page_index):
    """[(identity_id, query_index or None, (x, y, side), darkness, ink [side, side])] for every
    mark of the page, in slot order."""
    layout = _mark_layout(spec, page_index)
    takers = {}  # slot -> (query, drawing k)
    for order, (query, k) in enumerate(_plan(spec)[1].get(page_index, ())):
        takers[layout.hidden_order[order]] = (query, k)
    marks = []
    for slot, (x, y, side) in enumerate(layout.slots):
        if slot in takers:
            query, k = takers[slot]
            identity_id = query_identity(spec, query)
            rng = np.random.default_rng([spec.seed, query, k, _HIDDEN_SALT])
        else:
            query, identity_id = None, layout.distractors[slot]
            rng = np.random.default_rng([spec.seed, page_index, slot, _SLOT_SALT])
        ink = _mark_ink(draw_instance(make_identity(identity_id), rng, size=side))
        marks.append((identity_id, query, (x, y, side), layout.darkness[slot], ink))
    return marks


def _mark_ink(drawing):
    """A merchant-mark drawing without the faint paper grain draw_instance adds: pen coverage in
    [0, 1]."""
    return np.clip((drawing - _GRAIN_CUTOFF) / (1.0 - _GRAIN_CUTOFF), 0.0, 1.0)


def _rotation(spec, angle):
    """(matrix R, centre c): a page point p (x, y; pixel (i, j) spans [j, j+1) x [i, i+1)) moves
    to c + R (p - c) when the sheet turns by `angle` degrees."""
    a = math.radians(angle)
    matrix = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return matrix, np.array([spec.width / 2.0, spec.height / 2.0])


def _turn(ink, x, y, rotation):
    """A drawing `ink` [h, w] whose top-left corner is at (x, y) on the flat sheet, turned with
    the sheet by `rotation` (R, c): the flat-sheet point q goes to c + R (q - c). Returns
    (turned ink, left, top): a window of the page around the drawing, resampled bilinearly.
    The same as turning the whole sheet, but only the drawing's pixels are computed."""
    from PIL import Image

    matrix, centre = rotation
    h, w = ink.shape
    corners = np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], float)
    moved = (corners - centre) @ matrix.T + centre
    left, top = (int(v) - 1 for v in np.floor(moved.min(axis=0)))
    right, bottom = (int(v) + 1 for v in np.ceil(moved.max(axis=0)))
    # Output pixel (u, v) of the window covers page point (left + u, top + v) (PIL samples at
    # its centre, + 0.5); that point comes from the drawing's point R^T (p - c) + c - (x, y).
    inverse = matrix.T
    offset = inverse @ (np.array([left, top], float) - centre) + centre - [x, y]
    turned = Image.fromarray(np.ascontiguousarray(ink, np.float32), mode="F").transform(
        (right - left, bottom - top),
        Image.Transform.AFFINE,
        (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1]),
        resample=Image.Resampling.BILINEAR,
    )
    return np.asarray(turned, np.float32), left, top


def _ink_box(spec, turned, left, top):
    """The box (x, y, w, h), on the page, of a turned drawing's ink: its pixels with at least
    _INK_THRESHOLD pen coverage."""
    rows, columns = np.nonzero(turned >= _INK_THRESHOLD)
    if len(rows) == 0:  # not expected: a drawing always has strokes
        rows, columns = np.nonzero(turned > 0)
    x0, y0 = max(0, left + int(columns.min())), max(0, top + int(rows.min()))
    x1 = min(spec.width - 1, left + int(columns.max()))
    y1 = min(spec.height - 1, top + int(rows.max()))
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def _stamp(canvas, x, y, ink, darkness):
    """canvas = max(canvas, darkness * ink) for a drawing `ink` [h, w] with its top-left corner
    at (x, y), clipped to the canvas."""
    if x < 0:
        ink, x = ink[:, -x:], 0
    if y < 0:
        ink, y = ink[-y:], 0
    h = min(ink.shape[0], canvas.shape[0] - y)
    w = min(ink.shape[1], canvas.shape[1] - x)
    if h <= 0 or w <= 0:
        return
    region = canvas[y : y + h, x : x + w]
    np.maximum(region, darkness * ink[:h, :w], out=region)


# --------------------------------------------------------------------------------------------
# Omniglot handwriting.
# --------------------------------------------------------------------------------------------


def _omniglot_zip(omniglot_dir):
    """The path of the first of OMNIGLOT_ZIPS in omniglot_dir (default: default_omniglot_dir())."""
    from zoo.data.omniglot import default_omniglot_dir

    root = omniglot_dir or default_omniglot_dir()
    for name in OMNIGLOT_ZIPS:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise ValueError(
        f"No Omniglot zip ({' or '.join(OMNIGLOT_ZIPS)}) found in {root!r}: the pages' "
        f"handwriting is read from it. Pass PageArchiveSpec(omniglot_dir=...) or set "
        f"ZOO_OMNIGLOT_DIR to the folder holding the official Omniglot zips; nothing is "
        f"downloaded."
    )


def _omniglot_archive(path):
    """(open ZipFile, sorted drawing names) of an Omniglot zip, opened once per process: a
    forked worker must not share its parent's file offset."""
    return _open_omniglot(path, os.getpid())


@functools.lru_cache(maxsize=2)
def _open_omniglot(path, process_id):
    archive = zipfile.ZipFile(path)
    names = tuple(sorted(n for n in archive.namelist() if n.endswith(".png")))
    if not names:
        raise ValueError(f"The Omniglot zip {path!r} holds no PNG drawings.")
    return archive, names


def _omniglot_ink(path, index):
    """Drawing `index` of the zip as ink coverage (strokes 1), cropped to its ink."""
    from PIL import Image

    archive, names = _omniglot_archive(path)
    with Image.open(io.BytesIO(archive.read(names[index]))) as image:
        ink = 1.0 - np.asarray(image.convert("L"), np.float32) / 255.0
    rows, columns = np.nonzero(ink > 0.5)
    if len(rows) == 0:
        return np.ones((2, 2), np.float32)
    return ink[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]


def _resize(ink, w, h):
    """Ink coverage resampled to w x h with antialiasing."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(ink, np.float32), mode="F")
    return np.clip(np.asarray(image.resize((w, h), Image.Resampling.LANCZOS), np.float32), 0.0, 1.0)


def _place_characters(spec, page_index, zip_path, taken, margin):
    """[(x, y, ink, darkness)] for the page's Omniglot characters, placed clear of `taken`
    (a list of (boxes, gap) it extends); a character that finds no place is left out."""
    if spec.characters_per_page == 0:
        return []
    rng = np.random.default_rng([spec.seed, page_index, _CHARACTERS_SALT])
    count = len(_omniglot_archive(zip_path)[1])
    characters, boxes = [], []
    taken.append((boxes, _SMALL_GAP))
    for _ in range(spec.characters_per_page):
        source = _omniglot_ink(zip_path, int(rng.integers(count)))
        # Scaled at most a little above the drawing's own size, so the pen stays 2-4 px wide.
        longer = min(
            float(rng.uniform(*_CHARACTER_SIDE)), max(_CHARACTER_SIDE[0], 1.15 * max(source.shape))
        )
        scale = longer / max(source.shape)
        w = max(4, int(round(source.shape[1] * scale)))
        h = max(4, int(round(source.shape[0] * scale)))
        darkness = float(rng.uniform(0.5, 0.85))
        corner = _find_place(rng, w, h, spec.height, spec.width, margin, taken, _SMALL_GAP)
        if corner is None:
            continue
        boxes.append((corner[0], corner[1], w, h))
        characters.append((corner[0], corner[1], _resize(source, w, h), darkness))
    return characters


# --------------------------------------------------------------------------------------------
# Cursive scribble.
# --------------------------------------------------------------------------------------------


def _scribble_path(rng, length):
    """Points (x, y) of one line of cursive-looking scribble starting at (0, 0) on its base
    line (y down), about `length` px long, and the index ranges of its words.

    The pen runs a prolate cycloid: x = x-advance + loopiness * sin(phase), y = -height *
    (1 - cos(phase)) / 2, so that it loops at the top of a letter where loopiness exceeds the
    advance per radian, like an e or an l; letters are 8-14 px wide, some rise (ascenders) or
    drop (descenders), the line wanders off its base line and leans by a slant.
    """
    x_height = rng.uniform(7.0, 11.0)
    pitch = rng.uniform(8.0, 14.0)  # px per letter
    letters = max(3, int(length / pitch))
    per_letter = 24
    phase = np.linspace(0.0, 2 * np.pi * letters, letters * per_letter + 1)
    letter = np.minimum((phase / (2 * np.pi)).astype(int), letters - 1)
    # Per letter: its height (ascender, descender or plain) and its loopiness.
    kind = rng.choice(3, letters, p=[0.7, 0.18, 0.12])
    heights = (
        np.where(kind == 1, rng.uniform(1.8, 2.4, letters), 1.0)
        * x_height
        * rng.uniform(0.85, 1.15, letters)
    )
    loopiness = rng.uniform(0.3, 1.6, letters) * pitch / (2 * np.pi)
    loopiness = np.where(kind == 1, np.maximum(loopiness, 1.3 * pitch / (2 * np.pi)), loopiness)
    x = phase * pitch / (2 * np.pi) + loopiness[letter] * np.sin(phase)
    y = -heights[letter] * (1 - np.cos(phase)) / 2
    # Descenders: the pen dips below the base line where the letter's stroke comes down.
    dip = (kind[letter] == 2) & (np.cos(phase) > 0)
    y = y + np.where(dip, 1.3 * x_height * np.cos(phase) ** 2, 0.0)
    # A wandering base line and a slant.
    wander = np.cumsum(rng.normal(0.0, 0.05, len(phase)))
    y = y + wander - np.linspace(0.0, wander[-1], len(phase)) + rng.uniform(-0.02, 0.02) * x
    x = x - rng.uniform(0.0, 0.4) * y
    # Words: runs of 3-8 letters, the pen lifted between them.
    words, first = [], 0
    while first < letters:
        last = min(letters, first + int(rng.integers(2, 8)))
        words.append((first * per_letter, last * per_letter + 1))
        first = last + 1  # the letter between two words is the gap
    return np.stack([x, y], axis=1), words


def _draw_polylines(polylines, pen, w, h):
    """Antialiased pen strokes (ink coverage [h, w]) along polylines in pixel coordinates,
    drawn at 4x and reduced."""
    from PIL import Image, ImageDraw

    factor = 4
    image = Image.new("L", (w * factor, h * factor), 0)
    draw = ImageDraw.Draw(image)
    width = max(1, int(round(pen * factor)))
    for points in polylines:
        scaled = [(float(px) * factor, float(py) * factor) for px, py in points]
        draw.line(scaled, fill=255, width=width)  # segments are short: no joints needed
        for px, py in (scaled[0], scaled[-1]):  # round pen ends
            draw.ellipse((px - width / 2, py - width / 2, px + width / 2, py + width / 2), fill=255)
    return np.asarray(image.reduce(factor), np.float32) / 255.0


def _place_scribbles(spec, page_index, taken, margin):
    """[(x, y, ink, darkness)] for paragraphs of scribble in the free space: a paragraph is 1-5
    lines 150-400 px long; one that finds no place is tried smaller, then left out."""
    rng = np.random.default_rng([spec.seed, page_index, _SCRIBBLE_SALT])
    area_scale = spec.height * spec.width / (800 * 1000)
    paragraphs = max(1, int(round(rng.uniform(5, 9) * area_scale)))
    scribbles, boxes = [], []
    taken.append((boxes, _SMALL_GAP))
    for _ in range(paragraphs):
        lines = int(rng.integers(1, 6))
        block_width = int(rng.integers(150, 401))
        spacing = int(rng.integers(34, 44))
        pen = float(rng.uniform(1.1, 2.0))
        darkness = float(rng.uniform(0.5, 0.85))
        while lines >= 1:
            height = 46 + (lines - 1) * spacing
            corner = _find_place(
                rng, block_width, height, spec.height, spec.width, margin, taken, _SMALL_GAP
            )
            if corner is not None:
                break
            lines, block_width = lines - 1, max(150, int(block_width * 0.8))
        if corner is None:
            continue
        polylines = []
        for line in range(lines):
            indent = rng.uniform(0, 25) if line == 0 else rng.uniform(0, 6)
            length = (block_width - indent) * (
                rng.uniform(0.4, 0.9) if line == lines - 1 and lines > 1 else rng.uniform(0.85, 1.0)
            )
            points, words = _scribble_path(rng, max(40.0, length - 20))
            points = points + [indent + 4, 30 + line * spacing]  # base line 30 px below the top
            polylines += [points[a:b] for a, b in words if b - a > 1]
        ink = _draw_polylines(polylines, pen, block_width, height)
        # The box holds the block; strokes past its edges (rare loops) are cut off.
        boxes.append((corner[0], corner[1], block_width, height))
        scribbles.append((corner[0], corner[1], ink, darkness))
    return scribbles


# --------------------------------------------------------------------------------------------
# Paper and photograph.
# --------------------------------------------------------------------------------------------


def _smooth_noise(rng, height, width, cell):
    """Zero-mean noise of about unit size that varies over about `cell` pixels: a coarse grid
    of normal values resized bicubically to height x width."""
    from PIL import Image

    cell = max(1, int(round(cell)))
    coarse = rng.standard_normal((height // cell + 3, width // cell + 3)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize(
        (width + 2 * cell, height + 2 * cell), Image.Resampling.BICUBIC
    )
    return np.asarray(image, np.float32)[cell : cell + height, cell : cell + width]


def _uniform_noise(rng, shape, std):
    """Zero-mean uniform noise with standard deviation `std` (cheaper than normal noise, and
    after the blur it looks the same)."""
    noise = rng.random(shape, dtype=np.float32)
    noise -= 0.5
    noise *= np.float32(std * math.sqrt(12.0))
    return noise


def _paper(rng, height, width):
    """The lit paper without ink, float32 [H, W]: a base tone, blotches at two scales and
    uneven lighting (a gradient in a random direction and a vignette), all smooth, so they
    are made at a quarter of the resolution and resized; then fibre grain and foxing spots."""
    from PIL import Image

    scale = 4
    low_h, low_w = -(-height // scale) + 1, -(-width // scale) + 1
    field = np.float32(rng.uniform(0.8, 0.92))
    field = field + rng.uniform(0.015, 0.035) * _smooth_noise(rng, low_h, low_w, 90 / scale)
    field += rng.uniform(0.005, 0.015) * _smooth_noise(rng, low_h, low_w, 20 / scale)
    u = np.linspace(-1.0, 1.0, low_w, dtype=np.float32)[None, :]
    v = np.linspace(-1.0, 1.0, low_h, dtype=np.float32)[:, None]
    direction = rng.uniform(0, 2 * np.pi)
    field *= 1.0 + rng.uniform(0.02, 0.08) * (np.cos(direction) * u + np.sin(direction) * v)
    field *= 1.0 - rng.uniform(0.03, 0.1) * ((u * u + v * v) / 2) ** 1.5
    full = Image.fromarray(field.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BICUBIC, box=(0, 0, width / scale, height / scale)
    )
    paper = np.asarray(full, np.float32).copy()
    paper += _uniform_noise(rng, (height, width), rng.uniform(0.01, 0.02))
    for _ in range(int(rng.poisson(3))):  # foxing: small faint brown spots
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(2.0, 7.0)
        top, left = int(max(0, cy - 3 * radius)), int(max(0, cx - 3 * radius))
        bottom, right = int(min(height, cy + 3 * radius + 1)), int(min(width, cx + 3 * radius + 1))
        rows = np.arange(top, bottom, dtype=np.float32)[:, None] + 0.5
        columns = np.arange(left, right, dtype=np.float32)[None, :] + 0.5
        spot = np.exp(-((rows - cy) ** 2 + (columns - cx) ** 2) / (2 * radius**2))
        paper[top:bottom, left:right] *= 1.0 - rng.uniform(0.03, 0.09) * spot
    return paper


def _photograph(spec, page_index, darkness):
    """The page photograph of the (already turned) ink `darkness` map [H, W]: on paper, lit
    unevenly, blurred and noisy. float32 [H, W] in [0, 1]."""
    from scipy import ndimage

    rng = np.random.default_rng([spec.seed, page_index, _PAPER_SALT])
    page = _paper(rng, spec.height, spec.width)
    page *= 1.0 - darkness
    page = ndimage.gaussian_filter(page, float(rng.uniform(*_BLUR_SIGMA)), truncate=3.0)
    page += _uniform_noise(rng, page.shape, rng.uniform(0.003, 0.008))  # the camera's noise
    return np.clip(page, 0.0, 1.0, out=page)


# --------------------------------------------------------------------------------------------
# Pages and queries.
# --------------------------------------------------------------------------------------------


def render_page(spec: PageArchiveSpec, page_index: int) -> RenderedPage:
    """Page `page_index` of the archive with its ground truth; the same arguments always give
    the same page (and page i does not depend on num_pages while its hidden marks are the same).
    Raises ValueError for an index out of range or a missing Omniglot folder."""
    page_index = _check_page_index(spec, page_index)
    zip_path = _omniglot_zip(spec.omniglot_dir) if spec.characters_per_page else None
    layout = _mark_layout(spec, page_index)
    rotation = _rotation(spec, layout.angle)
    margin = _rotation_margin(spec.height, spec.width)
    darkness = np.zeros((spec.height, spec.width), np.float32)
    marks, hidden = [], []
    for identity_id, query, mark_darkness, turned, left, top in _turned_marks(spec, page_index):
        _stamp(darkness, left, top, turned, mark_darkness)
        box = _ink_box(spec, turned, left, top)
        marks.append((identity_id, box))
        if query is not None:
            hidden.append((query, box))
    # Characters and scribbles are placed on the flat sheet, clear of the marks' squares.
    taken = [([(x, y, side, side) for x, y, side in layout.slots], _GAP)]
    others = _place_characters(spec, page_index, zip_path, taken, margin)
    others += _place_scribbles(spec, page_index, taken, margin)
    for x, y, ink, ink_darkness in others:
        turned, left, top = _turn(ink, x, y, rotation)
        _stamp(darkness, left, top, turned, ink_darkness)
    image = _photograph(spec, page_index, darkness)
    return RenderedPage(image=image, marks=marks, hidden=sorted(hidden))


def _turned_marks(spec, page_index):
    """[(identity_id, query_index or None, darkness, turned ink, left, top)] for the page's
    merchant marks, turned with the sheet: everything the truth boxes depend on."""
    layout = _mark_layout(spec, page_index)
    rotation = _rotation(spec, layout.angle)
    return [
        (identity_id, query, darkness) + _turn(ink, x, y, rotation)
        for identity_id, query, (x, y, _), darkness, ink in _page_marks(spec, page_index)
    ]


def _hidden_boxes(spec, page_index):
    """[(query_index, box)] of the page as render_page gives them, without the photograph."""
    return sorted(
        (query, _ink_box(spec, turned, left, top))
        for _, query, _, turned, left, top in _turned_marks(spec, page_index)
        if query is not None
    )


def render_query(spec: PageArchiveSpec, query_index: int) -> np.ndarray:
    """The query image of query `query_index`: float32 [QUERY_SIZE, QUERY_SIZE] in [0, 1], yet
    another drawing of its identity, dark on its own bit of paper with a little margin, slightly
    blurred and noisy, like a crop a person made of a page photograph."""
    from scipy import ndimage

    query_index = _check_query_index(spec, query_index)
    rng = np.random.default_rng([spec.seed, query_index, _QUERY_SALT])
    side = int(QUERY_SIZE * rng.uniform(0.8, 0.95))
    ink = _mark_ink(draw_instance(make_identity(query_identity(spec, query_index)), rng, size=side))
    darkness = np.zeros((QUERY_SIZE, QUERY_SIZE), np.float32)
    x, y = (int(v) for v in rng.integers(0, QUERY_SIZE - side + 1, 2))
    _stamp(darkness, x, y, ink, float(rng.uniform(0.55, 0.9)))
    paper = rng.uniform(0.8, 0.92) + rng.uniform(0.012, 0.022) * rng.standard_normal(darkness.shape)
    image = ndimage.gaussian_filter(
        paper * (1.0 - darkness), float(rng.uniform(*_BLUR_SIGMA)), truncate=3.0
    )
    image += rng.uniform(0.004, 0.01) * rng.standard_normal(darkness.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Writing an archive.
# --------------------------------------------------------------------------------------------


def _page_name(spec, page_index):
    return f"pages/page-{page_index:0{max(6, len(str(spec.num_pages - 1)))}d}.jpg"


def _query_name(spec, query_index):
    return f"queries/query-{query_index:0{max(3, len(str(spec.num_queries - 1)))}d}.png"


def _write_image(path, image, format, **options):
    from PIL import Image

    pixels = Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
    with atomic_file(path) as stream:
        pixels.save(stream, format=format, **options)


def _write_page(spec, out_dir, page_index):
    """Render page `page_index` and write it as a JPEG (quality 90); returns the page index."""
    page = render_page(spec, page_index)
    _write_image(
        os.path.join(out_dir, _page_name(spec, page_index)), page.image, "JPEG", quality=90
    )
    return page_index


def _check_existing(out_dir, identity):
    """Refuse a folder that holds another archive (per its spec.json or truth.json), or pages
    of an unknown one."""
    for name in ("spec.json", "truth.json"):
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            with open(path) as stream:
                recorded = json.load(stream)
            if (
                recorded.get("spec") != identity["spec"]
                or recorded.get("omniglot") != identity["omniglot"]
            ):
                raise ValueError(
                    f"{out_dir!r} holds another page archive ({name}: "
                    f"{recorded.get('spec')}, Omniglot {recorded.get('omniglot')!r}); this "
                    f"spec is {identity['spec']}, Omniglot {identity['omniglot']!r}. Use "
                    f"another folder or delete it."
                )
            return
    pages = os.path.join(out_dir, "pages")
    if os.path.isdir(pages) and any(n.endswith(".jpg") for n in os.listdir(pages)):
        raise ValueError(
            f"{out_dir!r} holds pages but no spec.json or truth.json saying what archive "
            f"they belong to; use an empty folder."
        )


def _pool_context():
    """fork where it is safe and available (fast, and needs no `if __name__ == "__main__":`
    guard in the calling script); spawn once TensorFlow is loaded, as its threads do not
    survive a fork."""
    import multiprocessing
    import sys

    if "tensorflow" not in sys.modules and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def write_page_archive(
    spec: PageArchiveSpec, out_dir: str, progress: bool = True, workers: int | None = None
) -> dict:
    """Write the archive to `out_dir` and return its truth (the content of truth.json):

        out_dir/spec.json                  the spec, written first
        out_dir/pages/page-000000.jpg ...  grayscale JPEG, quality 90
        out_dir/queries/query-000.png ...  grayscale PNG, QUERY_SIZE square
        out_dir/truth.json                 {"spec", "omniglot", "pages": [paths], "queries":
                                           [{"path", "identity", "hidden": [{"page", "box"}]}]}

    Paths in truth.json are relative to out_dir; boxes are [x, y, w, h]. Files already there
    are kept (a rerun resumes a killed one) and truth.json is rewritten last. `workers`
    processes render pages (default min(2, cpu count); 0 or 1 renders in this process); they
    are forked, or spawned once TensorFlow is loaded (then the calling script needs the usual
    `if __name__ == "__main__":` guard).
    Raises ValueError for a folder holding another archive or a missing Omniglot folder.
    """
    if not isinstance(spec, PageArchiveSpec):
        raise ValueError(f"spec must be a PageArchiveSpec, got {type(spec).__name__}")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    workers = _check_int("workers", workers, 0)
    from tqdm.auto import tqdm

    # Resolve Omniglot once, here, so that a missing folder fails before anything is written
    # and every worker reads the same zip.
    zip_path = _omniglot_zip(spec.omniglot_dir) if spec.characters_per_page else None
    if zip_path is not None:
        spec = dataclasses.replace(spec, omniglot_dir=os.path.dirname(os.path.abspath(zip_path)))
        _omniglot_archive(zip_path)
    identity = {
        "format": _FORMAT,
        "spec": spec.identity(),
        "omniglot": os.path.basename(zip_path) if zip_path else None,
    }
    os.makedirs(out_dir, exist_ok=True)
    _check_existing(out_dir, identity)
    write_json(os.path.join(out_dir, "spec.json"), identity, indent=1)
    os.makedirs(os.path.join(out_dir, "pages"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "queries"), exist_ok=True)

    for query in range(spec.num_queries):
        path = os.path.join(out_dir, _query_name(spec, query))
        if not os.path.isfile(path):
            _write_image(path, render_query(spec, query), "PNG")

    missing = [
        i
        for i in range(spec.num_pages)
        if not os.path.isfile(os.path.join(out_dir, _page_name(spec, i)))
    ]
    with tqdm(
        total=spec.num_pages,
        initial=spec.num_pages - len(missing),
        desc="pages",
        unit="page",
        disable=not progress,
    ) as bar:
        if workers <= 1 or len(missing) <= 1:
            for page_index in missing:
                _write_page(spec, out_dir, page_index)
                bar.update(1)
        else:
            import concurrent.futures

            with concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=_pool_context()
            ) as pool:
                chunk = max(1, min(16, len(missing) // (4 * workers)))
                for _ in pool.map(
                    _write_page,
                    [spec] * len(missing),
                    [out_dir] * len(missing),
                    missing,
                    chunksize=chunk,
                ):
                    bar.update(1)

    # The truth: hidden boxes are recomputed from the marks alone, so pages kept from an
    # earlier run need not be rendered again.
    hidden = {q: [] for q in range(spec.num_queries)}
    for page_index in sorted(_plan(spec)[1]):
        for query, box in _hidden_boxes(spec, page_index):
            hidden[query].append({"page": page_index, "box": list(box)})
    truth = dict(identity)
    truth["pages"] = [_page_name(spec, i) for i in range(spec.num_pages)]
    truth["queries"] = [
        {"path": _query_name(spec, q), "identity": query_identity(spec, q), "hidden": hidden[q]}
        for q in range(spec.num_queries)
    ]
    write_json(os.path.join(out_dir, "truth.json"), truth, indent=1)
    return truth

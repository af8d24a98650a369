"""Candidate regions of a page photograph, found from its ink: where a mark may be.

A sliding grid of boxes (`zoo.apps.locating`'s exhaustive search) encodes thousands of crops a page,
most of them blank paper or halves of marks. Marks, characters and words are ink, and ink is
connected: the connected components of the page's binarised ink, and their merges at a few
distances, are the few hundred boxes worth encoding. `propose_regions(page)` finds them:

1. The page is read as grayscale and made strokes-bright (light paper inverted, once for the
   page). Uneven lighting and paper blotches are flattened away: the paper level is a median
   filter of a 4x smaller copy (a window far wider than a stroke), subtracted from the page.
2. Ink is what stands above `ink_sigmas` robust standard deviations of the flattened paper
   grain (and above `MIN_INK`, the level below which the zoo's preprocessing sees no ink).
   Components smaller than `min_pixels` are grain, not ink, and are dropped.
3. At each merge distance in `merge_fractions` (fractions of the page's shorter side; 0 = the
   components themselves) the ink is dilated by a disk of that radius and labelled with
   OpenCV's connected components: broken strokes and the separate strokes of one character
   join at small distances, a mark and its neighbouring initials at larger ones. A region is
   the bounding box of the ink of one merged component.
4. Boxes too small (`min_side_fraction`), too large (`max_side_fraction`) or too elongated
   (`max_aspect`, e.g. a line of text) are dropped, duplicates across distances kept once, and
   at most `max_regions` kept (those with the most ink; a page rarely has that many).

Each region also carries what the encoder should see: its crop of the flattened ink with only
the ink of its own component kept (the ink of a neighbour reaching into the box is masked
out), so a mark is encoded as it would be cropped by hand even on a crowded page
(`region_crops`). When a page yields no region at all (blank, or one huge blot of ink),
`zoo.locate` searches its sliding grid instead (`zoo.apps.locating.encode_grid`), which is also the
recall reference in `python -m benchmarks.page_archive_bench`.

Large pages: a page whose longer side exceeds `MAX_WORKING_SIDE` pixels is searched on a copy
downscaled to that side (boxes are reported in the original page's pixels); pages of more than
`zoo.data.images` decoder's pixel limit are refused when decoded.

    from zoo.apps.proposals import propose_regions, region_crops
    regions = propose_regions(page)          # Regions(boxes int [M, 4] (x, y, w, h), ...)
    crops = region_crops(regions)            # [M] float32 crops, strokes bright, masked
"""

import dataclasses

import numpy as np

MIN_INK = 0.05  # as zoo.data.preprocess_tf.MIN_INK: fainter ink is no ink to the encoder
MAX_WORKING_SIDE = 2400  # px: longer pages are searched downscaled to this side
DEFAULT_MERGE_FRACTIONS = (0.0, 0.006, 0.015, 0.03)
DEFAULT_MAX_REGIONS = 300


@dataclasses.dataclass(frozen=True)
class ProposalSettings:
    """How regions are proposed (see the module docstring); stored in a region index."""

    merge_fractions: tuple = DEFAULT_MERGE_FRACTIONS
    min_side_fraction: float = 0.02
    max_side_fraction: float = 0.5
    max_aspect: float = 12.0
    ink_sigmas: float = 5.0
    min_pixels: int = 12
    max_regions: int = DEFAULT_MAX_REGIONS
    pad_fraction: float = 0.08  # of a region's longer side: paper kept around the ink

    def __post_init__(self):
        fractions = tuple(float(f) for f in self.merge_fractions)
        if not fractions or any(not 0 <= f < 0.5 for f in fractions):
            raise ValueError(f"Expected merge_fractions in [0, 0.5), got {self.merge_fractions!r}.")
        object.__setattr__(self, "merge_fractions", fractions)
        if not 0 < self.min_side_fraction < self.max_side_fraction <= 1:
            raise ValueError(f"Expected 0 < min_side_fraction < max_side_fraction <= 1, got "
                             f"{self.min_side_fraction!r}, {self.max_side_fraction!r}.")
        if self.max_aspect < 1 or self.ink_sigmas <= 0 or self.min_pixels < 1:
            raise ValueError("Expected max_aspect >= 1, ink_sigmas > 0 and min_pixels >= 1.")
        if isinstance(self.max_regions, bool) or not isinstance(self.max_regions, int) or \
                self.max_regions < 1:
            raise ValueError(f"Expected max_regions to be a positive integer, got "
                             f"{self.max_regions!r}.")
        if not 0 <= self.pad_fraction < 1:
            raise ValueError(f"Expected pad_fraction in [0, 1), got {self.pad_fraction!r}.")

    def to_json(self):
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def of(cls, value):
        """Settings from None (the defaults), settings, or their JSON dict."""
        if value is None:
            return cls()
        return value if isinstance(value, cls) else cls.from_json(value)

    @classmethod
    def from_json(cls, data):
        fields = {field.name for field in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - fields:
            raise ValueError(f"Expected proposal settings with fields {sorted(fields)}, got "
                             f"{data!r}.")
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in data.items()})


@dataclasses.dataclass(frozen=True)
class Regions:
    """Proposed regions of one page.

    boxes: int64 [M, 4] (x, y, w, h) in page pixels, tight on each region's ink.
    ink: float32 [h, w] the flattened, strokes-bright page the regions were found on (at the
        working scale); labels: per merge level, int32 [h, w] component labels of the dilated
        ink; sources: int64 [M, 2] (level, label) of each region; scale: working / page pixels.
    """

    boxes: np.ndarray
    ink: np.ndarray
    labels: tuple
    sources: np.ndarray
    scale: float
    pad: tuple  # per box, paper kept around it (working pixels)

    def __len__(self):
        return len(self.boxes)


def strokes_bright(gray):
    """float32 [H, W] in [0, 1]: ink bright on dark paper (light paper inverted once, for the
    whole page)."""
    gray = np.asarray(gray, np.float32)
    return 1.0 - gray if float(np.median(gray)) > 0.5 else gray


def _check_page(gray):
    gray = np.asarray(gray)
    if gray.ndim != 2 or min(gray.shape) < 16:
        raise ValueError(f"Expected a grayscale page [H, W] of at least 16 x 16 px, got shape "
                         f"{gray.shape}.")
    if not np.issubdtype(gray.dtype, np.floating):
        raise ValueError(f"Expected a float page in [0, 1], got {gray.dtype}.")
    return gray.astype(np.float32, copy=False)


def flatten_page(gray):
    """(flattened strokes-bright ink float32 [h, w], scale): the paper level (a median filter
    of a 4x smaller copy, about 1/12 of the shorter side wide) subtracted, at the working
    scale (longer side at most MAX_WORKING_SIDE)."""
    import cv2

    bright = strokes_bright(_check_page(gray))
    height, width = bright.shape
    scale = min(1.0, MAX_WORKING_SIDE / max(height, width))
    if scale < 1.0:
        bright = cv2.resize(bright, (max(1, round(width * scale)), max(1, round(height * scale))),
                            interpolation=cv2.INTER_AREA)
    height, width = bright.shape
    small = cv2.resize(bright, (max(1, width // 4), max(1, height // 4)),
                       interpolation=cv2.INTER_AREA)
    window = max(3, (min(small.shape) // 12) | 1)
    window = min(window, 255)  # OpenCV's 8-bit median filter takes any odd size; keep it sane
    paper = cv2.medianBlur(np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8), window)
    paper = cv2.resize(paper.astype(np.float32) / 255.0, (width, height),
                       interpolation=cv2.INTER_LINEAR)
    return np.maximum(bright - paper, 0.0), scale


def ink_threshold(ink, sigmas=5.0):
    """The ink level: `sigmas` robust standard deviations of the flattened paper grain above
    its median, and at least MIN_INK."""
    sample = ink[:: max(1, ink.shape[0] // 400), :: max(1, ink.shape[1] // 400)]
    median = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample - median)))
    return max(MIN_INK, median + sigmas * sigma)


def propose_regions(page, settings=None):
    """The candidate regions of `page` (float32 [H, W] in [0, 1], either polarity): see the
    module docstring. Returns `Regions`; boxes are empty when the page shows no ink."""
    import cv2

    settings = settings or ProposalSettings()
    page = _check_page(page)
    ink, scale = flatten_page(page)
    height, width = ink.shape
    binary = (ink >= ink_threshold(ink, settings.ink_sigmas)).astype(np.uint8)
    # Grain: drop components of fewer than min_pixels pixels.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < settings.min_pixels)
    small = small[small > 0]
    if small.size:
        binary[np.isin(labels, small)] = 0
    shorter = min(height, width)
    min_side = max(4, settings.min_side_fraction * shorter)
    max_side = settings.max_side_fraction * shorter

    boxes, sources, masses, level_labels = [], [], [], []
    seen = set()
    for level, fraction in enumerate(settings.merge_fractions):
        radius = int(round(fraction * shorter))
        if radius > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
            merged = cv2.dilate(binary, kernel)
        else:
            merged = binary
        count, labels, stats, _ = cv2.connectedComponentsWithStats(merged, connectivity=8)
        level_labels.append(labels)
        for label in range(1, count):
            x, y, w, h = (int(v) for v in stats[label, :4])
            # A dilated component's box is its ink's box grown by the radius (clipped by the
            # page's edges): shrink it back.
            x0, y0 = (x + radius if x > 0 else 0), (y + radius if y > 0 else 0)
            x1 = x + w - radius if x + w < width else width
            y1 = y + h - radius if y + h < height else height
            w, h = x1 - x0, y1 - y0
            if w <= 0 or h <= 0 or max(w, h) < min_side or max(w, h) > max_side or \
                    max(w, h) > settings.max_aspect * min(w, h):
                continue
            key = (x0, y0, w, h)
            if key in seen:
                continue
            seen.add(key)
            boxes.append(key)
            sources.append((level, label))
            masses.append(int(stats[label, cv2.CC_STAT_AREA]))
    if len(boxes) > settings.max_regions:
        keep = np.sort(np.argsort(-np.asarray(masses), kind="stable")[: settings.max_regions])
        boxes = [boxes[i] for i in keep]
        sources = [sources[i] for i in keep]
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    pads = tuple(int(round(settings.pad_fraction * max(w, h))) for _, _, w, h in boxes)
    page_boxes = _to_page_pixels(boxes, scale, page.shape)
    return Regions(page_boxes, ink, tuple(level_labels), np.asarray(sources, np.int64).reshape(
        -1, 2), scale, pads)


def _to_page_pixels(boxes, scale, shape):
    if scale == 1.0:
        return boxes
    height, width = shape
    scaled = np.round(boxes.astype(np.float64) / scale).astype(np.int64)
    scaled[:, 2] = np.clip(scaled[:, 2], 1, width - scaled[:, 0])
    scaled[:, 3] = np.clip(scaled[:, 3], 1, height - scaled[:, 1])
    return scaled


def region_crops(regions):
    """One float32 crop per region (strokes bright on black, at the working scale): the box
    with its padding, only the ink of the region's own component kept. Feed them to
    `zoo.apps.index.preprocess.preprocess_numpy`."""
    ink = regions.ink
    height, width = ink.shape
    crops = []
    for box, (level, label), pad in zip(regions.boxes, regions.sources, regions.pad):
        x, y, w, h = (int(round(v * regions.scale)) for v in box) if regions.scale != 1.0 \
            else (int(v) for v in box)
        w, h = max(1, w), max(1, h)
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(width, x + w + pad), min(height, y + h + pad)
        crop = np.where(regions.labels[level][y0:y1, x0:x1] == label, ink[y0:y1, x0:x1], 0.0)
        crops.append(np.ascontiguousarray(crop, np.float32))
    return crops


def box_iou(first, second):
    """Intersection over union of two boxes (x, y, w, h)."""
    ax, ay, aw, ah = (float(v) for v in first[:4])
    bx, by, bw, bh = (float(v) for v in second[:4])
    overlap_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    overlap_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    intersection = overlap_w * overlap_h
    union = aw * ah + bw * bh - intersection
    return intersection / union if union > 0 else 0.0


def non_max_suppression(boxes, scores, top, iou_threshold):
    """Indices of at most `top` boxes (x, y, w, h), best score first, none overlapping a kept
    one by more than `iou_threshold` IoU (OpenCV's NMSBoxes)."""
    import cv2

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if not len(boxes):
        return []
    order = np.argsort(-scores, kind="stable")
    # NMSBoxes keeps scores above its threshold (0 here, its least); it only compares them,
    # so shift them above it.
    shifted = scores[order] - scores.min() + 1.0
    kept = cv2.dnn.NMSBoxes(boxes[order].tolist(), shifted.tolist(), 0.0,
                            float(iou_threshold), top_k=0)
    kept = [int(order[i]) for i in np.asarray(kept).reshape(-1)]
    kept.sort(key=lambda i: (-scores[i], i))
    return kept[:top]

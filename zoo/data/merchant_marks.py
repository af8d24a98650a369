"""Procedural merchant marks: a stand-in corpus with ground truth for sketch retrieval.

The Sketch-GAN paper trains and evaluates on 2,000 hand-cropped Merchant Marks from the Prize
Papers of the UK National Archives (16th-19th century). Those crops are not public. This module
draws merchant-mark-like symbols instead, so that the merchant-mark models can be trained and,
more importantly, *measured* anywhere without a download:

* an **identity** is one composition of parts (which parts, where, at what size), reproducible
  from an integer id: a staff with a sign of four on top, two cross-bars, a W foot and the
  initials "R M", say;
* an **instance** is one drawing of an identity "by another hand": another pen width, a wobbly
  hand, a slightly rotated, squashed or shifted sheet, broken or faded strokes, ink blots and
  paper noise, cropped tightly to the ink like the paper's crops.

That gives retrieval ground truth for free: two images of the same identity are an exact match,
and two identities that share parts (both have a sign of four, both stand on an orb) are
visually similar (`zoo.apps.evaluation.retrieval.shared_parts` counts how similar).

Drawing works on polylines in normalised coordinates (x to the right, y *down*; the staff starts
at y = 0 and runs down two units or so, its parts are a few tenths of a unit wide). An instance densifies the polylines, wobbles and
transforms them, fits their bounding box into the square and rasterises every short segment with
a distance field, intensity = clip(width / 2 + 0.5 - distance, 0, 1), only in a small window
around each segment. The default 2,000-image corpus takes about 2 s on one core.

Typical use::

    corpus = make_corpus()                      # 400 identities x 5 instances, 64 x 64
    corpus.images.shape                         # (2000, 64, 64, 1), float32 in [0, 1]
    corpus.identities[:6]                       # [0 0 0 0 0 1]
    batches = stream(batch_size=64, seed=1)     # endless fresh instances for training
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterator

import numpy as np

__all__ = [
    "PARTS",
    "LETTERS",
    "Identity",
    "Corpus",
    "make_identity",
    "draw_instance",
    "make_corpus",
    "stream",
]

# --------------------------------------------------------------------------------------------
# The stroke font for the owner's initials.
# A letter lives in a box of height 1 (y down, 0 = cap line, 1 = base line); its width is the
# largest x of its points. Arcs are ellipse pieces, angles in radians measured in the y-down
# frame (0 = right, pi / 2 = down, -pi / 2 = up).
# --------------------------------------------------------------------------------------------


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> list:
    """Points of an elliptic arc from angle `start` to angle `end`, about 12 degrees apart."""
    count = max(3, int(math.ceil(abs(end - start) / (math.pi / 15))) + 1)
    angles = np.linspace(start, end, count)
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


_HALF_PI = math.pi / 2

_STROKE_FONT: dict[str, tuple] = {
    "A": ([(0, 1), (0.35, 0), (0.7, 1)], [(0.13, 0.62), (0.57, 0.62)]),
    "B": (
        [(0, 0), (0, 1)],
        [(0, 0), (0.33, 0)] + _arc(0.33, 0.24, 0.24, 0.24, -_HALF_PI, _HALF_PI) + [(0, 0.48)],
        [(0, 0.48), (0.37, 0.48)] + _arc(0.37, 0.74, 0.26, 0.26, -_HALF_PI, _HALF_PI) + [(0, 1)],
    ),
    "C": (_arc(0.42, 0.5, 0.42, 0.5, -0.75, -2 * math.pi + 0.75),),
    "D": ([(0, 0), (0, 1)], [(0, 0), (0.22, 0)] + _arc(0.22, 0.5, 0.42, 0.5, -_HALF_PI, _HALF_PI) + [(0, 1)]),
    "E": ([(0.6, 0), (0, 0), (0, 1), (0.6, 1)], [(0, 0.5), (0.45, 0.5)]),
    "F": ([(0.6, 0), (0, 0), (0, 1)], [(0, 0.5), (0.45, 0.5)]),
    "G": (_arc(0.42, 0.5, 0.42, 0.5, -0.75, -2 * math.pi + 0.35) + [(0.8, 0.55), (0.48, 0.55)],),
    "H": ([(0, 0), (0, 1)], [(0.62, 0), (0.62, 1)], [(0, 0.5), (0.62, 0.5)]),
    "I": ([(0.18, 0), (0.18, 1)], [(0, 0), (0.36, 0)], [(0, 1), (0.36, 1)]),
    "J": ([(0.3, 0), (0.75, 0)], [(0.55, 0), (0.55, 0.72)] + _arc(0.3, 0.72, 0.25, 0.28, 0, math.pi)),
    "K": ([(0, 0), (0, 1)], [(0.6, 0), (0, 0.58)], [(0.2, 0.42), (0.62, 1)]),
    "L": ([(0, 0), (0, 1), (0.55, 1)],),
    "M": ([(0, 1), (0, 0), (0.4, 0.62), (0.8, 0), (0.8, 1)],),
    "N": ([(0, 1), (0, 0), (0.62, 1), (0.62, 0)],),
    "O": (_arc(0.4, 0.5, 0.4, 0.5, 0, 2 * math.pi),),
    "P": ([(0, 1), (0, 0), (0.3, 0)] + _arc(0.3, 0.27, 0.27, 0.27, -_HALF_PI, _HALF_PI) + [(0, 0.54)],),
    "R": (
        [(0, 1), (0, 0), (0.3, 0)] + _arc(0.3, 0.27, 0.27, 0.27, -_HALF_PI, _HALF_PI) + [(0, 0.54)],
        [(0.24, 0.54), (0.62, 1)],
    ),
    "S": (
        _arc(0.3, 0.25, 0.3, 0.25, -0.35, -3 * _HALF_PI) + _arc(0.3, 0.75, 0.3, 0.25, -_HALF_PI, math.pi + 0.35),
    ),
    "T": ([(0, 0), (0.72, 0)], [(0.36, 0), (0.36, 1)]),
    "V": ([(0, 0), (0.35, 1), (0.7, 0)],),
    "W": ([(0, 0), (0.2, 1), (0.45, 0.3), (0.7, 1), (0.9, 0)],),
    "Y": ([(0, 0), (0.35, 0.5), (0.7, 0)], [(0.35, 0.5), (0.35, 1)]),
}

LETTERS: tuple[str, ...] = tuple(sorted(_STROKE_FONT))
"""The capital letters the stroke font can draw as initials."""

# --------------------------------------------------------------------------------------------
# The part vocabulary.
# --------------------------------------------------------------------------------------------

_STRUCTURAL_PARTS: tuple[str, ...] = (
    "staff",
    "double_staff",
    "cross_bar",
    "double_cross",
    "triple_cross",
    "saltire",
    "sign_of_four",
    "mirrored_four",
    "inverted_v_foot",
    "w_foot",
    "forked_foot",
    "hooked_foot",
    "base_bar",
    "orb",
    "circle",
    "heart",
    "triangle",
    "shield",
    "pennant",
    "hook",
    "chevron",
    "initials",
)

PARTS: tuple[str, ...] = _STRUCTURAL_PARTS + tuple(f"letter_{letter}" for letter in LETTERS)
"""Every part name an identity can use, in a stable order: the structural parts of the
paper's Fig. 2, then one `letter_X` per initial the stroke font draws (an identity with
initials lists "initials" and one `letter_X` per distinct letter)."""

_CORPUS_ID_STRIDE = 1_000_003  # identity id of corpus image group i under seed s: s * stride + i
_FRESH_ID_LOW = 2**40  # ids of the stream's fresh identities lie far above any corpus id
_FRESH_ID_HIGH = 2**62
_IDENTITY_SALT = 0x4D4D  # "MM": keeps identity rngs apart from instance rngs of the same id
_INSTANCE_SALT = 0x1257
_STREAM_SALT = 0x57EA
_DENSIFY_STEP = 0.05  # normalised units between points before wobbling (about 1 px at 64)


# --------------------------------------------------------------------------------------------
# Public data types.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Identity:
    """One merchant mark: a composition of parts, reproducible from `id` with `make_identity`.

    `strokes` holds the pen strokes as polylines of (x, y) points in normalised coordinates
    (y down); `stroke_parts[k]` names the part stroke k belongs to.
    """

    id: int
    parts: tuple[str, ...]
    strokes: tuple[tuple[tuple[float, float], ...], ...] = dataclasses.field(repr=False)
    stroke_parts: tuple[str, ...] = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Corpus:
    """Images with their ground truth, ordered identity-major (all instances of one identity
    are consecutive)."""

    images: np.ndarray  # float32 [N, size, size, 1] in [0, 1], ink = 1
    identities: np.ndarray  # int64 [N], identity id of each image
    parts: tuple[tuple[str, ...], ...]  # per image, the part names of its identity

    def __len__(self) -> int:
        return int(self.images.shape[0])


# --------------------------------------------------------------------------------------------
# Composing an identity: one small helper per part. Each adds polylines to a sketch; helpers
# for parts on the staff return the lowest y they use, so the next part can go below.
# --------------------------------------------------------------------------------------------


class _Sketch:
    """Collects the strokes of a mark under construction, each tagged with its part name."""

    def __init__(self) -> None:
        self.strokes: list[list[tuple[float, float]]] = []
        self.stroke_parts: list[str] = []
        self.parts: set[str] = set()

    def add(self, part: str, *polylines) -> None:
        self.parts.add(part)
        for polyline in polylines:
            self.strokes.append([(float(x), float(y)) for x, y in polyline])
            self.stroke_parts.append(part)

    def shift_strokes(self, first: int, dy: float) -> None:
        """Move strokes[first:] down by dy."""
        for k in range(first, len(self.strokes)):
            self.strokes[k] = [(x, y + dy) for x, y in self.strokes[k]]


def _side(rng: np.random.Generator) -> float:
    """-1 for left, +1 for right."""
    return -1.0 if rng.random() < 0.5 else 1.0


def _add_staff(sketch: _Sketch, top: float, bottom: float) -> None:
    sketch.add("staff", [(0.0, top), (0.0, bottom)])


def _add_second_staff(sketch: _Sketch, rng: np.random.Generator, top: float, bottom: float) -> None:
    """A parallel staff beside the main one over its middle: the staff 'doubled'."""
    gap = rng.uniform(0.1, 0.17) * _side(rng)
    sketch.add("double_staff", [(gap, top), (gap, bottom)])


def _add_cross_bars(sketch: _Sketch, rng: np.random.Generator, y: float, count: int) -> float:
    """One, two or three horizontal bars through the staff, the first at y."""
    part = {1: "cross_bar", 2: "double_cross", 3: "triple_cross"}[count]
    half_width = rng.uniform(0.28, 0.55)
    spacing = rng.uniform(0.16, 0.24)
    narrowing = _pick(rng, (0.75, 1.0, 1.25), (1, 2, 1))  # patriarchal crosses: upper bars shorter
    offset = rng.uniform(-0.06, 0.06)
    for k in range(count):
        w = half_width * narrowing ** (k - count + 1)
        bar_y = y + k * spacing
        sketch.add(part, [(-w + offset, bar_y), (w + offset, bar_y)])
    return y + (count - 1) * spacing


def _add_saltire(sketch: _Sketch, rng: np.random.Generator, y: float) -> float:
    """An X through the staff, its top at y."""
    half = rng.uniform(0.2, 0.34)
    rise = half * rng.uniform(0.7, 1.1)
    centre = y + rise
    sketch.add("saltire", [(-half, centre - rise), (half, centre + rise)],
               [(half, centre - rise), (-half, centre + rise)])
    return centre + rise


def _add_sign_of_four(sketch: _Sketch, rng: np.random.Generator, top: float, mirrored: bool) -> float:
    """The staff's top as the upright of a 4: a diagonal from the top down to one side and a
    bar back across the staff."""
    side = 1.0 if mirrored else -1.0
    drop = rng.uniform(0.32, 0.5)
    reach = rng.uniform(0.32, 0.5)
    overshoot = rng.uniform(0.08, 0.28)
    bar_y = top + drop
    sketch.add("mirrored_four" if mirrored else "sign_of_four",
               [(0.0, top), (side * reach, bar_y), (-side * overshoot, bar_y)])
    return bar_y


def _add_pennant(sketch: _Sketch, rng: np.random.Generator, y: float) -> float:
    """A flag off the staff, triangular or square, to one side, hanging from y."""
    side = _side(rng)
    length = rng.uniform(0.3, 0.5)
    height = rng.uniform(0.2, 0.3)
    if rng.random() < 0.6:
        flag = [(0.0, y), (side * length, y + height / 2), (0.0, y + height)]
    else:
        flag = [(0.0, y), (side * length, y), (side * length, y + height), (0.0, y + height)]
    sketch.add("pennant", flag)
    return y + height


def _add_hook(sketch: _Sketch, rng: np.random.Generator, y: float) -> float:
    """A hook off the staff: an arc that leaves the staff at y, curls over to one side and drops
    a tail (at the staff's top, a crook)."""
    side = _side(rng)
    radius = rng.uniform(0.1, 0.16)
    tail = rng.uniform(0.06, 0.16)
    # Centre beside the staff; the arc starts on the staff and runs over the top.
    if side > 0:
        curl = _arc(radius, y, radius, radius, math.pi, 2 * math.pi)
    else:
        curl = _arc(-radius, y, radius, radius, 0.0, -math.pi)
    sketch.add("hook", curl + [(2 * radius * side, y + tail)])
    return y + tail


def _add_chevron(sketch: _Sketch, rng: np.random.Generator, y: float, count: int = 1) -> float:
    """One or two rafters (^) across the staff, the first apex on the staff at y."""
    half = rng.uniform(0.25, 0.42)
    drop = rng.uniform(0.14, 0.24)
    spacing = 0.15
    for k in range(count):
        apex = y + k * spacing
        sketch.add("chevron", [(-half, apex + drop), (0.0, apex), (half, apex + drop)])
    return y + (count - 1) * spacing + drop


# The base helpers draw standing on `bottom` and return where the staff stops.


def _add_inverted_v_foot(sketch: _Sketch, rng: np.random.Generator, bottom: float) -> float:
    """Two legs from the staff's end spreading to the ground."""
    spread = rng.uniform(0.28, 0.48)
    height = rng.uniform(0.25, 0.4)
    apex = bottom - height
    sketch.add("inverted_v_foot", [(-spread, bottom), (0.0, apex), (spread, bottom)])
    return apex


def _add_w_foot(sketch: _Sketch, rng: np.random.Generator, bottom: float) -> float:
    spread = rng.uniform(0.32, 0.5)
    height = rng.uniform(0.22, 0.32)
    apex = bottom - height * rng.uniform(0.5, 0.85)
    sketch.add("w_foot", [(-spread, bottom - height), (-spread / 2, bottom), (0.0, apex),
                          (spread / 2, bottom), (spread, bottom - height)])
    return apex


def _add_forked_foot(sketch: _Sketch, rng: np.random.Generator, bottom: float) -> float:
    """The staff parts into two prongs with rounded shoulders that run down to the ground."""
    height = rng.uniform(0.24, 0.36)
    spread = height * rng.uniform(0.45, 0.7)
    shoulder = bottom - height
    fork = [(-spread, bottom)] + _arc(0.0, shoulder + spread, spread, spread, math.pi, 2 * math.pi) \
        + [(spread, bottom)]
    sketch.add("forked_foot", fork)
    return shoulder


def _add_hooked_foot(sketch: _Sketch, rng: np.random.Generator, bottom: float) -> float:
    """The staff's end curls up into a J to one side."""
    side = _side(rng)
    radius = rng.uniform(0.13, 0.22)
    centre_y = bottom - radius
    lift = rng.uniform(0.0, 0.6)  # how far past horizontal the curl comes back up
    if side > 0:
        curl = _arc(radius, centre_y, radius, radius, math.pi, -lift)
    else:
        curl = _arc(-radius, centre_y, radius, radius, 0.0, math.pi + lift)
    sketch.add("hooked_foot", curl)
    return centre_y


def _add_base_bar(sketch: _Sketch, rng: np.random.Generator, bottom: float) -> float:
    half = rng.uniform(0.2, 0.38)
    sketch.add("base_bar", [(-half, bottom), (half, bottom)])
    return bottom


def _add_orb(sketch: _Sketch, rng: np.random.Generator, bottom: float, banded: bool) -> float:
    """A circle under the staff: an orb has a band across its middle and the staff down to its
    centre; a plain circle hangs from the staff or has the staff running through it."""
    radius = rng.uniform(0.2, 0.3)
    centre_y = bottom - radius
    start = rng.uniform(0, 2 * math.pi)
    sketch.add("orb" if banded else "circle", _arc(0.0, centre_y, radius, radius, start, start + 2 * math.pi))
    if banded:
        sketch.add("orb", [(-radius, centre_y), (radius, centre_y)])
        return centre_y
    return bottom if rng.random() < 0.4 else centre_y - radius


# Enclosures also return (where the staff enters, centre y and half width of the room inside).


def _add_heart(sketch: _Sketch, rng: np.random.Generator, bottom: float) -> tuple[float, float, float]:
    """A heart standing on its point; the staff ends in its notch."""
    half_width = rng.uniform(0.3, 0.42)
    height = half_width * rng.uniform(1.5, 1.9)
    t = np.linspace(0, 2 * math.pi, 41)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    # The classic curve spans x in [-16, 16] and y in [-12, 17] (y down: its point at +17).
    x = x / 16 * half_width
    y = (y - 17) / 29 * height + bottom
    sketch.add("heart", list(zip(x, y)))
    return float(y[0]), bottom - 0.55 * height, half_width


def _add_triangle(sketch: _Sketch, rng: np.random.Generator, bottom: float,
                  scale: float = 1.0) -> tuple[float, float, float]:
    """A triangle with its apex on the staff and its base on the ground, around the staff's end."""
    half_width = rng.uniform(0.4, 0.55) * scale
    height = rng.uniform(0.65, 0.9) * scale
    apex = bottom - height
    sketch.add("triangle", [(0.0, apex), (half_width, bottom), (-half_width, bottom), (0.0, apex)])
    return apex, bottom - 0.27 * height, 0.55 * half_width  # the room narrows towards the apex


def _add_shield(sketch: _Sketch, rng: np.random.Generator, bottom: float,
                scale: float = 1.0) -> tuple[float, float, float]:
    """A shield outline around the staff's end: flat top, straight sides, a pointed base."""
    half_width = rng.uniform(0.35, 0.48) * scale
    height = rng.uniform(0.7, 0.9) * scale
    top = bottom - height
    side_end = top + height * rng.uniform(0.35, 0.55)
    curve_height = bottom - side_end
    right = _arc(0.0, side_end, half_width, curve_height, 0.0, _HALF_PI)
    left = _arc(0.0, side_end, half_width, curve_height, _HALF_PI, math.pi)
    outline = [(-half_width, top), (half_width, top)] + right + left[1:] + [(-half_width, top)]
    sketch.add("shield", outline)
    return top, top + 0.42 * height, 0.95 * half_width


# The owner's initials.


def _add_letter(sketch: _Sketch, letter: str, left: float, top: float, height: float) -> None:
    for polyline in _STROKE_FONT[letter]:
        sketch.add("initials", [(left + height * x, top + height * y) for x, y in polyline])
    sketch.parts.add(f"letter_{letter}")


def _letter_width(letter: str) -> float:
    return max(x for polyline in _STROKE_FONT[letter] for x, _ in polyline)


def _add_initials_flanking(sketch: _Sketch, letters: list[str], top: float, height: float,
                           gap: float, side: float) -> None:
    """Initials beside the staff, their tops at `top`: two flank it, one stands on `side`."""
    if len(letters) == 2 or side < 0:
        _add_letter(sketch, letters[0], -gap - height * _letter_width(letters[0]), top, height)
    if len(letters) == 2:
        _add_letter(sketch, letters[1], gap, top, height)
    elif side > 0:
        _add_letter(sketch, letters[0], gap, top, height)


def _add_initial_on_staff(sketch: _Sketch, letter: str, top: float, height: float) -> None:
    """One initial threaded on the staff (the staff runs through the letter's middle)."""
    _add_letter(sketch, letter, -height * _letter_width(letter) / 2, top, height)


def _add_initials_hung_from_bar(sketch: _Sketch, rng: np.random.Generator, letters: list[str],
                                bar_y: float, height: float) -> float:
    """A cross-bar at bar_y with the initials hanging from its ends on short cords; returns the
    letters' lowest y."""
    half = rng.uniform(0.32, 0.45)
    sketch.add("cross_bar", [(-half, bar_y), (half, bar_y)])
    cord = rng.uniform(0.04, 0.1)
    sides = [-1.0, 1.0] if len(letters) == 2 else [_side(rng)]
    for letter, side in zip(letters, sides):
        x_end = side * half
        sketch.add("initials", [(x_end, bar_y), (x_end, bar_y + cord)])
        _add_letter(sketch, letter, x_end - height * _letter_width(letter) / 2, bar_y + cord, height)
    return bar_y + cord + height


def _pick(rng: np.random.Generator, options: tuple, weights: tuple):
    """One of `options`, drawn with the given relative weights (cheaper than rng.choice)."""
    threshold = rng.random() * sum(weights)
    for option, weight in zip(options, weights):
        threshold -= weight
        if threshold < 0:
            return option
    return options[-1]


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    """A name from a {name: relative weight} table."""
    return _pick(rng, tuple(weights), tuple(weights.values()))


def _check_identity_id(identity_id) -> int:
    if isinstance(identity_id, (bool, np.bool_)) or not isinstance(identity_id, (int, np.integer)):
        raise ValueError(f"identity_id must be an integer, got {identity_id!r}")
    if identity_id < 0:
        raise ValueError(f"identity_id must be non-negative, got {identity_id}")
    return int(identity_id)


_TOP_WEIGHTS = {"sign_of_four": 0.38, "mirrored_four": 0.16, "cross": 0.12, "pennant": 0.09,
                "chevron": 0.07, "hook": 0.06, "plain": 0.12}
_MIDDLE_WEIGHTS = {"cross": 0.4, "saltire": 0.18, "chevron": 0.14, "pennant": 0.14, "hook": 0.14}
_BASE_WEIGHTS = {"inverted_v_foot": 0.17, "w_foot": 0.09, "forked_foot": 0.07, "hooked_foot": 0.07,
                 "base_bar": 0.08, "orb": 0.1, "circle": 0.08, "heart": 0.08, "triangle": 0.08,
                 "shield": 0.08, "plain": 0.1}


def _add_top(sketch: _Sketch, rng: np.random.Generator, part: str, staff_top: float) -> float:
    """What crowns the staff at `staff_top`; returns the lowest y it uses."""
    if part in ("sign_of_four", "mirrored_four"):
        return _add_sign_of_four(sketch, rng, staff_top, mirrored=part == "mirrored_four")
    if part == "cross":
        count = _pick(rng, (1, 2), (0.7, 0.3))
        return _add_cross_bars(sketch, rng, staff_top + rng.uniform(0.15, 0.3), count)
    if part == "pennant":
        return _add_pennant(sketch, rng, staff_top)
    if part == "chevron":
        return _add_chevron(sketch, rng, staff_top)
    if part == "hook":
        return _add_hook(sketch, rng, staff_top)
    return staff_top


def _add_middle(sketch: _Sketch, rng: np.random.Generator, part: str, y: float) -> float:
    """A part on the staff starting at y; returns the lowest y it uses."""
    if part == "cross":
        return _add_cross_bars(sketch, rng, y, _pick(rng, (1, 2, 3), (0.5, 0.35, 0.15)))
    if part == "saltire":
        return _add_saltire(sketch, rng, y)
    if part == "chevron":
        return _add_chevron(sketch, rng, y, _pick(rng, (1, 2), (0.7, 0.3)))
    if part == "pennant":
        return _add_pennant(sketch, rng, y)
    return _add_hook(sketch, rng, y)


def _add_base(sketch: _Sketch, rng: np.random.Generator, part: str, staff_end: float,
              enclosure_scale: float = 1.0):
    """What the staff stands on, its top at `staff_end`. Returns (where the staff stops, the
    enclosure as (top y, centre y, half width of the room inside) or None); `enclosure_scale` enlarges a triangle or
    shield that has to hold the initials."""
    first_new_stroke = len(sketch.strokes)
    ground = 0.0  # drawn standing on y = 0, then moved down under the staff
    enclosure = None
    stop = ground
    if part == "inverted_v_foot":
        stop = _add_inverted_v_foot(sketch, rng, ground)
    elif part == "w_foot":
        stop = _add_w_foot(sketch, rng, ground)
    elif part == "forked_foot":
        stop = _add_forked_foot(sketch, rng, ground)
    elif part == "hooked_foot":
        stop = _add_hooked_foot(sketch, rng, ground)
    elif part == "base_bar":
        stop = _add_base_bar(sketch, rng, ground)
    elif part in ("orb", "circle"):
        stop = _add_orb(sketch, rng, ground, banded=part == "orb")
    elif part == "heart":
        enclosure = _add_heart(sketch, rng, ground)
        stop = enclosure[0]
    elif part == "triangle":
        enclosure = _add_triangle(sketch, rng, ground, enclosure_scale)
    elif part == "shield":
        enclosure = _add_shield(sketch, rng, ground, enclosure_scale)
        if rng.random() < 0.5:
            stop = enclosure[0]
    else:
        return staff_end + rng.uniform(0.1, 0.3), None
    base_top = min(y for stroke in sketch.strokes[first_new_stroke:] for _, y in stroke)
    shift = staff_end - min(base_top, stop)
    sketch.shift_strokes(first_new_stroke, shift)
    if enclosure is not None:
        enclosure = (enclosure[0] + shift, enclosure[1] + shift, enclosure[2])
    return stop + shift, enclosure


def make_identity(identity_id: int) -> Identity:
    """The merchant mark with this id: the same id always gives the same composition.

    The mark is built from the top of the staff down: a crown (sign of four, cross, pennant,
    ...), zero to two parts on the staff, perhaps the owner's initials, a bare stretch of staff,
    and a base (a foot, an orb or heart, a triangle or shield that may hold the initials).
    """
    identity_id = _check_identity_id(identity_id)
    rng = np.random.default_rng([identity_id, _IDENTITY_SALT])
    sketch = _Sketch()

    # Choose the composition.
    top_part = _choose(rng, _TOP_WEIGHTS)
    base_part = _choose(rng, _BASE_WEIGHTS)
    middle_parts = [_choose(rng, _MIDDLE_WEIGHTS) for _ in range(_pick(rng, (0, 1, 2), (0.3, 0.5, 0.2)))]
    letters = [LETTERS[int(rng.integers(len(LETTERS)))] for _ in range(1 if rng.random() < 0.4 else 2)]
    letter_height = rng.uniform(0.3, 0.42)
    initials_place = None
    if rng.random() < 0.55:
        if base_part in ("triangle", "shield") and rng.random() < 0.75:
            initials_place = "enclosure"
        else:
            initials_place = _choose(rng, {"flank": 0.5, "on_staff": 0.2 if len(letters) == 1 else 0.0,
                                           "hung": 0.3})
            middle_parts = middle_parts[:1]  # leave room on the staff for the letters

    # Draw it from the top down; `cursor` is the lowest y used so far.
    staff_top = 0.0
    cursor = _add_top(sketch, rng, top_part, staff_top)
    if top_part in ("sign_of_four", "mirrored_four") and rng.random() < 0.2:
        staff_top -= rng.uniform(0.1, 0.2)  # the staff often rises a little above the four
    for part in middle_parts:
        cursor = _add_middle(sketch, rng, part, cursor + rng.uniform(0.12, 0.25))
    if initials_place in ("flank", "on_staff"):
        letters_top = cursor + rng.uniform(0.12, 0.2)
        if initials_place == "flank":
            _add_initials_flanking(sketch, letters, letters_top, letter_height, rng.uniform(0.12, 0.2),
                                   _side(rng))
        else:
            _add_initial_on_staff(sketch, letters[0], letters_top, letter_height)
        cursor = letters_top + letter_height
    elif initials_place == "hung":
        cursor = _add_initials_hung_from_bar(sketch, rng, letters, cursor + rng.uniform(0.15, 0.22),
                                             letter_height * 0.9)
    bare_staff = rng.uniform(0.15, 0.6)
    staff_end, enclosure = _add_base(sketch, rng, base_part, max(cursor + bare_staff, staff_top + 1.0),
                                     enclosure_scale=1.35 if initials_place == "enclosure" else 1.0)

    if initials_place == "enclosure":
        _, centre_y, room = enclosure
        gap = 0.08
        widest = max(_letter_width(letter) for letter in letters)
        height = min(letter_height, (room - gap - 0.08) / widest)
        _add_initials_flanking(sketch, letters, centre_y - height / 2, height, gap, _side(rng))

    # The spine, sometimes doubled.
    _add_staff(sketch, staff_top, staff_end)
    if rng.random() < 0.15 and initials_place in (None, "enclosure"):  # letters on the staff need it single
        second_end = staff_end if enclosure is None else min(staff_end, enclosure[0])
        _add_second_staff(sketch, rng, staff_top + 0.4, max(second_end - 0.15, staff_top + 0.7))

    strokes = tuple(tuple((round(x, 4), round(y, 4)) for x, y in s) for s in sketch.strokes)
    return Identity(id=identity_id, parts=tuple(sorted(sketch.parts)), strokes=strokes,
                    stroke_parts=tuple(sketch.stroke_parts))


# --------------------------------------------------------------------------------------------
# Drawing an instance.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _DenseGeometry:
    points: np.ndarray  # float64 [P, 2], all strokes' points densified, stroke after stroke
    stroke_of_point: np.ndarray  # int [P]
    arc_length: np.ndarray  # float64 [P], distance along its stroke
    segment_start: np.ndarray  # int [S], segment k runs from points[s] to points[s + 1]
    stroke_of_segment: np.ndarray  # int [S]
    first_segment: np.ndarray  # int [strokes], index into segment_start
    segment_count: np.ndarray  # int [strokes]
    stroke_centres: np.ndarray  # float64 [strokes, 2], mean of each stroke's points


@functools.lru_cache(maxsize=2048)
def _dense_geometry(identity: Identity) -> _DenseGeometry:
    """The identity's polylines resampled so no segment is longer than _DENSIFY_STEP."""
    strokes = [stroke if len(stroke) > 1 else stroke * 2 for stroke in identity.strokes]
    stroke_count = len(strokes)
    vertices = np.array([point for stroke in strokes for point in stroke], dtype=np.float64)
    stroke_of_vertex = np.repeat(np.arange(stroke_count), [len(stroke) for stroke in strokes])

    # Cut every edge (a pair of consecutive vertices of one stroke) into equal short pieces.
    edge_start = np.flatnonzero(stroke_of_vertex[:-1] == stroke_of_vertex[1:])
    edges = vertices[edge_start + 1] - vertices[edge_start]
    pieces = np.maximum(1, np.ceil(np.sqrt((edges * edges).sum(axis=1)) / _DENSIFY_STEP)).astype(np.int64)
    edge_of_piece = np.repeat(np.arange(len(edges)), pieces)
    piece_in_edge = np.arange(len(edge_of_piece)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    fractions = piece_in_edge / pieces[edge_of_piece]
    piece_starts = vertices[edge_start[edge_of_piece]] + fractions[:, None] * edges[edge_of_piece]

    # Each stroke's points: the starts of its pieces, then its last vertex.
    last_vertex = np.flatnonzero(np.append(stroke_of_vertex[:-1] != stroke_of_vertex[1:], True))
    stroke_ids = np.concatenate([stroke_of_vertex[edge_start[edge_of_piece]], stroke_of_vertex[last_vertex]])
    order = np.argsort(stroke_ids, kind="stable")
    points = np.vstack([piece_starts, vertices[last_vertex]])[order]
    stroke_of_point = stroke_ids[order]

    same_stroke = stroke_of_point[:-1] == stroke_of_point[1:]
    segment_start = np.flatnonzero(same_stroke)
    stroke_of_segment = stroke_of_point[segment_start]
    segment_count = np.bincount(stroke_of_segment, minlength=stroke_count)
    first_segment = np.cumsum(segment_count) - segment_count

    # Distance along its stroke of every point, for the hand's waver.
    steps = np.zeros(len(points))
    step_vectors = points[segment_start + 1] - points[segment_start]
    steps[segment_start + 1] = np.sqrt((step_vectors * step_vectors).sum(axis=1))
    travelled = np.cumsum(steps)
    first_point = np.flatnonzero(np.concatenate([[True], ~same_stroke]))
    arc_length = travelled - travelled[first_point][stroke_of_point]
    points_per_stroke = np.bincount(stroke_of_point, minlength=stroke_count)[:, None]
    stroke_centres = np.stack([np.bincount(stroke_of_point, weights=points[:, axis], minlength=stroke_count)
                               for axis in (0, 1)], axis=1) / points_per_stroke
    return _DenseGeometry(points, stroke_of_point, arc_length, segment_start, stroke_of_segment,
                          first_segment, segment_count, stroke_centres)


def _wobble(geometry: _DenseGeometry, rng: np.random.Generator, stroke_count: int) -> np.ndarray:
    """Another hand: each stroke is stretched and shifted a little and wavers along its length,
    and the whole sheet is bent by a smooth displacement field."""
    points = geometry.points
    stroke = geometry.stroke_of_point
    shift = rng.normal(0.0, 0.018, (stroke_count, 2))
    stretch = rng.normal(1.0, 0.05, stroke_count)  # bars a little longer or shorter
    waver_amplitude = rng.normal(0.0, 0.014, (stroke_count, 2))
    waver_frequency = rng.uniform(3.0, 8.0, stroke_count)
    waver_phase = rng.uniform(0.0, 2 * math.pi, (stroke_count, 2))
    waver = waver_amplitude[stroke] * np.sin(
        waver_frequency[stroke, None] * geometry.arc_length[:, None] + waver_phase[stroke])
    bend_directions = rng.normal(0.0, 1.0, (2, 2))
    bend_frequencies = rng.normal(0.0, 2.0, (2, 2))
    bend_phases = rng.uniform(0.0, 2 * math.pi, 2)
    bend_amplitude = rng.uniform(0.01, 0.03)
    bend = np.sin(points @ bend_frequencies.T + bend_phases) @ bend_directions * bend_amplitude
    centres = geometry.stroke_centres[stroke]
    stretched = centres + (points - centres) * stretch[stroke, None]
    return stretched + shift[stroke] + waver + bend


def _jitter_sheet(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A few degrees of rotation, a little shear and a changed aspect ratio."""
    angle = math.radians(float(np.clip(rng.normal(0.0, 2.0), -5.0, 5.0)))
    cos, sin = math.cos(angle), math.sin(angle)
    aspect = math.exp(rng.normal(0.0, 0.07))
    shear = rng.normal(0.0, 0.05)
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[aspect, shear], [0.0, 1.0 / aspect]])
    return points @ matrix.T


def _fit_to_square(points: np.ndarray, size: int, pen_width: float, rng: np.random.Generator) -> np.ndarray:
    """Scale and centre the mark (keeping its aspect) so its ink box fills the square up to a
    margin of 3-4 px (at 64 px), then shift it by up to a pixel, as a hand-cropped box would."""
    scale_to_size = size / 64.0
    margin = rng.uniform(3.0, 4.0) * scale_to_size
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float(max((high - low).max(), 1e-6))
    scale = (size - 2 * margin - pen_width) / extent
    centre = (low + high) / 2
    shift = rng.uniform(-0.75, 0.75, 2) * scale_to_size
    return (points - centre) * scale + size / 2 + shift


def _segment_ink(geometry: _DenseGeometry, rng: np.random.Generator, stroke_count: int) -> np.ndarray:
    """Ink per segment: 1, except for a faded run or a break (0) in some strokes. Breaks never
    take a stroke's first or last segment, so the mark keeps its extent."""
    ink = np.ones(len(geometry.segment_start))
    fades = rng.random(stroke_count) < 0.2
    breaks = rng.random(stroke_count) < 0.15
    for stroke in np.flatnonzero(fades | breaks):
        first, count = int(geometry.first_segment[stroke]), int(geometry.segment_count[stroke])
        if fades[stroke] and count >= 4:
            run = int(rng.integers(max(2, count // 5), max(3, count // 2)))
            start = first + int(rng.integers(0, count - run + 1))
            ink[start:start + run] = rng.uniform(0.55, 0.85)
        if breaks[stroke] and count >= 6:
            run = int(rng.integers(1, 3))
            start = first + int(rng.integers(1, count - run))
            ink[start:start + run] = 0.0
    return ink


@dataclasses.dataclass
class _InkPlan:
    """What one instance puts on the page, in pixel coordinates (x, y): pen segments, blots
    (zero-length segments) and the paper's grain."""

    starts: np.ndarray  # [S, 2]
    ends: np.ndarray  # [S, 2]
    widths: np.ndarray  # [S]
    ink: np.ndarray  # [S], 1 = full ink
    blot_centres: np.ndarray  # [B, 2]
    blot_widths: np.ndarray  # [B]
    grain: np.ndarray  # [size, size]


def _plan_instance(identity: Identity, rng: np.random.Generator, size: int) -> _InkPlan:
    """Everything random about one drawing of the identity, ready to rasterise."""
    geometry = _dense_geometry(identity)
    stroke_count = len(identity.strokes)
    pixel = size / 64.0  # the hand's sizes below are given in pixels at 64 x 64
    pen_width = rng.uniform(1.5, 3.0) * pixel

    points = _jitter_sheet(_wobble(geometry, rng, stroke_count), rng)
    points = _fit_to_square(points, size, pen_width, rng)
    widths = pen_width * rng.uniform(0.85, 1.15, stroke_count)[geometry.stroke_of_segment]
    ink = _segment_ink(geometry, rng, stroke_count)
    drawn = ink > 0

    # Ink blots: a drop where the pen rested on a stroke, a disc a little wider than the pen.
    blot_count = min(int(rng.poisson(0.5)), 2)
    blot_centres = points[rng.integers(0, len(points), blot_count)] + rng.normal(0, 0.6 * pixel, (blot_count, 2))
    blot_widths = pen_width + rng.uniform(1.0, 2.5, blot_count) * pixel

    # Light paper noise: faint grain on the background, well below half intensity.
    grain = np.abs(rng.standard_normal((size, size), dtype=np.float32)) * rng.uniform(0.01, 0.04)
    return _InkPlan(starts=points[geometry.segment_start][drawn], ends=points[geometry.segment_start + 1][drawn],
                    widths=widths[drawn], ink=ink[drawn], blot_centres=blot_centres,
                    blot_widths=blot_widths, grain=np.minimum(grain, 0.3))


def _splat_segments(canvas: np.ndarray, padded: int, pad: int, image_of_segment: np.ndarray,
                    starts: np.ndarray, ends: np.ndarray, widths: np.ndarray, ink: np.ndarray) -> None:
    """canvas = max(canvas, ink * clip(width / 2 + 0.5 - distance to the segment, 0, 1)) for
    every segment, evaluated only in the square window of pixels the segment can reach.

    `canvas` is a flat [N * padded * padded] buffer of N images with `pad` pixels of padding on
    every side (so windows need no bounds checks); pixel (row i, column j) of an unpadded image
    has its centre at (x, y) = (j + 0.5, i + 0.5). Arrays are laid out [row, column, segment] so
    that numpy's inner loops run over the many segments rather than the short window, and the
    projection onto each segment is computed once per row and once per column.
    """
    if len(starts) == 0:
        return
    reach = widths / 2 + 0.5  # beyond this distance the pen leaves no ink
    window_low = np.floor(np.minimum(starts, ends) - reach[:, None]).astype(np.int64)
    window_high = np.ceil(np.maximum(starts, ends) + reach[:, None]).astype(np.int64)
    window = int((window_high - window_low).max()) + 1
    window_low = np.clip(window_low, -pad, padded - pad - window)  # stay inside its own image
    steps = np.arange(window)
    to_column = (window_low[:, 0] + 0.5 - starts[:, 0]) + steps[:, None]  # [W, S], x of pixel - x of start
    to_row = (window_low[:, 1] + 0.5 - starts[:, 1]) + steps[:, None]  # [W, S]
    along_x, along_y = ends[:, 0] - starts[:, 0], ends[:, 1] - starts[:, 1]
    inverse_squared_length = 1.0 / np.maximum(along_x * along_x + along_y * along_y, 1e-12)
    # t = where the pixel projects onto the segment, 0 at its start and 1 at its end.
    t = (to_row * (along_y * inverse_squared_length))[:, None, :] + \
        (to_column * (along_x * inverse_squared_length))[None, :, :]
    t = np.minimum(np.maximum(t, 0.0), 1.0)
    off_x = to_column[None, :, :] - t * along_x
    off_y = to_row[:, None, :] - t * along_y
    distance = np.sqrt(off_x * off_x + off_y * off_y)  # np.hypot is several times slower
    value = np.minimum(np.maximum(reach - distance, 0.0), 1.0) * ink
    origin = (image_of_segment * padded + window_low[:, 1] + pad) * padded + window_low[:, 0] + pad
    flat_index = origin + (steps[:, None, None] * padded + steps[None, :, None])
    drawn = value > 0
    np.maximum.at(canvas, flat_index[drawn], value[drawn])


def _render(plans: list[_InkPlan], size: int) -> np.ndarray:
    """Rasterise several planned instances together: float32 [N, size, size]."""
    pad = max(8, size // 8)
    padded = size + 2 * pad
    canvas = np.zeros((len(plans), padded, padded))
    canvas[:, pad:pad + size, pad:pad + size] = np.stack([plan.grain for plan in plans])
    flat_canvas = canvas.reshape(-1)
    _splat_segments(flat_canvas, padded, pad,
                    np.concatenate([np.full(len(plan.starts), k) for k, plan in enumerate(plans)]),
                    np.concatenate([plan.starts for plan in plans]), np.concatenate([plan.ends for plan in plans]),
                    np.concatenate([plan.widths for plan in plans]), np.concatenate([plan.ink for plan in plans]))
    # Blots are rarer and wider: splat them apart so they do not widen every stroke's window.
    blot_widths = np.concatenate([plan.blot_widths for plan in plans])
    blot_centres = np.concatenate([plan.blot_centres for plan in plans])
    _splat_segments(flat_canvas, padded, pad,
                    np.concatenate([np.full(len(plan.blot_widths), k) for k, plan in enumerate(plans)]),
                    blot_centres, blot_centres, blot_widths, np.ones(len(blot_widths)))
    images = canvas[:, pad:pad + size, pad:pad + size]
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _check_size(size) -> int:
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an integer, got {size!r}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    return int(size)


def draw_instance(identity: Identity, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """One drawing of the identity by another hand: float32 [size, size] in [0, 1], ink = 1 on
    a black ground, fitted to its tight bounding box with a 3-4 px margin (at 64 px)."""
    if not isinstance(identity, Identity):
        raise ValueError(f"identity must be an Identity (see make_identity), got {type(identity).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    size = _check_size(size)
    return _render([_plan_instance(identity, rng, size)], size)[0]


# --------------------------------------------------------------------------------------------
# Corpora and streams.
# --------------------------------------------------------------------------------------------

_RENDER_CHUNK = 8  # instances rasterised together: amortises numpy's per-call cost, stays in cache


def _check_count(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def _corpus_identity_ids(seed: int, num_identities: int) -> np.ndarray:
    if num_identities > _CORPUS_ID_STRIDE:
        raise ValueError(f"num_identities must be at most {_CORPUS_ID_STRIDE} so that corpora of "
                         f"different seeds stay disjoint, got {num_identities}")
    return seed * _CORPUS_ID_STRIDE + np.arange(num_identities, dtype=np.int64)


def make_corpus(num_identities: int = 400, instances_per_identity: int = 5, seed: int = 0,
                size: int = 64) -> Corpus:
    """A fixed corpus, by default the paper's size: 2,000 images = 400 identities x 5 instances.

    Identity ids are `seed * 1_000_003 + i`, so different seeds give disjoint identities.
    Images are ordered identity-major; instance k of identity i is drawn with its own generator
    seeded from (i's id, k), so the same arguments always give identical arrays.
    """
    num_identities = _check_count("num_identities", num_identities)
    instances_per_identity = _check_count("instances_per_identity", instances_per_identity)
    seed = _check_seed(seed)
    size = _check_size(size)
    identity_ids = _corpus_identity_ids(seed, num_identities)
    identities = [make_identity(int(identity_id)) for identity_id in identity_ids]
    # Every (identity, instance) pair in corpus order.
    jobs = [(identity, k) for identity in identities for k in range(instances_per_identity)]

    images = np.empty((len(jobs), size, size, 1), dtype=np.float32)
    for first in range(0, len(jobs), _RENDER_CHUNK):
        plans = [_plan_instance(identity, np.random.default_rng([identity.id, k, _INSTANCE_SALT]), size)
                 for identity, k in jobs[first:first + _RENDER_CHUNK]]
        images[first:first + len(plans), :, :, 0] = _render(plans, size)
    return Corpus(images=images,
                  identities=np.repeat(identity_ids, instances_per_identity).astype(np.int64),
                  parts=tuple(identity.parts for identity, _ in jobs))


def stream(batch_size: int, seed: int = 0, num_identities: int | None = None,
           size: int = 64) -> Iterator[np.ndarray]:
    """Endless float32 [batch_size, size, size, 1] batches of fresh instances.

    With `num_identities=None` every image is a new identity (ids drawn far above any corpus
    id); otherwise images are fresh drawings of the first `num_identities` identities of
    `make_corpus(seed=seed)`. Arguments are checked now, not at the first batch. The same
    arguments give the same sequence of batches.
    """
    batch_size = _check_count("batch_size", batch_size)
    seed = _check_seed(seed)
    size = _check_size(size)
    fixed_identities = None
    if num_identities is not None:
        num_identities = _check_count("num_identities", num_identities)
        fixed_identities = [make_identity(int(i)) for i in _corpus_identity_ids(seed, num_identities)]

    def batches() -> Iterator[np.ndarray]:
        rng = np.random.default_rng([seed, _STREAM_SALT])
        while True:
            batch = np.empty((batch_size, size, size, 1), dtype=np.float32)
            for first in range(0, batch_size, _RENDER_CHUNK):
                plans = []
                for _ in range(min(_RENDER_CHUNK, batch_size - first)):
                    if fixed_identities is None:
                        identity = make_identity(int(rng.integers(_FRESH_ID_LOW, _FRESH_ID_HIGH)))
                    else:
                        identity = fixed_identities[int(rng.integers(len(fixed_identities)))]
                    plans.append(_plan_instance(identity, rng, size))
                batch[first:first + len(plans), :, :, 0] = _render(plans, size)
            yield batch

    return batches()

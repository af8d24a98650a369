"""PNG pictures: sample grids and retrieval grids (query + top matches), written atomically.

Retrieval grids show what a reader of the archive would see: drawings the zoo holds as strokes 1
on black 0 (its preprocessing) are drawn as dark ink on light paper (`dark_ink=True`), and an
index's hits are the files themselves, in their own colours (`thumbnail`).
"""

import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from zoo.atomic import atomic_file

MATCH_COLOUR = (40, 200, 80)
MISS_COLOUR = (220, 50, 50)
QUERY_COLOUR = (80, 140, 255)


def _to_rgb_tiles(images, scale, dark_ink=False):
    """uint8 RGB tiles [N, H*scale, W*scale, 3] of float images [N, H, W(, 1)] in [0, 1] (with
    `dark_ink`, strokes 1 on black are drawn as dark ink on white: 1 - x) or of uint8 RGB
    thumbnails [N, H, W, 3] (drawn as they are)."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 3:
        if images.dtype != np.uint8:
            raise ValueError(f"Expected RGB tiles as uint8, got {images.dtype}.")
        tiles = images
    else:
        images = images.astype(np.float32)
        if images.ndim == 4:
            images = images[..., 0]
        if dark_ink:
            images = 1.0 - images
        tiles = np.repeat((np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)[..., None],
                          3, axis=-1)
    if scale != 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    return tiles


def thumbnail(source, size):
    """uint8 RGB [size, size, 3]: an image file (path or bytes), PIL image or array as it is,
    fitted into the square and padded with white paper (transparency shows as paper too)."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (bytes, bytearray)):
        image = Image.open(io.BytesIO(source))
    elif isinstance(source, (str, os.PathLike)):
        image = Image.open(source)
    else:
        array = np.asarray(source)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8:
            array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)
        image = Image.fromarray(array)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = ImageOps.pad(image.convert("RGB"), (size, size), color=(255, 255, 255))
    return np.asarray(image, np.uint8)


def save_png(image, path):
    """A PIL image written to `path` as a PNG, atomically (zoo.atomic)."""
    with atomic_file(path) as stream:
        image.save(stream, format="PNG")
    return path


def save_grid(path, images, rows, scale=1, padding=2):
    """Tile N images [N, H, W, (1)] in [0, 1] row-major into a PNG with gray gutters."""
    tiles = _to_rgb_tiles(images, scale)
    count, height, width, _ = tiles.shape
    columns = -(-count // rows)
    canvas = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, 3),
                     96, np.uint8)
    for index, tile in enumerate(tiles):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        canvas[top : top + height, left : left + width] = tile
    return save_png(Image.fromarray(canvas), path)


def save_retrieval_grid(path, queries, results, is_match=None, scores=None, scale=2, border=3,
                        dark_ink=False):
    """One row per query: the query (blue frame), then its ranked results.

    `queries` [Q, H, W, 1], `results` [Q, K, H, W, 1] floats in [0, 1] (`dark_ink`: strokes 1
    on black, drawn as dark ink on light paper), or uint8 RGB thumbnails [..., H, W, 3];
    `is_match` [Q, K] booleans frame results green (same identity) or red; `scores` [Q, K] are
    printed under each result.
    """
    queries = _to_rgb_tiles(queries, scale, dark_ink)
    results = np.asarray(results)
    count, top_k = results.shape[:2]
    result_tiles = _to_rgb_tiles(results.reshape(-1, *results.shape[2:]), scale, dark_ink)
    height, width = queries.shape[1:3]
    cell_h, cell_w = height + 2 * border + (12 if scores is not None else 0), width + 2 * border
    gap = 8
    canvas = Image.new("RGB", (gap + (top_k + 1) * (cell_w + 4) + gap, count * (cell_h + 4) + 4),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row in range(count):
        y = 4 + row * (cell_h + 4)
        cells = [(queries[row], QUERY_COLOUR, None)]
        for k in range(top_k):
            colour = (160, 160, 160)
            if is_match is not None:
                colour = MATCH_COLOUR if is_match[row][k] else MISS_COLOUR
            score = None if scores is None else f"{float(scores[row][k]):.3f}"
            cells.append((result_tiles[row * top_k + k], colour, score))
        for column, (tile, colour, score) in enumerate(cells):
            x = 4 + column * (cell_w + 4) + (gap if column else 0)
            draw.rectangle([x, y, x + cell_w - 1, y + height + 2 * border - 1], fill=colour)
            canvas.paste(Image.fromarray(tile), (x + border, y + border))
            if score is not None:
                draw.text((x + 2, y + height + 2 * border), score, fill=(0, 0, 0))
    return save_png(canvas, path)

"""PNG pictures: sample grids and retrieval grids (query + top matches), written atomically."""

import os

import numpy as np
from PIL import Image, ImageDraw

MATCH_COLOUR = (40, 200, 80)
MISS_COLOUR = (220, 50, 50)
QUERY_COLOUR = (80, 140, 255)


def _to_rgb_tiles(images, scale):
    images = np.asarray(images, np.float32)
    if images.ndim == 4:
        images = images[..., 0]
    tiles = (np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    if scale != 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.repeat(tiles[..., None], 3, axis=-1)


def _save_atomically(image, path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp.png"
    image.save(temporary, format="PNG")
    os.replace(temporary, path)
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
    return _save_atomically(Image.fromarray(canvas), path)


def save_retrieval_grid(path, queries, results, is_match=None, scores=None, scale=2, border=3):
    """One row per query: the query (blue frame), then its ranked results.

    `queries` [Q, H, W, 1], `results` [Q, K, H, W, 1]; `is_match` [Q, K] booleans frame results
    green (same identity) or red; `scores` [Q, K] are printed under each result.
    """
    queries = _to_rgb_tiles(queries, scale)
    results = np.asarray(results)
    count, top_k = results.shape[:2]
    result_tiles = _to_rgb_tiles(results.reshape(-1, *results.shape[2:]), scale)
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
    return _save_atomically(canvas, path)

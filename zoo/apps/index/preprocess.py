"""The zoo's preprocessing in numpy, for indexing many files quickly.

`preprocess_numpy(gray, size, margin)` computes what `zoo.data.preprocess_tf.preprocess_image_tf`
computes (read that module for the algorithm: invert light paper, crop to the ink, pad to a
square, antialiased bilinear resize), step for step in float32, with the antialiased resize
written as the two small weight matrices of TensorFlow's ScaleAndTranslate op (triangle kernel,
kernel widened by 1 / scale when shrinking, weights normalised per output pixel). The two agree
to about 1e-7 (float32 summation order); tests/test_index.py pins that over images that are
shrunk, enlarged, inverted or not.

Why a second implementation: TensorFlow runs the ~40 small ops of one image with a fixed cost
per op, so on a 64 x 64 scan the TF path prepares about 600 images/s on two cores (tf.data,
parallel map), slower than the encoder itself; this one prepares several thousand per core,
which is what lets `zoo index build` keep the encoder busy. `python -m benchmarks.index_bench
build` prints both rates.
"""

import functools

import numpy as np

from zoo.data.images import DEFAULT_MARGIN, DEFAULT_SIZE, decode_image

# As in zoo.data.preprocess_tf (which imports TensorFlow; this module must not); tests check.
MIN_INK = 0.05
NO_INK_MESSAGE = "Image holds no visible ink (it is blank or has no contrast)."

__all__ = ["preprocess_numpy", "load_image_numpy"]

_ONE = np.float32(1.0)
_HALF = np.float32(0.5)


@functools.lru_cache(maxsize=4096)
def _resize_weights(input_size, output_size):
    """float32 [output_size, input_size]: TensorFlow's antialiased bilinear (triangle kernel)
    ScaleAndTranslate weights for one axis, translation 0 (as tf.image.resize uses it)."""
    scale = np.float32(output_size) / np.float32(input_size)
    inverse_scale = _ONE / scale
    kernel_scale = max(inverse_scale, _ONE)  # widen the kernel when shrinking (antialias)
    samples = (np.arange(output_size, dtype=np.float32) + _HALF) * inverse_scale
    first = np.clip(np.ceil(samples - kernel_scale - _HALF), 0, input_size - 1).astype(np.int64)
    last = np.clip(np.floor(samples + kernel_scale - _HALF), 0, input_size - 1).astype(np.int64)
    sources = np.arange(input_size)
    distance = np.abs((sources[None, :].astype(np.float32) + _HALF - samples[:, None])
                      * (_ONE / kernel_scale))
    weights = np.where(distance < _ONE, _ONE - distance, np.float32(0.0))
    in_span = (sources[None, :] >= first[:, None]) & (sources[None, :] <= last[:, None])
    weights = np.where(in_span, weights, np.float32(0.0)).astype(np.float32)
    total = weights.sum(axis=1, keepdims=True, dtype=np.float32)
    weights *= _ONE / np.where(total == 0, _ONE, total)
    weights.setflags(write=False)
    return weights


def preprocess_numpy(gray, size=DEFAULT_SIZE, margin=DEFAULT_MARGIN):
    """float32 [H, W] grayscale in [0, 1] -> float32 [size, size], strokes 1 on black 0.

    The numpy twin of `preprocess_image_tf`; raises ValueError when the image holds no ink.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"Expected a grayscale image of shape [H, W], got shape {gray.shape}.")
    if size < 8 or not 0 <= margin < size // 2:
        raise ValueError(f"Expected size >= 8 and 0 <= margin < size / 2, got {size}, {margin}.")
    if not np.all(np.isfinite(gray)):
        raise ValueError("Image contains NaN or infinite values.")

    # 1. background = median of the border pixels (numpy.median of the four edges); invert
    #    light paper.
    border = np.sort(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]))
    background = (border[(len(border) - 1) // 2] + border[len(border) // 2]) / np.float32(2.0)
    if background > 0.5:
        gray, background = _ONE - gray, _ONE - background

    # 2.-3. ink relative to the background, scaled to its peak, cropped to the strokes.
    ink = np.maximum(gray - background, np.float32(0.0))
    peak = ink.max()
    if peak < MIN_INK:
        raise ValueError(NO_INK_MESSAGE)
    ink = ink / peak
    strokes = ink > 0.5
    rows = np.flatnonzero(strokes.any(axis=1))
    columns = np.flatnonzero(strokes.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]

    # 4. the longer side to size - 2 * margin (Python's round: half to even, like tf.round).
    height, width = crop.shape
    scale = (size - 2 * margin) / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = _resize_weights(height, new_height) @ crop @ _resize_weights(width, new_width).T

    # 5. centred on a black canvas.
    canvas = np.zeros((size, size), np.float32)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = resized
    return np.clip(canvas, 0.0, 1.0, out=canvas)


def load_image_numpy(source, size=DEFAULT_SIZE, margin=DEFAULT_MARGIN):
    """(float32 [size, size] preprocessed, (height, width) of the decoded image) of a path or
    bytes; ValueError when it cannot be decoded or holds no ink."""
    gray = decode_image(source)
    return preprocess_numpy(gray, size=size, margin=margin), gray.shape

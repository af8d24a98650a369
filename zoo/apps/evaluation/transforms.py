"""Geometric transforms for the invariance protocol (evaluation.md section 1; paper Fig. 5).

All three take a batch of images [N, H, W] or [N, H, W, 1] and return float32 arrays of the
same shape; pixels that come from outside the image are 0 (black background, no wrap-around).

- `rotate(images, degrees)`: about the image centre ((H - 1) / 2, (W - 1) / 2), bilinear.
  Positive degrees turn the picture **counter-clockwise as displayed** (row 0 at the top):
  a stroke to the right of the centre moves up. 0 degrees returns the images unchanged.
- `scale(images, factor)`: resize every image to round(H * factor) x round(W * factor)
  (PIL bilinear, which averages over the footprint when shrinking, so thin strokes fade
  instead of vanishing), then zero-pad back to H x W centred (factor < 1) or centre-crop
  (factor > 1; ink near the border falls off, as in the paper). When the size difference is
  odd, the extra row / column goes to the bottom / right. 1 returns the images unchanged.
- `shift(images, dx, dy)`: exact integer translation, +dx to the right, +dy down.
"""

import numpy as np
from PIL import Image
from scipy import ndimage


def _as_batch(images):
    """float32 [N, H, W] and a function that restores the caller's layout."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4 and images.shape[-1] == 1:
        return images[..., 0], lambda batch: batch[..., None]
    if images.ndim == 3:
        return images, lambda batch: batch
    raise ValueError(f"Expected images of shape [N, H, W] or [N, H, W, 1]; got shape "
                     f"{images.shape}.")


def rotate(images, degrees):
    """Rotate about the image centre by `degrees`, counter-clockwise as displayed for positive
    angles; bilinear interpolation, zero fill."""
    batch, restore = _as_batch(images)
    if not np.isfinite(degrees):
        raise ValueError(f"Expected a finite rotation angle in degrees, got {degrees!r}.")
    if degrees == 0:
        return restore(batch.copy())
    theta = np.deg2rad(float(degrees))
    cos, sin = np.cos(theta), np.sin(theta)
    # Output pixel (r', c') relative to the centre samples the input at R^-1 (r', c'), where the
    # forward map in (row down, column right) coordinates is r' = r cos - c sin,
    # c' = r sin + c cos (counter-clockwise on screen, since screen y = -row).
    inverse = np.array([[1.0, 0.0, 0.0],
                        [0.0, cos, sin],
                        [0.0, -sin, cos]])
    centre = np.array([0.0, (batch.shape[1] - 1) / 2.0, (batch.shape[2] - 1) / 2.0])
    offset = centre - inverse @ centre
    rotated = ndimage.affine_transform(batch, inverse, offset=offset, order=1, mode="constant",
                                       cval=0.0, prefilter=False)
    return restore(rotated.astype(np.float32))


def scale(images, factor):
    """Rescale by `factor` about the centre: resize, then zero-pad (factor < 1) or centre-crop
    (factor > 1) back to the input size."""
    batch, restore = _as_batch(images)
    factor = float(factor)
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"Expected a positive scale factor, got {factor!r}.")
    count, height, width = batch.shape
    new_height, new_width = max(1, round(height * factor)), max(1, round(width * factor))
    if (new_height, new_width) == (height, width):
        return restore(batch.copy())
    scaled = np.zeros_like(batch)
    for index, image in enumerate(batch):
        resized = np.asarray(Image.fromarray(image, mode="F").resize(
            (new_width, new_height), Image.Resampling.BILINEAR), dtype=np.float32)
        scaled[index] = _fit(resized, height, width)
    return restore(scaled)


def _fit(image, height, width):
    """Centre `image` in a zero canvas of height x width, padding or cropping each axis."""
    canvas = np.zeros((height, width), np.float32)
    source, target = [], []
    for have, want in zip(image.shape, (height, width)):
        if have <= want:
            start = (want - have) // 2
            source.append(slice(0, have))
            target.append(slice(start, start + have))
        else:
            start = (have - want) // 2
            source.append(slice(start, start + want))
            target.append(slice(0, want))
    canvas[tuple(target)] = image[tuple(source)]
    return canvas


def _as_integer(value, name):
    if isinstance(value, (bool, np.bool_)) or float(value) != int(value):
        raise ValueError(f"Expected an integer number of pixels for {name}, got {value!r}.")
    return int(value)


def shift(images, dx, dy):
    """Translate by whole pixels: +dx to the right, +dy down; zero fill, no wrap-around."""
    batch, restore = _as_batch(images)
    dx, dy = _as_integer(dx, "dx"), _as_integer(dy, "dy")
    height, width = batch.shape[1:]
    shifted = np.zeros_like(batch)
    if abs(dx) < width and abs(dy) < height:
        shifted[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
            batch[:, max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
    return restore(shifted)

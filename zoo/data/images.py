"""Image preprocessing shared by every corpus: any scan or crop -> 64x64 white-on-black, tight.

The zoo's encoders were trained on marks whose strokes are 1 and background 0, cropped tightly
with a small margin. Real archives come as grayscale or colour scans, dark ink on light paper,
in any size. `preprocess` maps one such image onto the training distribution:

1. grayscale in [0, 1];
2. invert when the background (the median of the border pixels) is light;
3. crop to the ink (pixels above half the ink maximum after removing the background level);
4. pad to a square, centred, leaving `margin` pixels around the mark;
5. resize to `size` x `size` with an antialiasing filter.

The preprocessing runs as TensorFlow ops (zoo/data/preprocess_tf.py), the same ops that the
exported SavedModels run on image bytes, so both give the same result.

`load_image_folder` applies it to every image file below a folder; unreadable files are reported
and skipped, never fatal.
"""

import dataclasses
import functools
import io
import logging
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_SIZE = 64
DEFAULT_MARGIN = 3


def decode_image(source):
    """Read an image (path, bytes or PIL image) as float32 [H, W] grayscale in [0, 1].

    Transparent pixels count as white paper. Raises ValueError naming the source when it
    cannot be decoded.
    """
    name = source if isinstance(source, (str, os.PathLike)) else "<bytes>"
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (bytes, bytearray)):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(paper, rgba)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float32)
            array = array / max(float(array.max()), 1.0)
        else:
            array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"Cannot decode image {name}: {error}") from error
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"Image {name} has no pixels (shape {array.shape}).")
    return array


@functools.lru_cache(maxsize=None)
def _compiled_preprocess(size, margin):
    """The TensorFlow preprocessing as one graph per (size, margin)."""
    import tensorflow as tf

    from zoo.data.preprocess_tf import preprocess_image_tf

    return tf.function(lambda gray: preprocess_image_tf(gray, size=size, margin=margin),
                       input_signature=[tf.TensorSpec([None, None], tf.float32)])


def preprocess(gray, size=DEFAULT_SIZE, margin=DEFAULT_MARGIN):
    """Map a grayscale image [H, W] in [0, 1] to float32 [size, size], strokes 1 on black 0.

    Runs `zoo.data.preprocess_tf.preprocess_image_tf`, the same ops the exported SavedModels
    run on image bytes. Raises ValueError when the image holds no ink (a blank page).
    """
    import tensorflow as tf

    from zoo.data.preprocess_tf import NO_INK_MESSAGE

    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ValueError(f"Expected a grayscale image of shape [H, W], got shape {gray.shape}.")
    if gray.size == 0:
        raise ValueError(f"Expected a grayscale image with pixels, got shape {gray.shape}.")
    if not np.all(np.isfinite(gray)):
        raise ValueError("Image contains NaN or infinite values.")
    if size < 8 or not 0 <= margin < size // 2:
        raise ValueError(f"Expected size >= 8 and 0 <= margin < size / 2, got {size}, {margin}.")
    try:
        return _compiled_preprocess(int(size), int(margin))(tf.constant(gray)).numpy()
    except tf.errors.InvalidArgumentError as error:
        if NO_INK_MESSAGE in error.message:
            raise ValueError(NO_INK_MESSAGE) from None
        raise


def load_image(source, size=DEFAULT_SIZE, margin=DEFAULT_MARGIN):
    """decode_image + preprocess: float32 [size, size, 1]."""
    return preprocess(decode_image(source), size=size, margin=margin)[..., None]


def list_image_files(folder, recursive=True):
    """Sorted image paths under `folder` (by extension, case-insensitive)."""
    if not os.path.isdir(folder):
        raise ValueError(f"Expected a folder of images, but {folder!r} is not a directory.")
    paths = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            paths.extend(os.path.join(root, f) for f in sorted(files))
    else:
        paths = [os.path.join(folder, f) for f in sorted(os.listdir(folder))]
    return [p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p)]


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """Images loaded from a folder: what loaded, from where, and what did not."""

    images: np.ndarray  # float32 [N, size, size, 1]
    paths: tuple  # N paths, in the order of `images`
    errors: tuple  # (path, reason) for every file that could not be used

    def __len__(self):
        return len(self.paths)


def load_image_folder(folder, size=DEFAULT_SIZE, margin=DEFAULT_MARGIN, recursive=True,
                      progress=True):
    """Load and preprocess every image under `folder`.

    Corrupt, unreadable or blank files are skipped, listed in `errors` and logged; a folder
    with no usable image raises ValueError.
    """
    from tqdm.auto import tqdm

    paths = list_image_files(folder, recursive=recursive)
    if not paths:
        raise ValueError(
            f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found under {folder!r}."
        )
    images, loaded, errors = [], [], []
    for path in tqdm(paths, desc="loading images", unit="img", disable=not progress):
        try:
            images.append(load_image(path, size=size, margin=margin))
            loaded.append(path)
        except ValueError as error:
            errors.append((path, str(error)))
            log.warning("skipped %s: %s", path, error)
    if not images:
        raise ValueError(
            f"None of the {len(paths)} image files under {folder!r} could be used; "
            f"first error: {errors[0][1]}"
        )
    return ImageFolder(np.stack(images).astype(np.float32), tuple(loaded), tuple(errors))

"""Checks on uploaded images before any of them reaches the index: size, type, decodability.

Every refusal is an `UploadError` carrying the HTTP status and a message a person can act on.
"""

import io
import warnings

from PIL import Image

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a page photograph as a phone JPEG fits
MAX_PIXELS = 40_000_000  # 40 megapixels; larger images are refused before they are decoded

# Leading bytes of the formats the zoo decodes (zoo.data.images.IMAGE_EXTENSIONS) and the
# name a person knows them by.
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
ACCEPTED = "PNG, JPEG, GIF, BMP, TIFF or WebP"


class UploadError(ValueError):
    """An upload the server refuses: `status` is the HTTP status to answer with."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def sniff_format(data):
    """The image format named by the file's first bytes, or None."""
    for signature, name in SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def describe_size(num_bytes):
    if num_bytes >= 1024 * 1024:
        return f"{num_bytes / (1024 * 1024):.1f} MB"
    if num_bytes >= 1024:
        return f"{num_bytes / 1024:.0f} KB"
    return f"{num_bytes} bytes"


def too_large(num_bytes, max_bytes):
    return UploadError(413, f"The upload is {describe_size(num_bytes)} or more; the largest "
                            f"accepted is {describe_size(max_bytes)}. Crop or downscale the "
                            f"image and try again.")


def decode_upload(data, max_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_PIXELS):
    """Validate uploaded bytes and decode them: -> a loaded PIL image.

    Raises UploadError: 400 empty, 413 too many bytes or pixels, 415 not an image format the
    zoo reads, 400 truncated or corrupt.
    """
    if not data:
        raise UploadError(400, "The upload is empty: send the image file's bytes.")
    if len(data) > max_bytes:
        raise too_large(len(data), max_bytes)
    kind = sniff_format(data)
    if kind is None:
        raise UploadError(415, f"This file is not an image the search reads; expected {ACCEPTED}.")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise UploadError(413, f"The image is {width}×{height} pixels; the largest "
                                   f"accepted is {max_pixels // 1_000_000} megapixels. "
                                   f"Downscale or crop it.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except UploadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = "it is truncated" if "truncated" in str(error) else f"it is corrupt ({error})"
        raise UploadError(400, f"The {kind} file cannot be decoded: {reason}. "
                               f"Export or scan it again.") from None
    return image


def clip_box(box, width, height):
    """`box` = "x,y,w,h" in pixels clipped to a `width` x `height` image -> (x, y, w, h);
    refuses a box that holds no part of the image."""
    try:
        x, y, w, h = (int(round(float(part))) for part in str(box).split(","))
    except (ValueError, OverflowError):
        raise UploadError(400, f"Expected box=x,y,width,height in pixels, got {box!r}.") from None
    left, top = max(0, x), max(0, y)
    right, bottom = min(width, x + w), min(height, y + h)
    if right - left < 2 or bottom - top < 2:
        raise UploadError(400, f"The box {box} holds no part of the {width}×{height} image; "
                               f"draw it around the mark.")
    return left, top, right - left, bottom - top


def crop_box(image, box):
    """Crop a PIL image to `box` = "x,y,w,h" in pixels (clipped to the image)."""
    left, top, w, h = clip_box(box, image.width, image.height)
    return image.crop((left, top, left + w, top + h)), (left, top, w, h)

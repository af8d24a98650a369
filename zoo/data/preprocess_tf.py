"""The zoo's image preprocessing as TensorFlow ops, so that it lives inside exported graphs.

`zoo.data.images.preprocess` (the Python path) calls `preprocess_image_tf`, and the exported
SavedModel's bytes signatures call `decode_and_preprocess_tf`: one implementation, the same
result either way. The algorithm (see zoo/data/images.py):

1. the background level is the median of the border pixels (corners counted twice, as
   numpy.median of the four concatenated edges); when it is above 0.5 the image is inverted;
2. ink = max(gray - background, 0); an image whose ink peak is below 0.05 holds no ink;
3. ink is divided by its peak and cropped to the bounding box of the pixels above 0.5;
4. the longer side is scaled to size - 2 * margin (bilinear, antialiased when shrinking),
   the other side in proportion (rounded half to even, at least 1 pixel);
5. the result is pasted on a black size x size canvas at top = (size - h) // 2,
   left = (size - w) // 2.
"""

import tensorflow as tf

DEFAULT_SIZE = 64
DEFAULT_MARGIN = 3
MIN_INK = 0.05

NO_INK_MESSAGE = "Image holds no visible ink (it is blank or has no contrast)."
UNDECODABLE_MESSAGE = "Cannot decode image bytes: expected a PNG, JPEG, BMP or GIF file."

# Magic numbers of the formats tf.io.decode_image reads.
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a")


def _median(values):
    """numpy.median of a 1-D float tensor (the mean of the two middle values for even sizes)."""
    ordered = tf.sort(values)
    count = tf.size(ordered)
    upper = tf.gather(ordered, count // 2)
    lower = tf.gather(ordered, (count - 1) // 2)
    return (lower + upper) / 2.0


def _bounds(mask):
    """First and last index where a boolean vector is true."""
    indices = tf.cast(tf.where(mask)[:, 0], tf.int32)
    return tf.reduce_min(indices), tf.reduce_max(indices)


def preprocess_image_tf(gray, size=DEFAULT_SIZE, margin=DEFAULT_MARGIN):
    """float32 [H, W] grayscale in [0, 1] -> float32 [size, size], strokes 1 on black 0.

    An image without visible ink fails with InvalidArgumentError ("no visible ink").
    `size` and `margin` are Python integers (they fix the graph).
    """
    size, margin = int(size), int(margin)
    if size < 8 or not 0 <= margin < size // 2:
        raise ValueError(f"Expected size >= 8 and 0 <= margin < size / 2, got {size}, {margin}.")
    gray = tf.convert_to_tensor(gray, tf.float32)
    gray.shape.assert_has_rank(2)

    border = tf.concat([gray[0], gray[-1], gray[:, 0], gray[:, -1]], axis=0)
    background = _median(border)
    light = background > 0.5
    gray = tf.where(light, 1.0 - gray, gray)
    background = tf.where(light, 1.0 - background, background)

    ink = tf.maximum(gray - background, 0.0)
    peak = tf.reduce_max(ink)
    with tf.control_dependencies([
        tf.debugging.Assert(peak >= MIN_INK, [NO_INK_MESSAGE, "ink peak:", peak]),
    ]):
        ink = ink / peak

    strokes = ink > 0.5
    top, bottom = _bounds(tf.reduce_any(strokes, axis=1))
    left, right = _bounds(tf.reduce_any(strokes, axis=0))
    crop = ink[top : bottom + 1, left : right + 1]

    # The same float64 arithmetic (and half-to-even rounding) as Python's round().
    height = tf.cast(bottom - top + 1, tf.float64)
    width = tf.cast(right - left + 1, tf.float64)
    scale = tf.constant(size - 2 * margin, tf.float64) / tf.maximum(height, width)
    new_height = tf.maximum(1, tf.cast(tf.round(height * scale), tf.int32))
    new_width = tf.maximum(1, tf.cast(tf.round(width * scale), tf.int32))
    resized = tf.image.resize(crop[..., None], tf.stack([new_height, new_width]),
                              method="bilinear", antialias=True)[..., 0]

    pad_top = (size - new_height) // 2
    pad_left = (size - new_width) // 2
    canvas = tf.pad(resized, [[pad_top, size - new_height - pad_top],
                              [pad_left, size - new_width - pad_left]])
    canvas = tf.ensure_shape(tf.clip_by_value(canvas, 0.0, 1.0), [size, size])
    return canvas


def decode_image_tf(image_bytes):
    """A scalar string of PNG/JPEG/BMP/GIF bytes -> float32 [H, W] grayscale in [0, 1].

    Any channel count: gray, gray + alpha, RGB, RGBA; transparent pixels count as white paper.
    8- and 16-bit images both map onto [0, 1] (16-bit grayscale PNGs divided by their maximum,
    as zoo.data.images.decode_image does); of an animated GIF the first frame is used.
    Bytes of another format fail with InvalidArgumentError naming the accepted formats.
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    image_bytes.shape.assert_has_rank(0)
    known = tf.reduce_any(tf.stack([
        tf.equal(tf.strings.substr(image_bytes, 0, len(signature)), signature)
        for signature in _SIGNATURES
    ]))
    with tf.control_dependencies([tf.debugging.Assert(known, [UNDECODABLE_MESSAGE])]):
        # JPEG with the accurate integer DCT, as PIL decodes it (decode_image uses a fast one).
        image = tf.cond(
            tf.io.is_jpeg(image_bytes),
            lambda: tf.cast(tf.io.decode_jpeg(image_bytes, dct_method="INTEGER_ACCURATE"),
                            tf.float32) / 255.0,
            lambda: tf.io.decode_image(image_bytes, channels=0, dtype=tf.float32,
                                       expand_animations=False),
        )
    # 16-bit grayscale PNGs are stretched to their maximum, as zoo.data.images.decode_image
    # does (scanners often store 12-bit data in 16 bits).
    header = tf.strings.join([tf.strings.substr(image_bytes, 0, 26), b"\0" * 26])  # >= 26 bytes
    gray_16_bit_png = (tf.equal(tf.strings.substr(header, 0, 8), _SIGNATURES[0])
                       & tf.equal(tf.strings.substr(header, 24, 2), b"\x10\x00"))  # depth, type
    image = tf.cond(gray_16_bit_png,
                    lambda: image / tf.maximum(tf.reduce_max(image), 1.0 / 65535.0),
                    lambda: image)
    channels = tf.shape(image)[-1]
    has_alpha = tf.equal(channels % 2, 0)  # 2: gray + alpha, 4: RGBA

    def composite_on_white():
        colour, alpha = image[..., :-1], image[..., -1:]
        return colour * alpha + (1.0 - alpha)

    image = tf.cond(has_alpha, composite_on_white, lambda: image)
    image = tf.cond(tf.shape(image)[-1] >= 3,
                    lambda: tf.image.rgb_to_grayscale(image[..., :3]),
                    lambda: image[..., :1])
    return tf.clip_by_value(image[..., 0], 0.0, 1.0)


def decode_and_preprocess_tf(image_bytes, size=DEFAULT_SIZE, margin=DEFAULT_MARGIN):
    """A scalar string of image bytes -> float32 [size, size] (decode_image_tf + preprocess)."""
    return preprocess_image_tf(decode_image_tf(image_bytes), size=size, margin=margin)

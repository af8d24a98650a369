"""The encoder users hold: images in, L2-normalised embeddings out.

An `Encoder` wraps a feature extractor (a discriminator without its real/fake head) and the
input contract: [N, 64, 64, 1] (or [N, 64, 64]) float in [0, 1] or uint8 in [0, 255], strokes
bright on a dark background. Anything else is refused with a ValueError saying what was expected.
"""

import numpy as np
import tensorflow as tf

IMAGE_SIZE = 64


def validate_images(images, size=IMAGE_SIZE):
    """Return `images` as float32 [N, size, size, 1] in [0, 1], or raise ValueError."""
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(image) for image in images]) if images else np.zeros((0,))
    images = np.asarray(images)
    expected = f"[N, {size}, {size}, 1] or [N, {size}, {size}] images, float in [0, 1] or uint8"
    if images.dtype == object or not (np.issubdtype(images.dtype, np.floating)
                                      or images.dtype == np.uint8):
        raise ValueError(f"Expected {expected}; got dtype {images.dtype}.")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != (size, size, 1):
        raise ValueError(f"Expected {expected}; got shape {images.shape}.")
    if len(images) == 0:
        raise ValueError(f"Expected {expected} with N >= 1; got an empty batch.")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if not np.all(np.isfinite(images)):
        raise ValueError("Images contain NaN or infinite values; expected finite values in [0, 1].")
    low, high = float(images.min()), float(images.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"Expected float images in [0, 1]; got values in [{low:.3g}, {high:.3g}]. "
                         f"(Scale 0-255 data by 1/255 or pass uint8.)")
    return np.clip(images, 0.0, 1.0).astype(np.float32)


class Encoder:
    """encode(images) -> float32 [N, D] unit vectors; similarity = dot product."""

    def __init__(self, name, feature_extractor, entry=None):
        self.name = name
        self.feature_extractor = feature_extractor
        self.entry = entry
        self.embedding_dim = int(feature_extractor.output_shape[-1])
        self._embed = tf.function(
            self._embed_batch,
            input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32)],
            reduce_retracing=True,
        )

    def __repr__(self):
        return f"Encoder({self.name!r}, embedding_dim={self.embedding_dim})"

    def _embed_batch(self, images):
        features = self.feature_extractor(images, training=False)
        return tf.math.l2_normalize(features, axis=-1, epsilon=1e-12)

    def encode(self, images, batch_size=256):
        """Embed images (see `validate_images` for what is accepted) -> float32 [N, D]."""
        images = validate_images(images)
        outputs = [self._embed(tf.constant(images[start : start + batch_size])).numpy()
                   for start in range(0, len(images), batch_size)]
        return np.concatenate(outputs).astype(np.float32)

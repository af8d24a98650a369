"""The encoder users hold: images in, L2-normalised embeddings out.

An `Encoder` wraps a feature extractor (a discriminator without its real/fake head) and the
input contract: [N, S, S, 1] (or [N, S, S]) float in [0, 1] or uint8 in [0, 255], strokes
bright on a dark background, S = `encoder.image_size` (64 for sketch/thin-GAN, 32 for BinGAN). Anything else is refused with a ValueError saying what was expected.

An encoder may carry a hash head (a `zoo.hashing.LinearHash` on the L2-normalised embedding):
`hash(images)` then returns K-bit codes compared by Hamming distance, and `export` writes a
SavedModel with embedding and hashing signatures (export/saved_model.py).
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from zoo.hashing import LinearHash, fit_itq, linear_hash_bits_tf, pack_bits

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
    # Two passes over the batch: min and max are NaN if any value is, and infinite if any is.
    low, high = float(images.min()), float(images.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("Images contain NaN or infinite values; expected finite values in [0, 1].")
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"Expected float images in [0, 1]; got values in [{low:.3g}, {high:.3g}]. "
                         f"(Scale 0-255 data by 1/255 or pass uint8.)")
    if low < 0.0 or high > 1.0:
        images = np.clip(images, 0.0, 1.0)
    return images.astype(np.float32, copy=False)


# How far a bfloat16 encoder (zoo.precision) may be from float32 on the same images, as
# (smallest cosine between the two embeddings, fraction of equal hash bits);
# tests/test_precision.py checks every shipped entry. Float encoders (sketch/thin-GAN,
# sketch-GAN+) stay far inside theirs (measured: cosine >= 0.9999); BinGAN's code layers are
# low-dimensional and their signs are the codes, so a few bits near zero flip. MODELS.md
# ("Speed") measures retrieval with both paths.
BFLOAT16_TOLERANCE = {"float": (0.999, 0.995), "sign": (0.98, 0.98)}
# The same for precision="int8" (sketch-GAN+ encoders only; tests/test_quantization.py checks
# every shipped one on 256 merchant marks). Measured there: smallest cosine 0.96-0.995 and 95-99%
# of the 64 hash bits equal; the eval corpora's P@8 stays within 0.01 (MODELS.md, "Speed").
INT8_TOLERANCE = {"float": (0.95, 0.94)}


def embed_tf(feature_extractor, images):
    """float32 images -> float32 L2-normalised embeddings, whatever the extractor computes in
    (the in-process encoder and the exported SavedModel share this graph)."""
    features = tf.cast(feature_extractor(images, training=False), tf.float32)
    return tf.math.l2_normalize(features, axis=-1, epsilon=1e-12)


_linear_hash_bits = tf.function(
    linear_hash_bits_tf,
    input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.float32),
                     tf.TensorSpec([None, None], tf.float32)],
)


class Codes(NamedTuple):
    """Binary codes of N images: `bits` uint8 [N, K] of 0/1 and the same bits packed eight a
    byte, uint8 [N, ceil(K / 8)] in numpy.packbits order (compare with zoo.hashing's
    `hamming_distances`)."""

    bits: np.ndarray
    packed: np.ndarray


class Encoder:
    """encode(images) -> float32 [N, D] unit vectors; similarity = dot product.

    hash(images) -> Codes when the encoder has a hash head (a LinearHash on the embedding);
    `metadata` is a dict of facts for the exported model card (training corpus, ...).
    """

    def __init__(self, name, feature_extractor, entry=None, hash_head=None, metadata=None,
                 margin=3, precision="float32"):
        self.name = name
        self.precision = precision  # what the feature extractor computes in (zoo.precision)
        self.margin = int(margin)  # px of black around the ink when preprocessing image files
        self.feature_extractor = feature_extractor
        self.entry = entry
        self.embedding_dim = int(feature_extractor.output_shape[-1])
        self.image_size = int(feature_extractor.input_shape[1])  # square single-channel input
        self.hash_head = None
        if hash_head is not None:
            self.set_hash_head(hash_head)
        self.metadata = dict(metadata) if metadata is not None else {}
        self._embed = tf.function(
            self._embed_batch,
            input_signature=[tf.TensorSpec([None, self.image_size, self.image_size, 1],
                                           tf.float32)],
            reduce_retracing=True,
        )

    def __repr__(self):
        bits = f", num_bits={self.hash_head.num_bits}" if self.hash_head is not None else ""
        precision = f", precision={self.precision!r}" if self.precision != "float32" else ""
        return f"Encoder({self.name!r}, embedding_dim={self.embedding_dim}{bits}{precision})"

    def _embed_batch(self, images):
        return embed_tf(self.feature_extractor, images)

    def encode(self, images, batch_size=256):
        """Embed images (see `validate_images` for what is accepted) -> float32 [N, D]."""
        images = validate_images(images, size=self.image_size)
        outputs = [self._embed(tf.constant(images[start : start + batch_size])).numpy()
                   for start in range(0, len(images), batch_size)]
        return np.concatenate(outputs).astype(np.float32)

    # ------------------------------------------------------------------------- hashing

    def set_hash_head(self, hash_head):
        """Use `hash_head` (a LinearHash over this encoder's embeddings) for `hash`."""
        if not isinstance(hash_head, LinearHash):
            raise ValueError(f"Expected a zoo.hashing.LinearHash as hash head; got "
                             f"{type(hash_head).__name__}.")
        if hash_head.input_dim != self.embedding_dim:
            raise ValueError(f"Expected a hash head over {self.embedding_dim}-d embeddings; "
                             f"got one over {hash_head.input_dim}-d inputs.")
        self.hash_head = hash_head

    def fit_hash_head(self, images, bits=64, seed=0, iterations=50):
        """Fit an ITQ hash head (PCA + rotation, Gong & Lazebnik 2011) with `bits` bits on the
        embeddings of `images`, use it, and return it."""
        hash_head = fit_itq(self.encode(images), bits, iterations=iterations, seed=seed)
        self.set_hash_head(hash_head)
        return hash_head

    def hash(self, images, batch_size=256):
        """Binary codes of images (accepted as by `encode`) -> Codes(bits, packed)."""
        if self.hash_head is None:
            raise ValueError(f"Encoder {self.name!r} has no hash head; fit one with "
                             f"encoder.fit_hash_head(images) or pass hash_head=.")
        embeddings = self.encode(images, batch_size=batch_size)
        bits = _linear_hash_bits(tf.constant(embeddings), tf.constant(self.hash_head.mean),
                                 tf.constant(self.hash_head.projection)).numpy()
        return Codes(bits, pack_bits(bits))

    # ------------------------------------------------------------------------- export

    def export(self, base_dir, version, overwrite=False):
        """Write a TF Serving SavedModel to base_dir/<name>/<version>/ and return its path
        (see export.saved_model.export_encoder)."""
        from export.saved_model import export_encoder

        return export_encoder(self, base_dir, version, overwrite=overwrite)

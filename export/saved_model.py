"""Export an `Encoder` as a TF Serving SavedModel (../shared/specs/serving.md).

`export_encoder(encoder, base_dir, version)` writes base_dir/<encoder.name>/<version>/ with
six signatures, stable names that clients depend on (all batch-first, N >= 1):

| signature       | input                                      | outputs                          |
|-----------------|--------------------------------------------|----------------------------------|
| serving_default | images: float32 [N, 64, 64, 1] in [0, 1]   | embedding: float32 [N, D]        |
| hash            | images: float32 [N, 64, 64, 1] in [0, 1]   | bits: uint8 [N, K], codes_bytes  |
| encode_pixels   | pixels: uint8 [N, 64, 64, 1], 0-255        | embedding: float32 [N, D]        |
| hash_pixels     | pixels: uint8 [N, 64, 64, 1], 0-255        | bits: uint8 [N, K], codes_bytes  |
| encode_images   | image_bytes: string [N] (PNG/JPEG/BMP/GIF) | embedding: float32 [N, D]        |
| hash_images     | image_bytes: string [N] (PNG/JPEG/BMP/GIF) | bits: uint8 [N, K], codes_bytes  |

`embedding` is L2-normalised (similarity = dot product); `bits` are the encoder's hash head
applied to it, 0/1; `codes_bytes` is a string [N] holding the same bits packed eight a byte in
numpy.packbits order. The `*_pixels` signatures take prepared 8-bit images, a quarter of the
bytes of float32 on the wire, and compute `images = pixels / 255` in the graph (the float32 a
client would have sent, to the bit). Image files go to the `*_images` signatures, whose graph
decodes and preprocesses them exactly as `zoo.data.images.load_image` does (grayscale,
inversion of light paper, crop to the ink, pad to square, resize). Bad inputs fail inside the
graph with InvalidArgumentError messages that say what is expected.

Beside saved_model.pb and variables/, the version holds assets/metadata.json (name, version,
training corpus, embedding dimension, code length, similarity, preprocessing, compute precision,
signatures) and assets.extra/tf_serving_warmup_requests (one PredictionLog per signature, two
real images each). An encoder loaded with precision="bfloat16" exports a bfloat16 graph (inputs
and outputs stay float32): it runs on any TensorFlow, and fast where the server's TensorFlow has
oneDNN's bfloat16 kernels and the CPU has AVX512-BF16 or AMX (TensorFlow's x86 Linux builds,
which `zoo serve` uses, do). A version directory appears atomically: it is written to a hidden
temporary directory beside it and renamed, so a polling server never sees half a version, and a
failed export leaves nothing.
"""

import ctypes
import errno
import io
import json
import numbers
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from zoo.data.images import DEFAULT_MARGIN
from zoo.data.preprocess_tf import decode_and_preprocess_tf
from zoo.encoder import embed_tf
from zoo.hashing import linear_hash_bits_tf

__all__ = ["export_encoder", "SIGNATURES", "METADATA_FILE", "WARMUP_FILE"]

METADATA_FILE = "metadata.json"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")

# signature name -> (input name, output names); serving_default (the main endpoint) first.
SIGNATURES = {
    "serving_default": ("images", ("embedding",)),
    "hash": ("images", ("bits", "codes_bytes")),
    "encode_pixels": ("pixels", ("embedding",)),
    "hash_pixels": ("pixels", ("bits", "codes_bytes")),
    "encode_images": ("image_bytes", ("embedding",)),
    "hash_images": ("image_bytes", ("bits", "codes_bytes")),
}

EMPTY_BATCH_MESSAGE = "expected at least one image (a batch of N >= 1)"
RANGE_MESSAGE = ("expected float32 `images` with values in [0, 1] (no NaN or infinity), strokes 1 "
                 "on black 0; scale 0-255 data by 1/255, or send encoded files to the "
                 "encode_images / hash_images signatures")
RANGE_TOLERANCE = 1e-3  # as zoo.encoder.validate_images: values this far outside are clipped

DEFAULT_PREPROCESSING = ("grayscale, invert light backgrounds, crop to ink, pad to square with a "
                         f"{DEFAULT_MARGIN} px margin, resize; strokes 1 on black 0")
SIMILARITY = ("embedding: dot product of L2-normalised embeddings (cosine); "
              "codes: Hamming distance (fewer differing bits = more similar)")


# ----------------------------------------------------------------------------- the graph


def _pack_bits_tf(bits, num_bits):
    """uint8 [N, K] of 0/1 -> string [N] of ceil(K / 8) bytes, numpy.packbits bit order."""
    num_bytes = -(-num_bits // 8)
    padded = tf.pad(tf.cast(bits, tf.int32), [[0, 0], [0, 8 * num_bytes - num_bits]])
    grouped = tf.reshape(padded, [-1, num_bytes, 8])
    values = tf.reduce_sum(grouped * tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32), -1)
    byte_strings = tf.constant([bytes([value]) for value in range(256)])
    return tf.strings.reduce_join(tf.gather(byte_strings, values), axis=-1)


class EncoderModule(tf.Module):
    """The exported object: the feature extractor, the hash head as constants, 6 signatures."""

    def __init__(self, encoder, metadata_path):
        super().__init__(name="encoder")
        self.feature_extractor = encoder.feature_extractor
        self.metadata_file = tf.saved_model.Asset(metadata_path)
        self._hash_mean = np.asarray(encoder.hash_head.mean, np.float32)
        self._hash_projection = np.asarray(encoder.hash_head.projection, np.float32)
        self._num_bits = int(encoder.hash_head.num_bits)
        self._image_shape = tuple(int(d) for d in encoder.feature_extractor.input_shape[1:])
        self._margin = int(getattr(encoder, "margin", DEFAULT_MARGIN))
        images_spec = tf.TensorSpec([None, *self._image_shape], tf.float32, name="images")
        pixels_spec = tf.TensorSpec([None, *self._image_shape], tf.uint8, name="pixels")
        bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
        self.serving_default = tf.function(self._serving_default, input_signature=[images_spec])
        self.hash = tf.function(self._hash, input_signature=[images_spec])
        self.encode_pixels = tf.function(self._encode_pixels, input_signature=[pixels_spec])
        self.hash_pixels = tf.function(self._hash_pixels, input_signature=[pixels_spec])
        self.encode_images = tf.function(self._encode_images, input_signature=[bytes_spec])
        self.hash_images = tf.function(self._hash_images, input_signature=[bytes_spec])

    # The six signatures. Argument names are the signatures' input names.

    def _serving_default(self, images):
        return {"embedding": self._embed(self._checked_images(images))}

    def _hash(self, images):
        return self._codes(self._embed(self._checked_images(images)))

    def _encode_pixels(self, pixels):
        return {"embedding": self._embed(self._scaled_pixels(pixels))}

    def _hash_pixels(self, pixels):
        return self._codes(self._embed(self._scaled_pixels(pixels)))

    def _encode_images(self, image_bytes):
        return {"embedding": self._embed(self._decoded_images(image_bytes))}

    def _hash_images(self, image_bytes):
        return self._codes(self._embed(self._decoded_images(image_bytes)))

    # Building blocks.

    def _embed(self, images):
        return embed_tf(self.feature_extractor, images)

    def _codes(self, embeddings):
        bits = linear_hash_bits_tf(embeddings, tf.constant(self._hash_mean),
                                   tf.constant(self._hash_projection))
        bits = tf.ensure_shape(bits, [None, self._num_bits])
        return {"bits": bits, "codes_bytes": _pack_bits_tf(bits, self._num_bits)}

    @staticmethod
    def _assert_not_empty(batch):
        return tf.debugging.Assert(tf.shape(batch)[0] > 0, [EMPTY_BATCH_MESSAGE])

    def _checked_images(self, images):
        # The signature declares the shape, but a signature call does not check it: do so here.
        images = tf.ensure_shape(images, [None, *self._image_shape],
                                 name="expected_images_of_shape_N_H_W_C")
        in_range = tf.reduce_all((images >= -RANGE_TOLERANCE) & (images <= 1.0 + RANGE_TOLERANCE))
        with tf.control_dependencies([
            self._assert_not_empty(images),
            tf.debugging.Assert(in_range, [RANGE_MESSAGE, "got min", tf.reduce_min(images),
                                           "max", tf.reduce_max(images)]),
        ]):
            return tf.clip_by_value(images, 0.0, 1.0)

    def _scaled_pixels(self, pixels):
        pixels = tf.ensure_shape(pixels, [None, *self._image_shape],
                                 name="expected_pixels_of_shape_N_H_W_C")
        with tf.control_dependencies([self._assert_not_empty(pixels)]):
            # numpy's `pixels.astype(np.float32) / 255`, to the bit: in a graph, Grappler turns
            # a float32 division by a constant into a multiplication by its reciprocal, a
            # rounding step off for half of the 256 values, while the float64 product rounds to
            # the float32 quotient for every one of them (the tests check all 256). A lookup
            # table is as exact and 0.6 ms slower for 64 images.
            scale = tf.constant(1 / 255, tf.float64)
            return tf.cast(tf.cast(pixels, tf.float64) * scale, tf.float32)

    def _decoded_images(self, image_bytes):
        height, width, _ = self._image_shape
        image_bytes = tf.ensure_shape(image_bytes, [None], name="expected_image_bytes_of_shape_N")
        with tf.control_dependencies([self._assert_not_empty(image_bytes)]):
            images = tf.map_fn(
                lambda one: decode_and_preprocess_tf(one, size=height, margin=self._margin),
                image_bytes,
                fn_output_signature=tf.TensorSpec([height, width], tf.float32),
            )
        return images[..., None]

    def signatures(self):
        return {name: getattr(self, name).get_concrete_function() for name in SIGNATURES}


# ----------------------------------------------------------------------------- metadata


def _describe_signatures(image_shape, embedding_dim, num_bits):
    images = {"images": {"dtype": "float32", "shape": [-1, *image_shape], "range": [0.0, 1.0]}}
    pixels = {"pixels": {"dtype": "uint8", "shape": [-1, *image_shape], "range": [0, 255],
                         "note": "images = pixels / 255"}}
    image_bytes = {"image_bytes": {"dtype": "string", "shape": [-1],
                                   "format": "PNG, JPEG, BMP or GIF file bytes, any size or colour"}}
    embedding = {"embedding": {"dtype": "float32", "shape": [-1, embedding_dim],
                               "note": "L2-normalised"}}
    codes = {"bits": {"dtype": "uint8", "shape": [-1, num_bits], "note": "0/1"},
             "codes_bytes": {"dtype": "string", "shape": [-1],
                             "note": f"{-(-num_bits // 8)} bytes each: the bits packed in "
                                     "numpy.packbits (big-endian) order"}}
    return {
        "serving_default": {"inputs": images, "outputs": embedding},
        "hash": {"inputs": images, "outputs": codes},
        "encode_pixels": {"inputs": pixels, "outputs": embedding},
        "hash_pixels": {"inputs": pixels, "outputs": codes},
        "encode_images": {"inputs": image_bytes, "outputs": embedding},
        "hash_images": {"inputs": image_bytes, "outputs": codes},
    }


def build_metadata(encoder, version):
    """The model card written to assets/metadata.json: registry entry facts, then
    `encoder.metadata`, then what the export itself knows (which always wins)."""
    metadata = {"training_corpus": None, "similarity": SIMILARITY,
                "preprocessing": DEFAULT_PREPROCESSING}
    entry = encoder.entry
    if entry is not None:
        for key, attribute in (("description", "description"), ("family", "family"),
                               ("training_corpus", "corpus"), ("paper", "paper"),
                               ("licence", "licence"), ("preprocessing", "preprocessing")):
            if getattr(entry, attribute, None) is not None:
                metadata[key] = getattr(entry, attribute)
        if getattr(entry, "similarity", None):
            metadata["similarity"] = f"embedding: {entry.similarity}; codes: Hamming distance"
    metadata.update(encoder.metadata or {})
    image_shape = [int(d) for d in encoder.feature_extractor.input_shape[1:]]
    hash_head = encoder.hash_head
    metadata.update({
        "name": encoder.name,
        "version": int(version),
        "embedding_dim": int(encoder.embedding_dim),
        "code_length": int(hash_head.num_bits),
        "hash_head": {"method": hash_head.method, "input": "L2-normalised embedding",
                      "bits": "((embedding - mean) @ projection >= 0)",
                      "packing": "numpy.packbits, big-endian bit order"},
        "input_shape": image_shape,
        "precision": getattr(encoder, "precision", "float32"),
        "signatures": _describe_signatures(image_shape, encoder.embedding_dim,
                                           hash_head.num_bits),
        "exported_with": {"tensorflow": tf.__version__, "keras": keras.__version__},
    })
    return metadata


# ----------------------------------------------------------------------------- warmup


def _warmup_images(image_shape):
    """Two small drawn marks (a staff with a cross bar and an orb; a four-like sign), float32
    [2, H, W, 1] with strokes 1 on black, and their PNG files as scans: the first dark ink on
    light paper in RGB, the second as it is (gray, strokes bright on black). Drawn here so that
    exporting does not depend on the corpus generator."""
    from PIL import Image, ImageDraw

    size = image_shape[0]
    width = max(1, size // 24)
    strokes = (
        [((0.5, 0.15), (0.5, 0.85)), ((0.3, 0.3), (0.7, 0.3)), ("orb", (0.35, 0.65, 0.65, 0.95))],
        [((0.6, 0.1), (0.6, 0.9)), ((0.6, 0.1), (0.2, 0.6)), ((0.2, 0.6), (0.8, 0.6))],
    )
    images = []
    for mark in strokes:
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        for stroke in mark:
            if stroke[0] == "orb":
                draw.ellipse([v * (size - 1) for v in stroke[1]], outline=255, width=width)
            else:
                draw.line([tuple(v * (size - 1) for v in point) for point in stroke], fill=255,
                          width=width)
        images.append(np.asarray(canvas, np.float32)[..., None] / 255.0)
    images = np.stack(images)
    files = []
    for index, image in enumerate(images[..., 0]):
        pixels = np.round(image * 255).astype(np.uint8)
        picture = Image.fromarray(255 - pixels).convert("RGB") if index == 0 else Image.fromarray(pixels)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return images, files


def write_warmup_requests(path, model_name, image_shape):
    """A TFRecord of PredictionLog, one PredictRequest per signature (TF Serving model warmup)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    images, files = _warmup_images(image_shape)
    inputs = {"images": tf.make_tensor_proto(images, dtype=tf.float32),
              "pixels": tf.make_tensor_proto(np.round(images * 255).astype(np.uint8)),
              "image_bytes": tf.make_tensor_proto(files, dtype=tf.string)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, (input_name, _) in SIGNATURES.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            request.inputs[input_name].CopyFrom(inputs[input_name])
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


# ----------------------------------------------------------------------------- atomic export

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _check_version(version):
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
        raise ValueError(f"Expected version to be a positive integer (TF Serving version "
                         f"directories are integers); got {version!r}.")
    return int(version)


def _check_exportable(encoder):
    if not _NAME_PATTERN.match(str(encoder.name)):
        raise ValueError(f"Cannot export encoder named {encoder.name!r}: the name becomes a "
                         f"directory; expected letters, digits, '_', '.', '-'.")
    if getattr(encoder, "hash_head", None) is None:
        raise ValueError(f"Cannot export encoder {encoder.name!r}: it has no hash head, and the "
                         f"`hash` signatures need one; fit one with "
                         f"encoder.fit_hash_head(training_images) first.")
    input_shape = tuple(encoder.feature_extractor.input_shape[1:])
    if len(input_shape) != 3 or None in input_shape or input_shape[0] != input_shape[1]:
        raise ValueError(f"Cannot export encoder {encoder.name!r}: expected a square image "
                         f"input [N, H, H, C]; its feature extractor takes {input_shape}.")


def _exchange(first, second):
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), second)


def _publish(staging, final, overwrite):
    """Move the finished `staging` directory to `final` in one step."""
    if not os.path.lexists(final):
        os.rename(staging, final)
        return
    if not overwrite:
        raise ValueError(f"Version directory {final} already exists; pass overwrite=True to "
                         f"replace it, or export a new version number.")
    if _exchange(staging, final):
        shutil.rmtree(staging)  # it now holds the previous version
        return
    # No atomic exchange here: move the old version aside, then the new one in (two renames).
    aside = staging + ".previous"
    os.rename(final, aside)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(aside, final)
        raise
    shutil.rmtree(aside)


def _write_saved_model(encoder, directory, version, warmup):
    metadata = build_metadata(encoder, version)
    with tempfile.TemporaryDirectory(prefix="zoo-export-metadata-") as staging_assets:
        metadata_path = os.path.join(staging_assets, METADATA_FILE)
        with open(metadata_path, "w") as handle:
            json.dump(metadata, handle, indent=2, sort_keys=True)
            handle.write("\n")
        module = EncoderModule(encoder, metadata_path)
        tf.saved_model.save(module, directory, signatures=module.signatures())
    if warmup:
        write_warmup_requests(os.path.join(directory, WARMUP_FILE), encoder.name,
                              module._image_shape)


def export_encoder(encoder, base_dir, version, overwrite=False, warmup=True):
    """Write `encoder` as the SavedModel base_dir/<encoder.name>/<version>/ and return its path.

    The encoder needs a hash head (`encoder.fit_hash_head(images)`). The version appears
    atomically; an existing version is refused with ValueError unless `overwrite`, which
    replaces it atomically too. On any failure nothing is left behind.
    """
    version = _check_version(version)
    _check_exportable(encoder)
    model_dir = os.path.join(os.fspath(base_dir), encoder.name)
    final = os.path.join(model_dir, str(version))
    if os.path.lexists(final) and not overwrite:
        raise ValueError(f"Version directory {final} already exists; pass overwrite=True to "
                         f"replace it, or export a new version number.")
    created = [path for path in (os.fspath(base_dir), model_dir) if not os.path.isdir(path)]
    os.makedirs(model_dir, exist_ok=True)
    # A hidden, non-integer name: TF Serving only loads integer version directories.
    staging = tempfile.mkdtemp(prefix=f".{version}.incomplete-", dir=model_dir)
    try:
        os.chmod(staging, 0o755)
        _write_saved_model(encoder, staging, version, warmup)
        _publish(staging, final, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for path in reversed(created):  # the folders this call made, innermost first
            try:
                os.rmdir(path)
            except OSError:
                pass
        raise
    return final

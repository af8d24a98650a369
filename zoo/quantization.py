"""int8 convolutions for inference (precision="int8", zoo.precision): oneDNN's VNNI kernels.

A `QuantizedConvLeakyReLU` layer computes LeakyReLU(conv(x, kernel) + bias) as

    x8 = round(x / s_in) clipped to [-127, 127]           (QuantizeV2, one scale per tensor)
    y8 = round((conv(x8, k8) * s_in * s_k + bias) / s_out) (oneDNN int8 convolution, the bias and
                                                           the requantisation fused, int32 sums)
    y  = LeakyReLU(y8 * s_out)                             (Dequantize, float32)

with the kernel rounded to int8 with one scale per output channel (s_k = max |kernel| / 127) and
the two activation scales fixed by calibration over calibration images (`calibrate_ranges`):
s_in = R(|x|) / 127 and s_out = R(|conv + bias|) / 127, where R is the CALIBRATION_PERCENTILE-th
percentile, so that the rarest values are clipped rather than coarsening every step (measured on
the shipped sketch-GAN+ entries against the maximum: smallest cosine to float32 0.990 instead of
0.980 and 0.961 instead of 0.924, P@8 within 0.003 of float32's instead of 0.009; 99.9 clips too
much). Fixed ranges keep an image's embedding independent of the batch it is encoded in.

On CPUs with VNNI (zoo.precision.native_int8) the result is that arithmetic exactly; without
VNNI, oneDNN halves the kernels' range inside the convolution to keep its 16-bit partial sums from
saturating, and outputs may differ from it by up to two steps of s_out (measured;
tests/test_quantization.py).

The convolution is TensorFlow's oneDNN op `_FusedQuantizedConv2D` (fused ops BiasAdd and
Requantize), which the public `tf.raw_ops` does not expose: the layer adds it to the graph by name.
TensorFlow builds without oneDNN do not register it; `int8_available()` says whether this one
does, and building a layer where it does not raises a clear error. The zoo's only int8 encoders are
sketch-GAN+'s (zoo.models.sketch_gan_plus.build_int8_feature_extractor); MODELS.md ("Speed")
measures their speed and retrieval against float32 (`python -m benchmarks.encode_speed`).
"""

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2
from tensorflow.python.framework import op_def_registry

FUSED_OP = "_FusedQuantizedConv2D"
INT8_LIMIT = 127.0
CALIBRATION_PERCENTILE = 99.99


def int8_available():
    """Whether this TensorFlow registers oneDNN's fused int8 convolution."""
    return op_def_registry.get(FUSED_OP) is not None


def quantize_kernel(kernel):
    """float kernel [h, w, in, out] -> (int8 kernel, per-output-channel range max |kernel|)."""
    kernel = np.asarray(kernel, np.float32)
    ranges = np.abs(kernel).max(axis=(0, 1, 2))
    ranges = np.where(ranges > 0, ranges, 1.0).astype(np.float32)  # an all-zero filter stays 0
    quantized = np.clip(np.round(kernel / ranges * INT8_LIMIT), -INT8_LIMIT, INT8_LIMIT)
    return quantized.astype(np.int8), ranges


def _attr(**value):
    return attr_value_pb2.AttrValue(**value)


def _types(dtypes):
    return _attr(list=attr_value_pb2.AttrValue.ListValue(
        type=[dtype.as_datatype_enum for dtype in dtypes]))


def fused_quantized_conv(x8, kernel8, kernel_ranges, bias, input_range, output_range, strides,
                         padding):
    """The graph op: qint8 x8 (scale input_range / 127) -> qint8 (scale output_range / 127) of
    conv(x, kernel) + bias. Only in a graph (a tf.function)."""
    device_inputs = [x8, tf.constant(kernel8, tf.qint8), tf.constant(bias, tf.float32)]
    host_inputs = [tf.constant(value, tf.float32) for value in (
        -input_range, input_range, -kernel_ranges, kernel_ranges, -output_range, output_range)]
    attrs = {
        "Tinput": _attr(type=tf.qint8.as_datatype_enum),
        "Tfilter": _attr(type=tf.qint8.as_datatype_enum),
        "Tbias": _attr(type=tf.float32.as_datatype_enum),
        "Tsummand": _attr(type=tf.qint8.as_datatype_enum),
        "out_type": _attr(type=tf.qint8.as_datatype_enum),
        "Tdevice_inputs": _types([tf.qint8, tf.qint8, tf.float32]),
        "Thost_inputs": _types([tf.float32] * len(host_inputs)),
        "Tdevice_outputs": _types([tf.qint8]),
        "Thost_outputs": _types([tf.float32, tf.float32]),
        "strides": _attr(list=attr_value_pb2.AttrValue.ListValue(i=[1, strides, strides, 1])),
        "dilations": _attr(list=attr_value_pb2.AttrValue.ListValue(i=[1, 1, 1, 1])),
        "padding": _attr(s=padding.upper().encode()),
        "data_format": _attr(s=b"NHWC"),
        "fused_ops": _attr(list=attr_value_pb2.AttrValue.ListValue(s=[b"BiasAdd", b"Requantize"])),
        "is_filter_const": _attr(b=True),
        "is_bias_const": _attr(b=True),
    }
    graph = tf.compat.v1.get_default_graph()
    op = graph._create_op_internal(  # noqa: SLF001 - the op has no public Python wrapper
        FUSED_OP, device_inputs + host_inputs, dtypes=[tf.qint8, tf.float32, tf.float32],
        attrs=attrs, name="quantized_conv")
    return op.outputs[0]


class QuantizedConvLeakyReLU(keras.layers.Layer):
    """LeakyReLU(Conv2D(x)) in int8 (see the module docstring): float32 in, float32 out.

    Built from a trained float Conv2D's kernel and bias and the two calibrated ranges; it holds
    them as constants of the graph (oneDNN caches the reordered int8 kernel), not as weights, so
    it is rebuilt from the float model rather than saved.
    """

    def __init__(self, kernel, bias, input_range, output_range, strides=1, padding="same",
                 negative_slope=0.2, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=False, **kwargs)
        if not int8_available():
            raise RuntimeError(f"This TensorFlow has no oneDNN int8 convolution ({FUSED_OP}); "
                               f"use precision 'bfloat16' or 'float32'.")
        if not (input_range > 0 and output_range > 0):
            raise ValueError(f"Expected positive calibrated ranges; got input {input_range}, "
                             f"output {output_range}.")
        self.kernel8, self.kernel_ranges = quantize_kernel(kernel)
        self.bias = np.asarray(bias, np.float32)
        self.input_range, self.output_range = float(input_range), float(output_range)
        self.strides, self.padding = int(strides), padding
        self.negative_slope = float(negative_slope)
        self.filters = self.kernel8.shape[-1]
        self._eager_call = None

    def _graph_call(self, inputs):
        x8 = tf.raw_ops.QuantizeV2(
            input=tf.cast(inputs, tf.float32), min_range=-self.input_range,
            max_range=self.input_range, T=tf.qint8, mode="SCALED", round_mode="HALF_TO_EVEN",
            narrow_range=True).output  # [-127, 127] at scale input_range / 127, as the conv reads it
        y8 = fused_quantized_conv(x8, self.kernel8, self.kernel_ranges, self.bias,
                                  self.input_range, self.output_range, self.strides, self.padding)
        y = tf.raw_ops.Dequantize(input=y8, min_range=-self.output_range,
                                  max_range=self.output_range, mode="SCALED", dtype=tf.float32)
        return tf.nn.leaky_relu(y, self.negative_slope)

    def call(self, inputs):
        if tf.executing_eagerly():  # the op exists only in graphs: trace one for eager calls
            if self._eager_call is None:
                self._eager_call = tf.function(self._graph_call)
            return self._eager_call(inputs)
        return self._graph_call(inputs)

    def get_config(self):
        raise NotImplementedError(
            f"{type(self).__name__} is not serialisable: it is rebuilt from the float model "
            f"(zoo.load(name, precision='int8')); save the float model or export a SavedModel.")

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.padding.lower() == "same":
            size = [None if d is None else -(-d // self.strides) for d in (height, width)]
        else:
            kernel = self.kernel8.shape[:2]
            size = [None if d is None else (d - k) // self.strides + 1
                    for d, k in zip((height, width), kernel)]
        return (batch, *size, self.filters)


def calibrate_ranges(model, images, batch_size=256, percentile=CALIBRATION_PERCENTILE):
    """{output name: the `percentile`-th percentile of |value|} of a Keras model with named
    outputs over `images` (100: the maximum). Exact with little memory: of an output's n values
    it keeps only the k = floor(n (1 - percentile / 100)) + 1 largest, and returns the smallest
    of those."""
    if not 0 < percentile <= 100:
        raise ValueError(f"Expected a percentile in (0, 100]; got {percentile}.")
    largest = {}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        outputs = model(tf.constant(batch), training=False)
        for name, value in outputs.items():
            values = np.abs(np.asarray(value, np.float32)).ravel()
            count = values.size // len(batch) * len(images)
            keep = int(count * (1 - percentile / 100)) + 1
            values = np.concatenate([largest.get(name, values[:0]), values])
            if len(values) > keep:
                values = np.partition(values, len(values) - keep)[-keep:]
            largest[name] = values
    return {name: float(values.min()) for name, values in largest.items()}

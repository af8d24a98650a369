"""BinGAN (Zieba, Semberecki, El-Gaaly & Trzcinski, "BinGAN: Learning Compact Binary
Descriptors with a Regularized GAN", NeurIPS 2018, arXiv:1806.06778).

A Keras port of the official Theano/Lasagne code (maciejzieba/binGAN, itself Salimans et al.'s
improved-GAN CIFAR-10 script); layer tables in ../shared/specs/architectures.md section 2.

The discriminator returns three tensors: the real/fake logits [N, 2] (Salimans' unsupervised
form: D(x) = sigmoid(logsumexp(logits))), the LOW-DIM code layer [N, K] whose signs are the
binary descriptor, and the HIGH-DIM layer [N, M] that the DMR/BRE regularisers compare codes
with. The encoder is the discriminator up to the code layer (`build_feature_extractor`).

Every convolution and dense layer of D uses weight normalisation, w = g * v / ||v|| per output
unit, with g and b set once by a data-dependent initialisation (`initialize`: each unit's
pre-activation gets zero mean and unit variance on real data, so bits start balanced) and g
frozen afterwards except in the final dense layers (which, as in Salimans' code, start with
pre-activation std 0.1 rather than 1). Keras 3 has no weight-norm layer; the three
below (dense, conv, transposed conv) are small and share one normalisation.

Input: images [N, S, S, C] in [0, 1] (S = 32), scaled inside D as (255 x - 127.5) / 128, the
official (x - 127.5) / 128 on 0-255 pixels. The generator draws z ~ U(0, 1)^latent_dim and
emits tanh images mapped to [0, 1].

Configurations (`build_gan` keyword arguments):
* variant="retrieval" (codes K = 16/32/64) or "matching" (K = 256, Brown patches);
* widths=(96, 192): channels of stages 1 and 2-3 (matching: (96, 128)); CPU presets narrow them;
* generator_widths=(512, 256, 128): Salimans' generator (4x4x512 -> 8x8x256 -> 16x16x128 -> SxS);
* channels=3 for CIFAR-10, 1 for grayscale sets.
The paper's retrieval discriminator at K = 16 has 1.41M trainable parameters; its generator
4.93M (C = 3), asserted in the tests.
"""

import keras
import numpy as np
from keras import layers, ops

from zoo.models.family import Family

IMAGE_SIZE = 32
PREPROCESS_MARGIN = 2  # image files are cropped to ink and fitted into 28x28 of the 32x32 input
VARIANTS = ("retrieval", "matching")
CODE_LAYER = "code"  # the LOW-DIM tap: its pre-activation signs are the bits
HIGH_LAYER = "high"  # the HIGH-DIM tap
LOGITS_LAYER = "logits"
LEAK = 0.2


# ----------------------------------------------------------------------------- weight norm


@keras.saving.register_keras_serializable(package="zoo")
def leaky_relu(x):
    """BinGAN's leaky ReLU (slope LEAK), a registered function so configurations round-trip."""
    return ops.leaky_relu(x, LEAK)


class _WeightNorm(layers.Layer):
    """Shared part of the weight-normalised layers: v (direction), g (scale), b (bias).

    `reduce_axes` are the kernel axes a unit's norm is taken over. `train_scale=False` freezes g
    (as the official code does everywhere but the final dense layers). `initialize_from(x)` is
    the data-dependent initialisation on a batch `x` of this layer's inputs.
    """

    reduce_axes = ()

    def __init__(self, units, train_scale=False, init_scale=1.0, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.train_scale = bool(train_scale)
        self.init_scale = float(init_scale)
        self.activation = keras.activations.get(activation)

    def _add_parameters(self, kernel_shape):
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape,
                                      initializer=keras.initializers.RandomNormal(stddev=0.05))
        self.scale = self.add_weight(name="scale", shape=(self.units,), initializer="ones",
                                     trainable=self.train_scale)
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def normalized_kernel(self, kernel=None):
        kernel = self.kernel if kernel is None else kernel
        norm = ops.sqrt(ops.sum(ops.square(kernel), axis=self.reduce_axes, keepdims=True))
        return kernel / ops.maximum(norm, 1e-12)

    def _linear(self, inputs, kernel):
        """The layer's linear map with a given (normalised) kernel, no scale or bias."""
        raise NotImplementedError

    def call(self, inputs):
        scale_shape = [1] * (len(self.kernel.shape))
        unit_axis = [a for a in range(len(self.kernel.shape)) if a not in self.reduce_axes][0]
        scale_shape[unit_axis] = self.units
        kernel = self.normalized_kernel() * ops.reshape(self.scale, scale_shape)
        return self.activation(self._linear(inputs, kernel) + self.bias)

    def initialize_from(self, inputs):
        """Set g and b so that the pre-activation on `inputs` has mean 0 and std init_scale."""
        inputs = ops.convert_to_tensor(np.asarray(inputs, np.float32))
        kernel = self.normalized_kernel(ops.cast(self.kernel, "float32"))
        t = ops.convert_to_numpy(self._linear(inputs, kernel)).astype(np.float64)
        t = t.reshape(-1, self.units)
        mean, std = t.mean(axis=0), t.std(axis=0)
        scale = self.init_scale / (std + 1e-8)
        self.scale.assign(scale.astype(np.float32))
        self.bias.assign((-mean * scale).astype(np.float32))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "train_scale": self.train_scale,
                "init_scale": self.init_scale,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="zoo")
class WeightNormDense(_WeightNorm):
    reduce_axes = (0,)

    def build(self, input_shape):
        self._add_parameters((int(input_shape[-1]), self.units))

    def _linear(self, inputs, kernel):
        return ops.matmul(inputs, ops.cast(kernel, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)


@keras.saving.register_keras_serializable(package="zoo")
class WeightNormConv2D(_WeightNorm):
    reduce_axes = (0, 1, 2)  # kernel [kh, kw, in, out]

    def __init__(self, units, kernel_size, strides=1, padding="same", **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_size, self.strides, self.padding = int(kernel_size), int(strides), padding

    def build(self, input_shape):
        self._add_parameters((self.kernel_size, self.kernel_size, int(input_shape[-1]),
                              self.units))

    def _linear(self, inputs, kernel):
        return ops.conv(inputs, ops.cast(kernel, inputs.dtype), strides=self.strides,
                        padding=self.padding)

    def compute_output_shape(self, input_shape):
        size = input_shape[1]
        if size is not None:
            size = (-(-size // self.strides) if self.padding == "same"
                    else (size - self.kernel_size) // self.strides + 1)
        return (input_shape[0], size, size, self.units)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


@keras.saving.register_keras_serializable(package="zoo")
class WeightNormConv2DTranspose(_WeightNorm):
    reduce_axes = (0, 1, 3)  # kernel [kh, kw, out, in]

    def __init__(self, units, kernel_size, strides=2, **kwargs):
        super().__init__(units, **kwargs)
        self.kernel_size, self.strides = int(kernel_size), int(strides)

    def build(self, input_shape):
        self._add_parameters((self.kernel_size, self.kernel_size, self.units,
                              int(input_shape[-1])))

    def _linear(self, inputs, kernel):
        return ops.conv_transpose(inputs, ops.cast(kernel, inputs.dtype), strides=self.strides,
                                  padding="same")

    def compute_output_shape(self, input_shape):
        size = None if input_shape[1] is None else input_shape[1] * self.strides
        return (input_shape[0], size, size, self.units)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides}


WEIGHT_NORM_LAYERS = (WeightNormDense, WeightNormConv2D, WeightNormConv2DTranspose)


# ----------------------------------------------------------------------------- builders


def _check(variant, num_bits, widths, channels):
    if variant not in VARIANTS:
        raise ValueError(f"Unknown BinGAN variant {variant!r}; expected one of {VARIANTS}.")
    if not isinstance(num_bits, (int, np.integer)) or num_bits < 1:
        raise ValueError(f"num_bits must be a positive integer, got {num_bits!r}.")
    if len(widths) != 2 or min(widths) < 1:
        raise ValueError(f"widths must be two positive channel counts, got {widths!r}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")


def _conv(x, filters, name, strides=1, kernel_size=3, padding="same"):
    return WeightNormConv2D(filters, kernel_size, strides=strides, padding=padding,
                            activation=leaky_relu, name=name)(x)


def build_discriminator(num_bits=32, variant="retrieval", widths=(96, 192), channels=1,
                        image_size=IMAGE_SIZE):
    """images [N, S, S, C] in [0, 1] -> [logits [N, 2], code [N, K], high [N, M], matched].

    `matched` is the layer G's feature matching compares: the code (retrieval) or the pooled
    128-d layer before the logits (matching)."""
    _check(variant, num_bits, widths, channels)
    first, second = widths
    images = keras.Input((image_size, image_size, channels), name="images")
    x = layers.Rescaling(255.0 / 128.0, offset=-127.5 / 128.0, name="scale_input")(images)
    x = layers.Dropout(0.2, name="drop0")(x)
    x = _conv(x, first, "conv1a")
    x = _conv(x, first, "conv1b")
    x = _conv(x, first, "conv1c", strides=2)
    x = layers.Dropout(0.5, name="drop1")(x)
    x = _conv(x, second, "conv2a")
    x = _conv(x, second, "conv2b")
    x = _conv(x, second, "conv2c", strides=2)
    x = layers.Dropout(0.5, name="drop2")(x)
    x = _conv(x, second, "conv3", padding="valid")  # 6x6 for S = 32
    if variant == "retrieval":
        x = _conv(x, second, "nin1", kernel_size=1)
        x = _conv(x, second, "nin2", kernel_size=1)
        high = layers.GlobalAveragePooling2D(name=HIGH_LAYER)(x)  # HIGH-DIM, M = second
        code = WeightNormDense(num_bits, train_scale=True, init_scale=0.1, name=CODE_LAYER)(high)
        matched = code  # G's feature matching uses the code layer
        logits = WeightNormDense(2, train_scale=True, init_scale=0.1, name=LOGITS_LAYER)(code)
    else:
        high = layers.Flatten(name=HIGH_LAYER)(x)  # HIGH-DIM: the 6 x 6 x second map
        x = _conv(x, num_bits, "code_nin", kernel_size=1)
        code = layers.GlobalAveragePooling2D(name=CODE_LAYER)(x)
        x = _conv(x, second, "nin2", kernel_size=1)
        matched = layers.GlobalAveragePooling2D(name="fm_pool")(x)
        logits = WeightNormDense(2, train_scale=True, init_scale=0.1,
                                 name=LOGITS_LAYER)(matched)
    # float32 outputs whatever the compute precision: the losses are computed in float32.
    outputs = [layers.Activation("linear", dtype="float32", name=f"out_{name}")(tensor)
               for name, tensor in (("logits", logits), ("code", code), ("high", high),
                                    ("matched", matched))]
    return keras.Model(images, outputs, name=f"bingan_{variant}_discriminator")


def build_generator(latent_dim=100, widths=(512, 256, 128), channels=1, image_size=IMAGE_SIZE,
                    init="official"):
    """z [N, latent_dim] ~ U(0, 1) -> images [N, S, S, C] in [0, 1] (Salimans' generator).

    init="official": weights drawn from N(0, 0.05) and no bias before a BatchNorm (Lasagne's
    nn.batch_norm deletes the layer's bias; BN's shift takes its place), as the official code;
    init="keras": Keras's Glorot weights and biases, the port before issue 14 (for its ablation).
    """
    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8, got {image_size}.")
    if init not in ("official", "keras"):
        raise ValueError(f"Expected init 'official' or 'keras'; got {init!r}.")

    def dense_options():  # a fresh initialiser per layer, as Keras draws one per layer
        if init == "keras":
            return {}
        return {"use_bias": False,
                "kernel_initializer": keras.initializers.RandomNormal(stddev=0.05)}

    base = image_size // 8
    latent = keras.Input((latent_dim,), name="latent")
    x = layers.Dense(base * base * widths[0], name="g_dense", **dense_options())(latent)
    x = layers.BatchNormalization(scale=False, name="g_dense_bn")(x)
    x = layers.ReLU(name="g_dense_relu")(x)
    x = layers.Reshape((base, base, widths[0]), name="g_reshape")(x)
    for index, filters in enumerate(widths[1:], start=1):
        x = layers.Conv2DTranspose(filters, 5, strides=2, padding="same",
                                   name=f"g_deconv{index}", **dense_options())(x)
        x = layers.BatchNormalization(scale=False, name=f"g_deconv{index}_bn")(x)
        x = layers.ReLU(name=f"g_deconv{index}_relu")(x)
    x = WeightNormConv2DTranspose(channels, 5, strides=2, train_scale=True, init_scale=0.1,
                                  activation="tanh", name="g_out")(x)
    images = layers.Rescaling(0.5, offset=0.5, dtype="float32", name="to_unit_range")(x)
    return keras.Model(latent, images, name="bingan_generator")


def build_gan(num_bits=32, variant="retrieval", widths=(96, 192), generator_widths=(512, 256, 128),
              latent_dim=100, channels=1, image_size=IMAGE_SIZE, generator_init="official"):
    """(generator, discriminator): the family's entry point for the registry."""
    return (build_generator(latent_dim, tuple(generator_widths), channels, image_size,
                            generator_init),
            build_discriminator(num_bits, variant, tuple(widths), channels, image_size))


def build_feature_extractor(discriminator):
    """The discriminator up to its LOW-DIM code layer (shares its weights): images -> [N, K]."""
    return keras.Model(discriminator.input, discriminator.get_layer(CODE_LAYER).output,
                       name=discriminator.name.replace("discriminator", "code"))


# ----------------------------------------------------------------------------- initialisation


def initialize(generator, discriminator, images, seed=0, count=500, latent_dim=None):
    """The data-dependent initialisation of every weight-normalised layer, in network order.

    D's layers see `count` real images (seeded choice) with dropout on; G's last layer sees
    generated images from `count` seeded latent vectors. Each layer is initialised on the outputs of the already
    initialised layers before it, as the official code's single init pass does.
    """
    rng = np.random.default_rng(seed)
    images = np.asarray(images, np.float32)
    batch = images[rng.choice(len(images), size=min(count, len(images)), replace=False)]
    latent_dim = latent_dim or int(generator.input.shape[-1])
    latent = rng.uniform(size=(count, latent_dim)).astype(np.float32)
    for model, inputs in ((discriminator, batch), (generator, latent)):
        for layer in model.layers:
            if isinstance(layer, WEIGHT_NORM_LAYERS):
                # Training mode, as in the official init pass: D's dropout is on, so the units
                # are centred for the statistics they see while training (with dropout off the
                # codes of a dropout-trained D start far from balanced).
                probe = keras.Model(model.input, layer.input)
                layer.initialize_from(np.asarray(probe(inputs, training=True), np.float32))


def centre_on_medians(discriminator, layer_names, images, batch_size=1000):
    """Move the bias of each named dense layer of D by its units' medians over `images` in
    inference mode (dropout off), so each unit's sign is 1 on half of them. Returns the list of
    medians subtracted, one per layer."""
    probe = keras.Model(discriminator.input,
                        [discriminator.get_layer(name).output for name in layer_names])
    images = np.asarray(images, np.float32)
    batches = []
    for start in range(0, len(images), batch_size):
        outputs = probe(images[start : start + batch_size], training=False)
        batches.append(outputs if isinstance(outputs, (list, tuple)) else [outputs])
    medians = []
    for index, name in enumerate(layer_names):
        values = np.concatenate([np.asarray(batch[index]) for batch in batches])
        median = np.median(values, axis=0).astype(np.float32)
        layer = discriminator.get_layer(name)
        layer.bias.assign(np.asarray(layer.bias.numpy(), np.float32) - median)
        medians.append(median)
    return medians


def calibrate(discriminator, images, batch_size=1000):
    """Centre each code unit on its median over `images` in inference mode (dropout off).

    D is trained with dropout on, and its units are initialised for that regime; with dropout
    off (how the encoder runs) the code pre-activations shift, so a sign threshold at 0 can
    leave bits nearly constant. Moving the code layer's bias by the per-bit median makes each
    bit 1 on half of the training images (the "median threshold" of the serving spec). Returns
    the medians that were subtracted.
    """
    return centre_on_medians(discriminator, [CODE_LAYER], images, batch_size)[0]


FAMILY = Family("bingan", build_gan, build_feature_extractor, image_size=IMAGE_SIZE,
                margin=PREPROCESS_MARGIN, training="zoo.training.bingan", calibrate=calibrate,
                hash_head="sign")

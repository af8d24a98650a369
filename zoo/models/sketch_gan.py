"""sketch-GAN and thin-GAN (Creswell & Bharath, "Adversarial Training for Sketch Retrieval",
ECCV 2016 workshops, arXiv:1607.02748).

Two small DCGAN-style pairs for 64x64 white-on-black line drawings. The encoder is the
discriminator without its last layer: the flattened post-ReLU 1024-d feature, L2-normalised,
compared by dot product. sketch-GAN's 9x9 first filter and 5x5 strided filters make it more
tolerant of small shifts, rotations and rescalings than thin-GAN's 3x3 filters.

Layer tables follow ../shared/specs/architectures.md (the only shape-consistent reading of the
paper's Table 1). Trainable parameter counts, asserted in the tests:

    thin-GAN   G 27,505  D 25,633  G+D 53,138  encoder 24,608
    sketch-GAN G 22,225  D 17,825  G+D 40,050  encoder 16,800

The discriminator's last layer returns a logit; the paper's sigmoid is applied inside the loss
(binary cross-entropy from logits), which is the same function and numerically safer.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from zoo.data.images import DEFAULT_MARGIN
from zoo.models.family import Family

IMAGE_SHAPE = (64, 64, 1)
ARCHITECTURES = ("sketch", "thin")
FEATURES_LAYER = "features"


class _BlockedConv2D(layers.Conv2D):
    """A stride-1 "same" channels_last Conv2D with an odd square kernel, one of whose
    convolutions is computed on space-to-depth blocks of `block` x `block` pixels
    (blocked_conv2d). H and W must be multiples of `block`."""

    def __init__(self, filters, kernel_size, block=4, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.block = int(block)
        if self.strides != (1, 1) or self.padding != "same" or self.dilation_rate != (1, 1) \
                or self.groups != 1 or self.data_format != "channels_last" \
                or self.kernel_size[0] != self.kernel_size[1] or self.kernel_size[0] % 2 == 0:
            raise ValueError(f"{type(self).__name__} computes stride-1 'same' channels_last "
                             "convolutions with an odd square kernel only.")
        self._selection = _block_selection(self.kernel_size[0], self.block)

    def build(self, input_shape):
        if input_shape[1] % self.block or input_shape[2] % self.block:
            raise ValueError(f"{type(self).__name__} with block {self.block} needs a height and "
                             f"width that are multiples of it; got {input_shape[1:3]}.")
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="zoo")
class SpaceToDepthConv2D(_BlockedConv2D):
    """A stride-1 "same" Conv2D computed on a space-to-depth view of its input: the same
    kernel variable, the same outputs (up to float rounding), and about 3x faster for the
    generator's last layer (9 x 9, 16 channels to 1), a shape oneDNN computes poorly (issue 16:
    it was a fifth of a sketch-GAN+ training step; `python -m benchmarks.training_speed` measures it).

    The input [N, H, W, C] is viewed as [N, H/b, W/b, b*b*C] (tf.nn.space_to_depth), the
    k x k kernel becomes the equivalent small kernel over blocks with b*b*filters outputs (a
    fixed 0/1 selection, differentiable in the kernel), and depth_to_space puts the outputs
    back. H and W must be multiples of `block`.
    """

    def convolution_op(self, inputs, kernel):
        return blocked_conv2d(inputs, kernel, self.block, self._selection)


def blocked_conv2d(inputs, kernel, block, selection):
    """tf.nn.conv2d(inputs, kernel, 1, "SAME") computed on the space-to-depth view of `inputs`
    (SpaceToDepthConv2D); `selection` = _block_selection(kernel size, block)."""
    size = selection.shape[0]
    channels, filters = kernel.shape[2], kernel.shape[3]
    blocked = tf.reshape(
        tf.einsum("abiouv,uvcd->abicod", tf.cast(selection, kernel.dtype), kernel),
        [size, size, block * block * channels, block * block * filters])
    outputs = tf.nn.conv2d(tf.nn.space_to_depth(inputs, block), blocked, 1, "SAME")
    return tf.nn.depth_to_space(outputs, block)


@keras.saving.register_keras_serializable(package="zoo")
class SpaceToDepthInputGradientConv2D(_BlockedConv2D):
    """A stride-1 "same" Conv2D on a few input channels (a discriminator's first layer) whose
    gradient with respect to its input is computed as SpaceToDepthConv2D computes its forward
    pass. That gradient is a convolution from the layer's filters back to its few channels (9 x
    9, 16 channels to 1 for sketch-GAN+'s d0): the shape oneDNN computes poorly, and in
    training it is what the generator's gradient passes through. The forward pass and the
    kernel's gradient are TensorFlow's, so outputs, weights and exports are the plain Conv2D's;
    only the input gradient's summation order differs. Called with training=False (encoders,
    exports) it is the plain Conv2D. `input_gradient_by_blocks = False` turns it off:
    `python -m benchmarks.training_speed` measured sketch-GAN+'s bf16 step at 0.645 s without
    and 0.605 s with it (the gradient itself about 4x faster).
    """

    input_gradient_by_blocks = True

    def __init__(self, filters, kernel_size, block=4, **kwargs):
        super().__init__(filters, kernel_size, block, **kwargs)
        self._training = False

    def call(self, inputs, training=None):
        self._training = bool(training)
        try:
            return super().call(inputs)
        finally:
            self._training = False

    def convolution_op(self, inputs, kernel):
        if not (self._training and self.input_gradient_by_blocks):
            return super().convolution_op(inputs, kernel)
        block, selection = self.block, self._selection
        plain = super().convolution_op

        @tf.custom_gradient
        def convolution(images, weights):
            def gradient(upstream):
                # the input gradient: a "same" convolution of the upstream gradient with the
                # kernel flipped in space and with its channel axes swapped
                adjoint = tf.transpose(tf.reverse(weights, [0, 1]), [0, 1, 3, 2])
                wrt_images = blocked_conv2d(upstream, adjoint, block, selection)
                wrt_weights = tf.raw_ops.Conv2DBackpropFilter(
                    input=images, filter_sizes=tf.shape(weights), out_backprop=upstream,
                    strides=[1, 1, 1, 1], padding="SAME")
                return wrt_images, wrt_weights

            return plain(images, weights), gradient

        # a tensor, not the variable: the gradient reaches the variable through the read
        return convolution(inputs, tf.convert_to_tensor(kernel))


def _block_selection(kernel_size, block):
    """S [K, K, b*b, b*b, k, k] of 0/1: S[a, c, i, o, u, v] = 1 where tap (u, v) of output pixel
    o of a block reads input pixel i of the block at offset (a, c) - K // 2 (K = the block
    kernel's size, odd so that "same" padding lines up)."""
    half = kernel_size // 2
    low, high = -half // block, (block - 1 + half) // block
    if low != -high:
        raise ValueError(f"A {kernel_size}x{kernel_size} kernel has no centred block kernel for "
                         f"block {block}.")
    selection = np.zeros((high - low + 1,) * 2 + (block * block,) * 2 + (kernel_size,) * 2,
                         np.float32)
    for p in range(block):
        for q in range(block):
            for u in range(kernel_size):
                for v in range(kernel_size):
                    dy, dx = p + u - half, q + v - half
                    selection[dy // block - low, dx // block - low,
                              (dy % block) * block + dx % block, p * block + q, u, v] = 1.0
    return selection


def _check_architecture(architecture):
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {architecture!r}; expected one of {ARCHITECTURES}."
        )


# ----------------------------------------------------------------------------- building blocks


def _conv_bn_relu(x, filters, kernel_size, name):
    """Strided convolution, BatchNorm, ReLU: the repeated discriminator block."""
    x = layers.Conv2D(filters, kernel_size, strides=2, padding="same", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _up_bn_relu(x, filters, kernel_size, name):
    """Fractionally strided convolution (x2), BatchNorm, ReLU: the repeated generator block."""
    x = layers.Conv2DTranspose(
        filters, kernel_size, strides=2, padding="same", name=f"{name}_deconv"
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


# ----------------------------------------------------------------------------- model builders


def build_discriminator(architecture="sketch"):
    """Discriminator: image [N, 64, 64, 1] in [0, 1] -> real/fake logit [N, 1].

    The layer named ``features`` is the encoder's output (1024-d, post-ReLU, flattened).
    """
    _check_architecture(architecture)
    images = keras.Input(IMAGE_SHAPE, name="images")
    if architecture == "thin":
        x = layers.Conv2D(8, 3, strides=2, padding="same", name="d0_conv")(images)
        x = layers.ReLU(name="d0_relu")(x)
        for index, filters in enumerate((16, 32, 64), start=1):
            x = _conv_bn_relu(x, filters, 3, name=f"d{index}")
    else:
        x = layers.Conv2D(8, 9, strides=1, padding="same", name="d0_conv")(images)
        x = layers.ReLU(name="d0_relu")(x)
        for index in range(1, 4):
            x = _conv_bn_relu(x, 16, 5, name=f"d{index}")
    features = layers.Flatten(name=FEATURES_LAYER)(x)
    logit = layers.Dense(1, name="real_fake_logit")(features)
    return keras.Model(images, logit, name=f"{architecture}_discriminator")


def build_generator(architecture="sketch", latent_dim=2):
    """Generator: latent z [N, latent_dim] ~ N(0, 1) -> image [N, 64, 64, 1] in [0, 1]."""
    _check_architecture(architecture)
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}.")
    latent = keras.Input((latent_dim,), name="latent")
    if architecture == "thin":
        x = layers.Dense(4 * 4 * 64, activation="relu", name="g0_dense")(latent)
        x = layers.Reshape((4, 4, 64), name="g0_reshape")(x)
        for index, filters in enumerate((32, 16, 8), start=1):
            x = _up_bn_relu(x, filters, 3, name=f"g{index}")
        images = layers.Conv2DTranspose(
            1, 3, strides=2, padding="same", activation="sigmoid", name="g4_deconv"
        )(x)
    else:
        x = layers.Dense(4 * 4 * 8, activation="relu", name="g0_dense")(latent)
        x = layers.Reshape((4, 4, 8), name="g0_reshape")(x)
        x = _up_bn_relu(x, 16, 3, name="g1")
        for index in range(2, 5):
            x = _up_bn_relu(x, 16, 5, name=f"g{index}")
        images = SpaceToDepthConv2D(
            1, 9, block=4, strides=1, padding="same", activation="sigmoid", name="g5_conv"
        )(x)
    return keras.Model(latent, images, name=f"{architecture}_generator")


def build_feature_extractor(discriminator):
    """The discriminator without its last layer (shares its weights): images -> [N, 1024]."""
    return keras.Model(
        discriminator.input,
        discriminator.get_layer(FEATURES_LAYER).output,
        name=discriminator.name.replace("discriminator", "features"),
    )


def build_gan(architecture="sketch", latent_dim=2):
    """(generator, discriminator) of one architecture: the family's entry point for the registry."""
    return build_generator(architecture, latent_dim), build_discriminator(architecture)


FAMILY = Family("sketch_gan", build_gan, build_feature_extractor, image_size=IMAGE_SHAPE[0],
                margin=DEFAULT_MARGIN, training="zoo.training.gan", transfer=True)

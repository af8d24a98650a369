"""sketch-GAN+: the sketch-GAN discriminator made into a better encoder (issue 8).

Same shape of network as sketch-GAN (a 9x9 stride-1 filter bank, then 5x5 stride-2 blocks,
64x64 white-on-black line drawings, a DCGAN-style generator), with the changes measured in
MODELS.md ("sketch-GAN+ ablation"):

- wider discriminator blocks, LeakyReLU and no BatchNorm, so the encoder is deterministic and
  needs no statistics refitted on real data;
- a pooled multi-layer read-out: every stride-2 block's feature map average-pooled to a 4x4 grid,
  each L2-normalised, then concatenated (shift-tolerant, keeps coarse layout);
- a projection head (2-layer MLP) for the contrastive auxiliary task of the training wrapper
  (zoo/training/sketch_gan_plus.py); like SimCLR, the encoder reads out *before* the head;
- a whitening layer (PCA whitening fitted on the training corpus by `calibrate`, identity
  until then), applied before the encoder's L2 normalisation.

The discriminator has three outputs: real/fake logit [N, 1], projection [N, P] and the
whitened embedding [N, E]. The generator takes a larger latent than sketch-GAN's dz = 2.
"""

import keras
import numpy as np
from keras import layers

from zoo.data.images import DEFAULT_MARGIN
from zoo.models.family import Family
from zoo.models.sketch_gan import IMAGE_SHAPE, SpaceToDepthInputGradientConv2D
from zoo.models.sketch_gan import build_generator as build_sketch_generator

FEATURES_LAYER = "features"
READOUT_GRID = 4  # each block's map is average-pooled to READOUT_GRID x READOUT_GRID


@keras.saving.register_keras_serializable(package="zoo")
class L2Normalize(layers.Layer):
    """x / ||x|| along the last axis (keras.ops.normalize): a serialisable layer, not a Lambda,
    so that configurations round-trip."""

    def call(self, inputs):
        return keras.ops.normalize(inputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="zoo")
class Whitening(layers.Layer):
    """(x - mean) @ projection with fixed (non-trainable) weights. Until `calibrate` fits it,
    it keeps the first output_dim read-out features (an identity matrix cut to shape)."""

    def __init__(self, input_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        if self.output_dim > self.input_dim:
            raise ValueError(f"Whitening output_dim ({output_dim}) must be <= input_dim "
                             f"({input_dim}).")
        self.mean = self.add_weight(shape=(self.input_dim,), initializer="zeros",
                                    trainable=False, name="mean")
        self.projection = self.add_weight(
            shape=(self.input_dim, self.output_dim), trainable=False, name="projection",
            initializer=keras.initializers.Identity())

    def call(self, inputs):
        return keras.ops.matmul(inputs - keras.ops.cast(self.mean, inputs.dtype),
                                keras.ops.cast(self.projection, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim,
                "output_dim": self.output_dim}


def pooled_unit_readout(block, name=None):
    """One block's part of the read-out: its map average-pooled to a READOUT_GRID x READOUT_GRID
    grid, flattened and L2-normalised (also applied to faithful discriminators by the ablation)."""
    size = block.shape[1] // READOUT_GRID
    x = layers.AveragePooling2D(size, name=name and f"{name}_pool")(block)
    x = layers.Flatten(name=name and f"{name}_flat")(x)
    return L2Normalize(name=name and f"{name}_unit")(x)


def build_discriminator(widths=(16, 32, 64, 128), projection_dim=64, embedding_dim=256):
    """images [N, 64, 64, 1] in [0, 1] -> (logit [N, 1], projection [N, P], embedding [N, E]).

    `widths` are the 9x9 stride-1 layer's filters, then each 5x5 stride-2 block's.
    """
    widths = tuple(int(w) for w in widths)
    if len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"Expected four positive widths (9x9 layer, three 5x5 blocks); got "
                         f"{widths}.")
    images = keras.Input(IMAGE_SHAPE, name="images")
    # A Conv2D whose input gradient (the generator's path in training) is computed faster.
    x = SpaceToDepthInputGradientConv2D(widths[0], 9, padding="same", name="d0_conv")(images)
    x = layers.LeakyReLU(0.2, name="d0_relu")(x)
    pooled = []
    for index, filters in enumerate(widths[1:], start=1):
        x = layers.Conv2D(filters, 5, strides=2, padding="same", name=f"d{index}_conv")(x)
        x = layers.LeakyReLU(0.2, name=f"d{index}_relu")(x)
        pooled.append(pooled_unit_readout(x, name=f"d{index}"))
    readout = layers.Concatenate(name="readout")(pooled)
    logit = layers.Dense(1, name="real_fake_logit")(layers.Flatten(name="d3_flat_all")(x))
    hidden = layers.Dense(256, name="projection_hidden")(readout)
    hidden = layers.ReLU(name="projection_relu")(hidden)
    projection = layers.Dense(projection_dim, name="projection")(hidden)
    embedding_dim = min(int(embedding_dim), readout.shape[-1])
    features = Whitening(readout.shape[-1], embedding_dim, name=FEATURES_LAYER)(readout)
    return keras.Model(images, [logit, projection, features], name="sketch_plus_discriminator")


def build_generator(latent_dim=32):
    """sketch-GAN's generator with a larger latent: z [N, latent_dim] -> image [N, 64, 64, 1]."""
    return build_sketch_generator("sketch", latent_dim)


def build_gan(widths=(16, 32, 64, 128), latent_dim=32, projection_dim=64, embedding_dim=256):
    return (build_generator(latent_dim),
            build_discriminator(widths, projection_dim, embedding_dim))


def build_feature_extractor(discriminator):
    """images -> whitened read-out [N, E] (the Encoder L2-normalises it)."""
    return keras.Model(discriminator.input, discriminator.get_layer(FEATURES_LAYER).output,
                       name="sketch_plus_features")


# The blocks that run in int8 for precision="int8" (zoo.quantization): the three 5x5 stride-2
# convolutions, 88% of the multiply-adds. The 9x9 layer's single input channel suits oneDNN's
# int8 kernels badly (measured: slower than bfloat16), so it stays in bfloat16 with the read-out.
INT8_BLOCKS = ("d1", "d2", "d3")


def build_int8_feature_extractor(discriminator, fast_discriminator, calibration_images):
    """images -> whitened read-out [N, E], the INT8_BLOCKS in int8 (zoo.quantization) and the
    rest computed by `fast_discriminator` (the same weights built in bfloat16).

    `discriminator` is the float32 network: its kernels are quantised, and its activations on
    `calibration_images` [N, 64, 64, 1] fix each block's input and output ranges."""
    from zoo.quantization import QuantizedConvLeakyReLU, calibrate_ranges

    blocks = ("d0",) + INT8_BLOCKS
    names = {f"{block}_relu": discriminator.get_layer(f"{block}_relu").output  # inputs
             for block in blocks[:-1]}
    names.update({f"{block}_conv": discriminator.get_layer(f"{block}_conv").output  # outputs
                  for block in INT8_BLOCKS})
    ranges = calibrate_ranges(keras.Model(discriminator.input, names), calibration_images)
    images = keras.Input(IMAGE_SHAPE, name="images")
    x = fast_discriminator.get_layer("d0_relu")(fast_discriminator.get_layer("d0_conv")(images))
    previous, pooled = "d0", []
    for block in INT8_BLOCKS:
        conv = discriminator.get_layer(f"{block}_conv")
        x = QuantizedConvLeakyReLU(
            conv.kernel.numpy(), conv.bias.numpy(), ranges[f"{previous}_relu"],
            ranges[f"{block}_conv"], strides=conv.strides[0], padding=conv.padding,
            negative_slope=float(discriminator.get_layer(f"{block}_relu").negative_slope),
            name=f"{block}_int8")(x)
        pooled.append(pooled_unit_readout(x, name=f"{block}_int8"))  # float32, as x
        previous = block
    readout = fast_discriminator.get_layer("readout")(pooled)
    features = fast_discriminator.get_layer(FEATURES_LAYER)(readout)
    return keras.Model(images, features, name="sketch_plus_features_int8")


WHITENING_EPSILON = 0.03


def calibrate(discriminator, images, batch_size=512, epsilon=WHITENING_EPSILON):
    """Fit the whitening layer on `images` (the training corpus): PCA whitening of the read-out,
    keeping the layer's output_dim leading components, each scaled by 1/sqrt(eigenvalue + eps
    * largest eigenvalue). The floor keeps small components from being blown up: of
    eps in {0.001, 0.01, 0.03, 0.1}, 0.03 gave the best balance of one-shot error, retrieval and
    invariance (MODELS.md, sketch-GAN+ ablation); 0.001 made the encoder less invariant."""
    whitening = discriminator.get_layer(FEATURES_LAYER)
    probe = keras.Model(discriminator.input, discriminator.get_layer("readout").output)
    readout = np.concatenate([
        keras.ops.convert_to_numpy(probe(images[start:start + batch_size], training=False))
        for start in range(0, len(images), batch_size)]).astype(np.float64)
    mean, projection = whitening_transform(readout, whitening.output_dim, epsilon)
    whitening.mean.assign(mean.astype(np.float32))
    whitening.projection.assign(projection.astype(np.float32))


def whitening_transform(features, output_dim, epsilon=WHITENING_EPSILON):
    """(mean [D], projection [D, output_dim]) of PCA whitening fitted on features [N, D]."""
    features = np.asarray(features, np.float64)
    if len(features) < 2:
        raise ValueError("PCA whitening needs at least two feature vectors.")
    mean = features.mean(axis=0)
    covariance = np.cov(features - mean, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:output_dim]
    eigenvalues = np.maximum(eigenvalues[order], 0.0)
    # Fix each component's sign so the transform does not depend on the eigen-solver.
    eigenvectors = eigenvectors[:, order]
    eigenvectors *= np.where(eigenvectors[np.abs(eigenvectors).argmax(axis=0),
                                          np.arange(len(order))] < 0, -1.0, 1.0)
    return mean, eigenvectors / np.sqrt(eigenvalues + epsilon * eigenvalues.max())


FAMILY = Family("sketch_gan_plus", build_gan, build_feature_extractor, image_size=IMAGE_SHAPE[0],
                margin=DEFAULT_MARGIN, training="zoo.training.sketch_gan_plus",
                calibrate=calibrate, transfer=True,
                build_int8_feature_extractor=build_int8_feature_extractor)

"""BinGAN+ (issue 14, part 2): BinGAN's discriminator with binarised code layers, trained with
a contrastive task on the codes as well as the GAN game and BinGAN's two regularisers.

The trunk is the faithful BinGAN retrieval discriminator (zoo/models/bingan.py: weight-normalised
convolutions with a data-dependent initialisation, leaky ReLU, the mean-pooled HIGH-DIM layer),
with two changes, both listed in MODELS.md:

* several LOW-DIM code layers on the same HIGH-DIM layer (default 16, 32 and 64 bits), trained
  together, so that one training run gives the 16-, 32- and 64-bit entries; an entry's encoder
  reads the head of its own length (`num_bits`, kept in the model's name: the layers, and so
  the weights files, are the same whatever `num_bits` is);
* the real/fake logits come from the HIGH-DIM layer rather than from the (now several) codes,
  and the dropout rates are architecture arguments (the contrastive task wants milder ones).

Three entries built with the same `heads` and different `num_bits` have the same weights, so
their weights files are interchangeable. Images [N, 32, 32, C] in [0, 1], scaled inside D as
BinGAN's are; the generator is BinGAN's (`zoo.models.bingan.build_generator`).
"""

import re

import keras
from keras import layers

from zoo.models import bingan
from zoo.models.bingan import (  # noqa: F401  (the family's shared parts)
    HIGH_LAYER, IMAGE_SIZE, LOGITS_LAYER, PREPROCESS_MARGIN, WeightNormDense, initialize)
from zoo.models.family import Family

HEADS = (16, 32, 64)
NAME = "bingan_plus_discriminator_{}bit"  # the model name records the entry's own head


def head_layer(bits):
    return f"code_{bits}"


def _check(num_bits, heads, dropout):
    heads = tuple(int(k) for k in heads)
    if not heads or len(set(heads)) != len(heads) or min(heads) < 1:
        raise ValueError(f"heads must be distinct positive code lengths, got {heads!r}.")
    if num_bits not in heads:
        raise ValueError(f"num_bits={num_bits!r} must be one of the code heads {heads}.")
    if len(dropout) != 3 or not all(0 <= rate < 1 for rate in dropout):
        raise ValueError(f"dropout must be three rates in [0, 1), got {dropout!r}.")
    return heads


def build_discriminator(num_bits=32, heads=HEADS, widths=(32, 64), channels=1,
                        dropout=(0.0, 0.2, 0.2), image_size=IMAGE_SIZE, high_grid=1):
    """images -> [logits [N, 2], high [N, M], code_<K> [N, K] for K in heads].

    The HIGH-DIM layer is the last feature map average-pooled to a high_grid x high_grid grid
    and flattened (M = widths[1] x high_grid^2; 1 = BinGAN's global average). Every code head
    is a weight-normalised dense layer on it (pre-activations start with std 1 after the
    data-dependent initialisation); bit k is [code_k >= 0]."""
    heads = _check(num_bits, heads, dropout)
    if len(widths) != 2 or min(widths) < 1:
        raise ValueError(f"widths must be two positive channel counts, got {widths!r}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
    first, second = widths
    images = keras.Input((image_size, image_size, channels), name="images")
    x = layers.Rescaling(255.0 / 128.0, offset=-127.5 / 128.0, name="scale_input")(images)
    if dropout[0]:
        x = layers.Dropout(dropout[0], name="drop0")(x)
    for name, filters, strides in (("conv1a", first, 1), ("conv1b", first, 1),
                                   ("conv1c", first, 2)):
        x = bingan._conv(x, filters, name, strides=strides)
    if dropout[1]:
        x = layers.Dropout(dropout[1], name="drop1")(x)
    for name, filters, strides in (("conv2a", second, 1), ("conv2b", second, 1),
                                   ("conv2c", second, 2)):
        x = bingan._conv(x, filters, name, strides=strides)
    if dropout[2]:
        x = layers.Dropout(dropout[2], name="drop2")(x)
    x = bingan._conv(x, second, "conv3", padding="valid")
    x = bingan._conv(x, second, "nin1", kernel_size=1)
    x = bingan._conv(x, second, "nin2", kernel_size=1)
    if high_grid == 1:
        high = layers.GlobalAveragePooling2D(name=HIGH_LAYER)(x)
    else:
        size = int(x.shape[1])
        if size % high_grid:
            raise ValueError(f"high_grid={high_grid} must divide the last map's side {size}.")
        x = layers.AveragePooling2D(size // high_grid, name="high_pool")(x)
        high = layers.Flatten(name=HIGH_LAYER)(x)
    logits = WeightNormDense(2, train_scale=True, init_scale=0.1, name=LOGITS_LAYER)(high)
    tensors = [("logits", logits), ("high", high),
               *((head_layer(bits), WeightNormDense(bits, train_scale=True,
                                                    name=head_layer(bits))(high))
                 for bits in heads)]
    # float32 outputs whatever the compute precision: the losses are computed in float32.
    outputs = [layers.Activation("linear", dtype="float32", name=f"out_{name}")(tensor)
               for name, tensor in tensors]
    return keras.Model(images, outputs, name=NAME.format(num_bits))


def build_gan(num_bits=32, heads=HEADS, widths=(32, 64), generator_widths=(128, 64, 32),
              latent_dim=100, channels=1, dropout=(0.0, 0.2, 0.2), image_size=IMAGE_SIZE,
              high_grid=1):
    """(generator, discriminator): the family's entry point for the registry."""
    return (bingan.build_generator(latent_dim, tuple(generator_widths), channels, image_size),
            build_discriminator(num_bits, tuple(heads), tuple(widths), channels,
                                tuple(dropout), image_size, high_grid))


def build_feature_extractor(discriminator):
    """The discriminator up to its entry's code head (shares its weights): images -> [N, K]."""
    match = re.fullmatch(NAME.format(r"(\d+)"), discriminator.name)
    if not match:
        raise ValueError(f"Expected a BinGAN+ discriminator (named {NAME.format('K')!r}), got "
                         f"{discriminator.name!r}.")
    bits = int(match.group(1))
    return keras.Model(discriminator.input, discriminator.get_layer(head_layer(bits)).output,
                       name=f"bingan_plus_code_{bits}")


def code_heads(discriminator):
    """The code lengths of a BinGAN+ discriminator's heads, shortest first."""
    return sorted(int(layer.name.split("_")[1]) for layer in discriminator.layers
                  if layer.name.startswith("code_") and isinstance(layer, WeightNormDense))


def calibrate(discriminator, images, batch_size=1000):
    """Centre every code head's units on their median over `images` (dropout off), as
    `zoo.models.bingan.calibrate` does for BinGAN's single code layer, so each bit is 1 on half
    of the training images. All heads are centred, so entries that differ only in `num_bits`
    keep identical weights. Returns {bits: medians subtracted}."""
    heads = code_heads(discriminator)
    medians = bingan.centre_on_medians(discriminator, [head_layer(k) for k in heads], images,
                                       batch_size)
    return dict(zip(heads, medians))


FAMILY = Family("bingan_plus", build_gan, build_feature_extractor, image_size=IMAGE_SIZE,
                margin=PREPROCESS_MARGIN, training="zoo.training.bingan_plus",
                calibrate=calibrate, hash_head="sign")

"""The contract of an architecture family, declared once in its module (`FAMILY`).

Code that works across families (loading, training, calibration, hash heads, image-file
preprocessing, transfer) asks a `Family` what it can do; nothing probes a module's attributes or
checks a family's name. Adding a family is one module under zoo/models/ (builders + FAMILY), one
training module under zoo/training/ (its `TRAINING` wrapper) and its line in FAMILIES.
"""

import dataclasses
import importlib
from typing import Callable, Optional

import numpy as np

HASH_HEADS = ("itq", "sign")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    # (**architecture) -> (generator, discriminator)
    build_gan: Callable
    # discriminator -> Keras model: images [N, S, S, 1] -> embeddings [N, D] (shares weights)
    build_feature_extractor: Callable
    image_size: int  # S: the square single-channel input side
    margin: int  # px of black kept around the ink when image files are preprocessed
    # Module whose `TRAINING` (zoo.training.wrapper.TrainingWrapper) trains this family.
    training: str = "zoo.training.gan"
    # (discriminator, images) -> anything: run on the float32 networks after training, on the
    # training corpus (BinGAN: centre each code bit on its median). None: nothing to calibrate.
    calibrate: Optional[Callable] = None
    # "itq": the shipped head is fitted on the embeddings after training (PCA + ITQ, or a learned
    # code head when the registry entry has one); "sign": the bits are the signs of the code
    # layer the encoder outputs (BinGAN), whatever the weights.
    hash_head: str = "itq"
    transfer: bool = False  # `zoo transfer` can continue its training on a new archive
    # (float32 discriminator, the same weights built in bfloat16, calibration images) -> the
    # feature extractor of precision="int8" (zoo.quantization). None: no int8 path.
    build_int8_feature_extractor: Optional[Callable] = None

    def __post_init__(self):
        if self.hash_head not in HASH_HEADS:
            raise ValueError(f"Family {self.name!r}: hash_head must be one of {HASH_HEADS}, got "
                             f"{self.hash_head!r}.")

    def training_wrapper(self):
        """The family's TrainingWrapper (imported on first use: TensorFlow training code)."""
        return importlib.import_module(self.training).TRAINING

    def sign_hash_head(self, num_bits):
        """The "sign" families' binarisation as a LinearHash: bit k = [code_k >= 0] (no centring;
        applied to the L2-normalised code it gives the same bits)."""
        from zoo.hashing import LinearHash

        if self.hash_head != "sign":
            raise ValueError(f"Family {self.name!r} hashes with a fitted head, not with signs.")
        return LinearHash(np.zeros(num_bits, np.float32), np.eye(num_bits, dtype=np.float32),
                          method="sign of the code layer")

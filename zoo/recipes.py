"""Training recipes: small, typed, frozen; unknown keys are rejected. No TensorFlow import."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A GAN training recipe. Defaults are the paper's (Alg. 1, section 4)."""

    iterations: int = 2000  # generator updates
    batch_size: int = 128
    learning_rate: float = 0.002  # paper; the authors' later code uses 2e-4 (see STABLE)
    beta_1: float = 0.5
    d_steps: int = 1  # k: discriminator updates per generator update
    latent_dim: int = 2  # dz
    seed: int = 0
    checkpoint_every: int = 100
    sample_every: int = 250
    # Compute precision while training: "mixed_bfloat16" (bf16 matmuls/convolutions with float32
    # weights; about 2x faster on CPUs with AMX/AVX512-BF16) or "float32". Encoders run in float32.
    precision: str = "mixed_bfloat16"

    def __post_init__(self):
        for field in ("iterations", "batch_size", "d_steps", "latent_dim",
                      "checkpoint_every", "sample_every"):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Recipe.{field} must be a positive integer, got {value!r}.")
        if not 0 < self.learning_rate < 1 or not 0 <= self.beta_1 < 1:
            raise ValueError(
                f"Expected 0 < learning_rate < 1 and 0 <= beta_1 < 1, got "
                f"{self.learning_rate} and {self.beta_1}."
            )
        if self.precision not in ("float32", "mixed_bfloat16"):
            raise ValueError(f"Recipe.precision must be 'float32' or 'mixed_bfloat16', got "
                             f"{self.precision!r}.")
        if self.iterations % self.checkpoint_every:
            raise ValueError(
                f"Recipe.iterations ({self.iterations}) must be a multiple of checkpoint_every "
                f"({self.checkpoint_every}) so that a resumed run ends where a fresh one does."
            )

    @classmethod
    def from_dict(cls, values):
        """Build from a dict, rejecting unknown keys (typos must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown recipe keys {unknown}; known keys: {sorted(known)}.")
        return cls(**values)

    def to_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return self.from_dict({**self.to_dict(), **changes})


PAPER = Recipe()
STABLE = Recipe(learning_rate=2e-4)  # the authors' follow-up code: Adam 2e-4, beta_1 0.5


@dataclasses.dataclass(frozen=True)
class BinGANRecipe(Recipe):
    """A BinGAN recipe; defaults are the paper's (400 epochs of CIFAR-10's 50,000 images in
    batches of 25; Adam 3e-4, beta_1 0.5). iterations = D and G updates (one each per step)."""

    iterations: int = 800000
    batch_size: int = 25
    learning_rate: float = 3e-4
    beta_1: float = 0.5
    latent_dim: int = 100
    checkpoint_every: int = 2000
    sample_every: int = 10000
    lambda_dmr: float = 0.05
    lambda_bre: float = 0.001  # retrieval; the matching variant uses 0.01
    gamma: float = 0.001  # relaxed code b = f / (|f| + gamma)
    beta: float = 2.0  # BRE's pair weights w_ij = exp(-|h_i.h_j| / (M beta))
    # lr decays linearly to 0 over this last fraction of the run. The official code's schedule
    # lr * min(3 - epoch / 400, 1) never decays within its 400 epochs: 0 is faithful.
    decay_fraction: float = 0.0
    # Centre the high-dim features on the batch mean before taking signs (h = sign(f - mean f)).
    # False is the official code: its mean-pooled leaky-ReLU features are nearly all positive,
    # so h_i.h_j / M is close to 1 for every pair and DMR pulls all codes together.
    center_high: bool = False
    init_count: int = 500  # images of the data-dependent initialisation

    def __post_init__(self):
        super().__post_init__()
        if self.d_steps != 1:
            raise ValueError("BinGAN recipes update D and G once a step (d_steps must be 1).")
        for field in ("lambda_dmr", "lambda_bre", "gamma", "beta"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"BinGANRecipe.{field} must be >= 0, got {getattr(self, field)}.")
        object.__setattr__(self, "center_high", bool(self.center_high))
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}.")


@dataclasses.dataclass(frozen=True)
class BinGANPlusRecipe(BinGANRecipe):
    """A BinGAN+ recipe (zoo/training/bingan_plus.py): BinGAN's game and regularisers on
    every code head, plus augmentation and a contrastive task on the codes of two views. The
    defaults are the shipped recipe; each ablation row changes one field."""

    # 16 epochs of the 60,000 training images in batches of 128 (468 steps an epoch; a checkpoint
    # and a curve point each), so `benchmarks.bingan_curve NAME --epochs 16 --evals-per-epoch 1`
    # runs exactly this recipe. Until 2026-12-05 the recipe was 10 epochs in float32 (the same
    # wall time on 2 cores; MODELS.md compares the two runs).
    iterations: int = 7488
    batch_size: int = 128
    learning_rate: float = 5e-4
    checkpoint_every: int = 468
    sample_every: int = 7488
    lambda_dmr: float = 0.5
    lambda_bre: float = 0.1
    center_high: bool = True
    decay_fraction: float = 0.3
    precision: str = "mixed_bfloat16"  # the encoders are float32 copies (zoo.training.run)
    lambda_gan: float = 1.0  # 0: no generator, no real/fake loss (the contrastive-only row)
    lambda_con: float = 1.0  # NT-Xent between the two views' codes, averaged over the heads
    temperature: float = 0.3
    straight_through: bool = True  # sign forward, tanh backward; False: tanh codes
    augment: bool = True
    shift_pixels: float = 2.0
    scale_range: float = 0.1
    rotation_degrees: float = 0.0
    flip: bool = True  # horizontal flips keep a garment's class
    neighbours: float = 0.5  # chance that view 2 is a pixel-space neighbour rather than x
    neighbour_k: int = 5

    def __post_init__(self):
        super().__post_init__()
        for field in ("augment", "flip", "straight_through"):
            object.__setattr__(self, field, bool(getattr(self, field)))
        for field in ("lambda_gan", "lambda_con", "shift_pixels", "scale_range",
                      "rotation_degrees"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"BinGANPlusRecipe.{field} must be >= 0, got "
                                 f"{getattr(self, field)}.")
        if not self.temperature > 0 or not self.scale_range < 1:
            raise ValueError("Expected temperature > 0 and scale_range < 1.")
        if not 0 <= self.neighbours <= 1 or self.neighbour_k < 1:
            raise ValueError(f"Expected 0 <= neighbours <= 1 and neighbour_k >= 1, got "
                             f"{self.neighbours} and {self.neighbour_k}.")
        if self.lambda_con > 0 and not self.augment and self.neighbours == 0:
            raise ValueError("The contrastive task needs two different views: set augment=true "
                             "or neighbours > 0, or lambda_con=0.")


@dataclasses.dataclass(frozen=True)
class SketchGANPlusRecipe(Recipe):
    """A sketch-GAN+ recipe (zoo/training/sketch_gan_plus.py): the stable learning rate, a
    larger latent, augmentation of real and generated batches, and the contrastive auxiliary
    task in D. The defaults are the shipped recipe; the ablation rows change one field each."""

    iterations: int = 2500
    batch_size: int = 64
    learning_rate: float = 2e-4
    latent_dim: int = 32
    checkpoint_every: int = 250
    sample_every: int = 500
    augment: bool = True
    rotation_degrees: float = 10.0
    scale_range: float = 0.15  # scale factor drawn from [1 - range, 1 + range]
    shift_pixels: float = 4.0
    stroke_probability: float = 0.3  # chance of thickening, and again of thinning, strokes
    lambda_con: float = 1.0  # weight of the contrastive (NT-Xent) loss; 0 = plain GAN
    temperature: float = 0.2
    # Weight of the GAN loss in D's; 0: no generator, no real/fake loss (the contrastive task
    # alone, the "what does the GAN add?" row of issue 18), as BinGANPlusRecipe.lambda_gan.
    lambda_gan: float = 1.0
    # The generated batch's projections as extra negatives in the NT-Xent (needs the GAN).
    fake_negatives: bool = False
    # Neighbour partners (issue 18): from step `neighbours_after` on, the second view of this
    # share of each batch is of one of the image's `neighbour_k` nearest neighbours in the
    # training corpus, ranked once before training by the cosine of registered model
    # `neighbours_from`'s embeddings (no labels): another drawing of the same mark, where the
    # corpus holds several, rather than an augmented copy of the same one.
    neighbours: float = 0.0
    neighbour_k: int = 3
    neighbours_from: str = ""
    neighbours_after: int = 0
    # How two hands and two scans differ, beyond the affine and stroke-width changes above
    # (zoo.training.sketch_gan_plus.hand_and_scan_augment; issue 18). Each is off at 0.
    elastic_pixels: float = 0.0  # smooth displacement of up to this many pixels
    shear: float = 0.0  # shear and log aspect ratio drawn from [-shear, shear]
    break_fraction: float = 0.0  # share of the ink taken away in small gaps
    blur_probability: float = 0.0  # share of the views blurred (sigma 1 px)
    ink_noise: float = 0.0  # paper grain up to this intensity, and ink blots

    HAND_AND_SCAN = ("elastic_pixels", "shear", "break_fraction", "blur_probability", "ink_noise")

    @property
    def hand_and_scan(self):
        """Whether any of the hand-and-scan augmentations is on."""
        return self.augment and any(getattr(self, field) > 0 for field in self.HAND_AND_SCAN)

    def __post_init__(self):
        super().__post_init__()
        for field in self.HAND_AND_SCAN:
            if not getattr(self, field) >= 0:
                raise ValueError(f"SketchGANPlusRecipe.{field} must be >= 0, got "
                                 f"{getattr(self, field)}.")
        if not self.break_fraction < 1 or not self.blur_probability <= 1 or not self.shear < 1:
            raise ValueError("Expected break_fraction < 1, blur_probability <= 1 and shear < 1.")
        if self.d_steps != 1:
            raise ValueError("sketch-GAN+ recipes update D and G once a step (d_steps must be 1).")
        object.__setattr__(self, "augment", bool(self.augment))
        object.__setattr__(self, "fake_negatives", bool(self.fake_negatives))
        if self.fake_negatives and not (self.lambda_gan > 0 and self.lambda_con > 0):
            raise ValueError("fake_negatives needs the generator and the contrastive task: "
                             "set lambda_gan > 0 and lambda_con > 0, or fake_negatives=0.")
        if not 0 <= self.neighbours <= 1:
            raise ValueError(f"neighbours is a share of the batch in [0, 1], got "
                             f"{self.neighbours}.")
        for field, least in (("neighbour_k", 1), ("neighbours_after", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"SketchGANPlusRecipe.{field} must be an integer >= {least}, "
                                 f"got {value!r}.")
        if self.neighbours > 0 and not (isinstance(self.neighbours_from, str)
                                        and self.neighbours_from and self.lambda_con > 0):
            raise ValueError("neighbours > 0 needs neighbours_from (the registered model whose "
                             "embeddings rank the neighbours) and the contrastive task "
                             "(lambda_con > 0).")
        for field in ("rotation_degrees", "scale_range", "shift_pixels", "lambda_con",
                      "lambda_gan"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"SketchGANPlusRecipe.{field} must be >= 0, got "
                                 f"{getattr(self, field)}.")
        if not 0 <= self.stroke_probability <= 0.5 or not self.scale_range < 1:
            raise ValueError("Expected 0 <= stroke_probability <= 0.5 and scale_range < 1.")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not self.lambda_gan > 0 and not self.lambda_con > 0:
            raise ValueError("Without the adversarial game the contrastive task is all there is "
                             "to learn: set lambda_con > 0 or lambda_gan > 0.")
        if self.lambda_con > 0 and not self.augment:
            raise ValueError("The contrastive task needs augmentation (two identical views teach "
                             "nothing): set augment=1 or lambda_con=0.")


@dataclasses.dataclass(frozen=True)
class CodeHeadRecipe:
    """How a learned K-bit code head is trained on a frozen float encoder
    (zoo/training/code_head.py; a registry entry's `code_head`)."""

    bits: int = 64
    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 3e-4
    views: int = 8  # augmented views encoded per corpus image
    temperature: float = 0.2  # NT-Xent on the relaxed codes
    lambda_contrastive: float = 1.0
    lambda_bre: float = 1.0
    lambda_dmr: float = 0.0
    lambda_distill: float = 0.0
    distill_temperature: float = 0.05
    seed: int = 0

    def __post_init__(self):
        for field in ("bits", "steps", "batch_size", "views"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CodeHeadRecipe.{field} must be a positive integer, got "
                                 f"{value!r}.")
        if self.views < 2 and self.lambda_contrastive:
            raise ValueError("The contrastive term needs views >= 2.")
        for field in ("learning_rate", "temperature", "distill_temperature"):
            if not getattr(self, field) > 0:
                raise ValueError(f"CodeHeadRecipe.{field} must be > 0, got "
                                 f"{getattr(self, field)}.")
        for field in ("lambda_contrastive", "lambda_bre", "lambda_dmr", "lambda_distill"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"CodeHeadRecipe.{field} must be >= 0, got "
                                 f"{getattr(self, field)}.")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def describe(self):
        terms = [f"{weight:g} x {name}" for name, weight in (
            (f"NT-Xent (temperature {self.temperature:g}) between {self.views} augmented views",
             self.lambda_contrastive),
            ("BRE", self.lambda_bre), ("DMR", self.lambda_dmr),
            (f"neighbour distillation (temperature {self.distill_temperature:g})",
             self.lambda_distill)) if weight]
        return (f"learned from the ITQ init, {self.steps} Adam steps of {self.batch_size} on the "
                f"frozen embeddings: " + " + ".join(terms))


def parse_recipe_changes(pairs):
    """Parse `--set key=value` pairs into a dict: int or float values where they parse, true /
    false as booleans, comma-separated values as a tuple of those (`--arch widths=64,128`),
    anything else as text (the recipe checks keys and values)."""
    changes = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"Expected --set key=value, got {pair!r}.")
        key, value = pair.split("=", 1)
        parts = [_parse_value(part) for part in value.split(",")]
        changes[key] = tuple(parts) if len(parts) > 1 else parts[0]
    return changes


def _parse_value(value):
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value

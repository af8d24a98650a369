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

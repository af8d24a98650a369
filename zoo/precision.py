"""Compute precision of the zoo's models: float32, bfloat16, int8, or "auto" (the fastest
exact-enough one this CPU runs natively).

Encoders run in float32 by default (the golden outputs are float32). `precision="bfloat16"`
builds the same network under Keras' "mixed_bfloat16" policy: the weights stay float32 (the
shipped files load unchanged), convolutions and matrix products run in bfloat16 with float32
accumulation (oneDNN's AVX512-BF16 / AMX kernels), and the embedding is returned in float32.
On CPUs without native bfloat16 the same graph runs, emulated, with nothing to gain, so "auto"
picks bfloat16 only where the CPU has it. "int8" (sketch-GAN+ encoders only) runs the
stride-2 convolutions in int8 with calibrated ranges (zoo.quantization) and the rest as bfloat16
does: faster again, with embeddings further from float32's, so "auto" never picks it. MODELS.md
("Speed") measures the speed and retrieval of every path (`python -m benchmarks.encode_speed`).
"""

import contextlib

from zoo.machine import cpu_flags

PRECISIONS = ("float32", "bfloat16", "int8")
CHOICES = (*PRECISIONS, "auto")

# Keras dtype policy of each precision: weights in float32 either way (int8: that of the layers
# it does not quantise).
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "int8": "mixed_bfloat16"}

# CPU flags (Linux /proc/cpuinfo) of native bfloat16 dot products.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bfloat16():
    """Whether this CPU computes bfloat16 dot products natively."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


# CPU flags of native int8 dot products (VNNI) for precision "int8".
NATIVE_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def native_int8():
    """Whether this CPU computes int8 dot products natively (VNNI): where it does not, oneDNN's
    int8 convolutions halve the kernels' range to keep 16-bit partial sums from saturating, so
    precision "int8" is slower and one bit coarser (zoo.quantization)."""
    return bool(cpu_flags() & set(NATIVE_INT8_FLAGS))


def resolve(precision):
    """"float32", "bfloat16" or "int8" for one of CHOICES ("auto" decides by the CPU, between
    the first two); ValueError otherwise."""
    if precision not in CHOICES:
        raise ValueError(f"Expected a precision among {', '.join(CHOICES)}; got {precision!r}.")
    if precision == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return precision


def keras_policy(precision):
    """The Keras dtype policy name that builds models computing in `precision`. Recipes may
    also name Keras policies directly ("mixed_bfloat16"); those pass through."""
    return _POLICIES.get(resolve(precision) if precision in CHOICES else precision, precision)


@contextlib.contextmanager
def policy_scope(precision):
    """Build models inside this block to give them `precision` (or a Keras policy name)."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(keras_policy(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)

"""What machine a number was measured on (recorded beside timings and results)."""

import os
import platform

# The instruction sets that decide the zoo's speeds, as /proc/cpuinfo names them.
SPEED_FLAGS = (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
               ("avx512_vnni", "AVX512-VNNI"), ("amx_bf16", "AMX-BF16"))


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (an empty set where /proc/cpuinfo is not readable)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_description():
    """e.g. '2 cores, AMD EPYC (AVX-512, AVX512-BF16, AVX512-VNNI)': the CPU model from
    /proc/cpuinfo where present, and which of the instruction sets in SPEED_FLAGS it has
    (AVX2-only machines say 'no AVX-512')."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    if flags:
        found = [name for flag, name in SPEED_FLAGS if flag in flags]
        model += f" ({', '.join(found) if found else 'no AVX-512'})"
    return f"{os.cpu_count()} cores, {model}"

"""What machine a number was measured on (recorded beside timings and results)."""

import os
import platform


def machine_description():
    """e.g. '2 cores, Intel(R) Xeon(R) Processor' (CPU model from /proc/cpuinfo where present)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {model}"

"""Keep large freed buffers in the process's heap instead of returning them to the kernel.

Every Predict call allocates a few buffers the size of its tensors (gRPC's receive and send
slices, the request and response bytes, the model's input and output arrays). With glibc's
default malloc settings, freeing such a buffer at the top of the main heap trims it (the pages go
back to the kernel) once the free space passes the trim threshold, so the next call's buffers
are fresh memory again and fault in page by page. On this project's 2-core machine the round
trip of a batch-64 call (1 MiB of images in, 256 KiB of embeddings out) to a server that runs
no model took 1.3-1.6 ms with these settings in client and server and 1.4-2.2 ms without them,
over three alternating runs of `python -m benchmarks.serving_throughput [--no-keep-memory]`;
the served thin-GAN gained less (0.48-0.51 of in-process throughput against 0.47-0.49), and
its one-image p99 1.7-2.3 ms against 1.8-3.0 ms. Raising the mmap and trim
thresholds keeps freed pages in the heap for the next call; the cost is up to TRIM_THRESHOLD
bytes of free heap held by the process. This concerns the Python processes (`zoo serve`, the
client's); the TF Serving binary manages its own memory.
"""

import ctypes
import ctypes.util
import logging

__all__ = ["keep_freed_memory"]

log = logging.getLogger("serving.memory")

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: allocations below this come from the heap
TRIM_THRESHOLD = 256 << 20  # free space kept at the heap's top before it is handed back
TOP_PAD = 64 << 20  # extra heap asked for at each growth, so that growth is rare


def keep_freed_memory():
    """Set glibc's malloc to keep freed buffers for reuse (the process keeps up to
    TRIM_THRESHOLD bytes of free heap). True if set; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("malloc settings left alone: no glibc mallopt in %s", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (_M_TOP_PAD, TOP_PAD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)

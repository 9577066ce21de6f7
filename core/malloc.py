"""The C library's allocator, told to keep the memory a training process frees.

A training step on the CPU allocates and frees the same activation-sized buffers (tens
of megabytes at batch 128) every step. glibc serves a buffer above its mmap threshold
with a fresh mapping and unmaps it when freed, and gives the top of its heap back to
the kernel once more than its trim threshold lies free there; both thresholds move with
what the process has allocated before. A buffer that went back to the kernel returns as
new pages, each zero-filled by the kernel on first touch: thousands of page faults a
step, spent in the kernel. Which buffers go back depends on the order and sizes of a
process's allocations, so it differs from path to path and from process to process.
Measured, 3 epochs of the small CIFAR-10 network in `ablations.train` (README,
Performance): with tanh 3.9 and 19 million page faults and 9 and 40 s in the kernel in
two runs, with ReLU 0.6 million and 3 s; with this, 0.3 million and 2 to 3 s either way.

`keep_freed_memory()` turns both off for the rest of the process: no new mappings for
large buffers, no trimming of the heap. Freed buffers stay with the process and are
reused; its resident memory stays at its peak, which a training process reaches again
every step anyway.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
_NEVER = 2**31 - 1  # bytes free at the top of the heap before it is trimmed: never, in practice


def keep_freed_memory() -> bool:
    """Where the C library is glibc's: no mmap()ed chunks, no heap trimming, from now on in
    this process. Returns whether it was applied (elsewhere nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc's alone: other C libraries' mallopt differ
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, _NEVER))

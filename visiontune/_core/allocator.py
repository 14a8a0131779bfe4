"""CPU speed: keep freed memory in the process instead of returning it to the OS after every batch.

With glibc's default settings, activation buffers of a few MB are mmapped, unmapped when freed and page-faulted
back in on the next batch; on the bench (Lite0, size 64, 2 cores) that made a bare `model(x)` loop 1.7x slower
(BENCHMARKS.md, "Inference"), and frozen training epochs about 1.2x slower. Raising the mmap threshold is not
enough: glibc caps it at 32 MiB, and at 224 pixels a batch of 64 has activation buffers larger than that, which
were still mmapped and unmapped every step. So mmap is switched off for malloc (M_MMAP_MAX = 0: every block
comes from the reusable heap) and the heap is trimmed only beyond 1 GiB of free memory at its top.

A Learner on the CPU, its DataLoader workers, `visiontune predict` and `serve` call `keep_freed_memory()`;
setting MALLOC_MMAP_THRESHOLD_ / MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ yourself (or preloading
jemalloc/tcmalloc/mimalloc) takes precedence.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 32 << 20  # glibc's maximum (kept for a malloc that ignores M_MMAP_MAX)
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_")
TRIM_THRESHOLD = 1 << 30  # return memory to the OS only beyond 1 GiB of free heap
_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc so freed tensors are reused rather than unmapped; True if applied.

    Does nothing off Linux/glibc, or when the person already chose (MALLOC_*_ variables, or a preloaded
    jemalloc/tcmalloc)."""
    if not sys.platform.startswith("linux"):
        return False
    if any(k in os.environ for k in USER_SETTINGS):
        return False
    if any(name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return False
    global _applied
    if _applied:  # every Learner asks; finding libc runs `ldconfig -p`, so do it once per process
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = (bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_MMAP_MAX, 0))
                and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    return _applied


def worker_init(worker_id: int) -> None:
    """DataLoader worker_init_fn: the same malloc settings in each loader worker (spawned workers start fresh)."""
    keep_freed_memory()

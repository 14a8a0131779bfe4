"""CPU speed: keep freed memory in the process instead of returning it to the OS after every batch.

With glibc's default settings, activation buffers of a few MB are mmapped, unmapped when freed and page-faulted
back in on the next batch; on the bench (Lite0, size 64, 2 cores) that made a bare `model(x)` loop 1.7x slower
(BENCHMARKS.md, "Inference"), and frozen training epochs about 1.2x slower. Raising the mmap threshold is not
enough: glibc caps it at 32 MiB, and at 224 pixels a batch of 64 has activation buffers larger than that, which
were still mmapped and unmapped every step. So mmap is switched off for malloc (M_MMAP_MAX = 0: every block
comes from the reusable heap) and glibc's own trimming of the heap's top is off too: a 224-pixel batch of 64
frees about 1.2 GB of activations at the top of the heap when its forward pass ends, so any finite threshold a
batch can outgrow (1 GiB was tried) hands them back and faults them in again on the next batch.

The price is that a process keeps its training peak (several GB at 224 pixels) after training ends; so when
inference starts after a fit with more than 1 GiB of freed memory held (`release_freed_memory()`, called on
entering inference), that memory goes back to the OS once: the smaller working set of predicting is kept as
before, call after call.

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
NEVER_TRIM = -1  # mallopt(M_TRIM_THRESHOLD, -1): glibc never trims by itself (only malloc_trim, below)
RELEASE_MIN = 1 << 30  # after a fit, hand freed memory back only when over 1 GiB of it is held
_applied = False
_libc = None
_training_ended = False


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


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
    if hasattr(libc, "mallinfo2"):  # glibc >= 2.33; without it nothing is ever released (freed_bytes_held: 0)
        libc.mallinfo2.restype = _Mallinfo2
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    global _libc
    _libc = libc
    _applied = (bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_MMAP_MAX, 0))
                and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)))
    return _applied


def worker_init(worker_id: int) -> None:
    """DataLoader worker_init_fn: the same malloc settings in each loader worker (spawned workers start fresh)."""
    keep_freed_memory()


def freed_bytes_held() -> int:
    """Bytes malloc holds freed (not returned to the OS); 0 when unknown (not glibc >= 2.33, or not applied)."""
    if not _applied or not hasattr(_libc, "mallinfo2"):  # _applied: _libc is set
        return 0
    return int(_libc.mallinfo2().fordblks)  # all free chunks, fastbins included, summed over arenas


def note_training_ended() -> None:
    """Called when a fit ends: the next inference may hand the training step's freed memory back."""
    global _training_ended
    _training_ended = True


def release_freed_memory(min_free: int = RELEASE_MIN) -> int:
    """Once after training, give freed memory back to the OS (glibc's malloc_trim) when more than `min_free`
    bytes of it are held: a training step's activations, several GB at 224 pixels. Returns the bytes that were
    held, 0 if nothing was done. Only where `keep_freed_memory()` applied visiontune's setting, and only once per
    fit, so that inference keeps reusing its own buffers instead of page-faulting them back on every call."""
    global _training_ended
    if not _training_ended:
        return 0
    _training_ended = False
    held = freed_bytes_held()
    if held <= min_free:
        return 0
    _libc.malloc_trim(0)
    return held

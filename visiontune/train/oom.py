"""Out-of-memory recovery: a CUDA OOM in the first steps of a fit, lr_find or prediction halves the batch
size, frees memory and retries; `find_batch_size` picks the largest batch size that fits before training."""

from __future__ import annotations

import copy
import gc
from typing import TYPE_CHECKING, Callable, TypeVar

import torch

from .._core import console as _console
from .._core.distributed import is_distributed
from .._core.errors import VisiontuneError

if TYPE_CHECKING:
    from .learner import Learner

T = TypeVar("T")
OOM_STEPS = 10  # an OOM within this many training steps of a fit is recovered; later ones are raised
MIN_BS = 2


def is_oom(e: BaseException) -> bool:
    """True for a device out-of-memory error (CUDA, MPS, or the generic torch.OutOfMemoryError)."""
    if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def snapshot(learn: "Learner") -> dict:
    """Model and optimizer state to go back to if the first steps run out of memory."""
    return {
        "model": {k: v.detach().clone() for k, v in learn.model.state_dict().items()},
        "opt": copy.deepcopy(learn.opt.state_dict()) if learn.opt is not None else None,
    }


def restore(learn: "Learner", state: dict) -> None:
    learn.model.load_state_dict(state["model"])
    if state["opt"] is not None and learn.opt is not None:
        learn.opt.load_state_dict(state["opt"])


def recovered(learn: "Learner", e: BaseException, where: str) -> bool:
    """After exception `e` in `where`: True if it was an out-of-memory error and the batch size was halved, so
    the caller should start again; False (re-raise) otherwise, under torchrun (the ranks would disagree on the
    batch size) or at the floor."""
    return is_oom(e) and not is_distributed() and shrink_batch(learn, where)


class FitOOM(Exception):
    """Internal: a fit ran out of memory in its first steps and the batch size was halved; run it again."""


def fit_with_retry(learn: "Learner", run: Callable[[], None]) -> None:
    """Run one fit; after an out-of-memory error in its first OOM_STEPS steps, put the model and optimizer
    back as they were before it and run it again at the halved batch size (`learn.retrying` is True then)."""
    saved = snapshot(learn)
    try:
        while True:
            try:
                run()
                return
            except FitOOM:
                restore(learn, saved)
                learn.retrying = True
    finally:
        learn.retrying = False


def fit_failed(learn: "Learner", e: BaseException) -> BaseException | None:
    """What a fit that raised `e` should raise: FitOOM to retry (OOM in the first steps, batch size halved),
    a VisiontuneError that says what to do (a later OOM), or None to re-raise `e` as it is."""
    if learn._fit_steps < OOM_STEPS and recovered(learn, e, "training"):
        return FitOOM()
    if is_oom(e):
        return VisiontuneError(f"Out of memory on {learn.device} at epoch {learn.epoch} batch {learn.iter} with "
                               f"batch size {learn.data.bs}. Pass a smaller batch size (--bs / bs=) or --bs auto.")
    return None


def with_retry(learn: "Learner", where: str, attempt: Callable[[], T], before_retry: Callable[[], None] | None = None
               ) -> T:
    """`attempt()`, again after each out-of-memory error that halved the batch size (prediction, lr_find)."""
    while True:
        try:
            return attempt()
        except BaseException as e:  # noqa: BLE001
            if not recovered(learn, e, where):
                raise
            if before_retry is not None:
                before_retry()


def shrink_batch(learn: "Learner", where: str) -> bool:
    """Halve the data's batch size after an OOM in `where`; False when already at the floor."""
    old = learn.data.bs
    new = old // 2
    if new < MIN_BS:
        return False
    learn.data.bs = new
    learn._loaders.clear()
    free_memory(learn.device)
    _console.notice(f"out of memory during {where} with batch size {old}: retrying with batch size {new}.")
    return True


def find_batch_size(learn: "Learner", start: int = 1024) -> int:
    """Largest power-of-two batch size (<= start, <= train size) for which a training step fits in memory.

    On a GPU it is tried; the model and optimizer are restored afterwards. Off the GPU the data's batch size
    is kept when the step fits in the free host memory (a larger batch is not faster on a CPU), else the largest
    power of two below it that fits (`memory.memory_batch_size`), said in a notice."""
    if learn.device.type != "cuda":
        return fit_host_memory(learn)
    if learn.opt is None:
        learn.create_opt()
    saved = snapshot(learn)
    n = len(learn.data.train_ds)
    bs = 1
    while bs * 2 <= min(start, n):
        bs *= 2
    x1, y1 = next(iter(learn.dl("train")))
    try:
        while bs >= MIN_BS:
            reps = -(-bs // len(x1))
            x = x1.repeat(reps, *[1] * (x1.ndim - 1))[:bs]
            y = y1.repeat(reps, *[1] * (y1.ndim - 1))[:bs]
            try:
                learn.set_train_mode()
                with learn.autocast():
                    loss = learn.loss_func(learn.forward(x).float(), y)
                loss.backward()
                learn.opt.zero_grad(set_to_none=True)
                break
            except BaseException as e:  # noqa: BLE001
                if not is_oom(e):
                    raise
                del e
                learn.opt.zero_grad(set_to_none=True)
                free_memory(learn.device)
                bs //= 2
    finally:
        restore(learn, saved)
        free_memory(learn.device)
    learn.data.bs = max(bs, MIN_BS)
    learn._loaders.clear()
    _console.notice(f"batch size auto: {learn.data.bs} (largest power of two that fits one training step)")
    return learn.data.bs


def fit_host_memory(learn: "Learner", free: int | None = None, lower: bool = True) -> int:
    """Off the GPU: keep the data's batch size when a training step fits in the free memory, else lower it to
    the largest power of two that fits and say so (the kernel would kill the process, with no error to recover
    from); with `lower=False` (a batch size the person chose) only say so. `free` (bytes) overrides what the
    machine reports; VISIONTUNE_MEMORY caps it."""
    from .memory import memory_batch_size

    old = learn.data.bs
    if is_distributed():
        return old  # the ranks could measure different free memory and disagree on the batch size
    bs, need, free = memory_batch_size(learn, old, free)
    if bs == old:
        return old
    said = (f"batch size {old} needs about {need / 2**30:.1f} GB for a training step at size {learn.data.size}; "
            f"{free / 2**30:.1f} GB is free")
    if not lower:
        _console.notice(f"{said}: the system may stop the run for lack of memory. Pass --bs {bs} (bs={bs}) or "
                        "free memory.")
        return old
    learn.data.bs = bs
    learn._loaders.clear()
    _console.notice(f"{said}: using batch size {bs}. Pass --bs (bs=) to choose.")
    return bs

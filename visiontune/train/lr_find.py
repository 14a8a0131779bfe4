"""The learning-rate finder (Leslie Smith, 2015): increase the lr exponentially per mini-batch, watch the
loss, stop when it explodes, then put the model and optimizer back exactly as they were."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import _console
from ..distributed import broadcast_object
from .optim import set_hyper

if TYPE_CHECKING:
    from .learner import Learner


@dataclass
class LRFindResult:
    """`lrs` and smoothed `losses` per mini-batch, and the suggested learning rates."""

    lrs: list[float]
    losses: list[float]
    valley: float
    steep: float
    minimum: float  # lr at the lowest loss, divided by 10
    suggestion: float = field(init=False)

    def __post_init__(self) -> None:
        self.suggestion = self.valley

    @property
    def suggestions(self) -> dict[str, float]:
        return {"valley": self.valley, "steep": self.steep, "minimum/10": self.minimum}

    def plot(self, path: str | Path | None = None, skip_start: int = 5, skip_end: int = 3):
        """Loss vs lr on a log axis with the suggestions marked; writes a PNG when `path` is given."""
        from ..interpret.plots import plot_lr_find

        return plot_lr_find(self, path, skip_start=skip_start, skip_end=skip_end)

    def to_dict(self) -> dict:
        return {"lrs": self.lrs, "losses": self.losses, **self.suggestions, "suggestion": self.suggestion}


def _valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """Start of the longest steadily decreasing stretch of the loss curve, then a bit into it (fastai's valley)."""
    n = len(losses)
    if n < 3:
        return float(lrs[int(np.argmin(losses))])
    run = np.ones(n, dtype=int)  # length of the longest decreasing subsequence ending at i
    best_end, best_start = 0, 0
    for i in range(1, n):
        prev = losses[:i] > losses[i]
        if prev.any():
            run[i] = run[:i][prev].max() + 1
        if run[i] > run[best_end]:
            best_end, best_start = i, i - run[i] + 1
    third = (best_end - best_start) / 3
    idx = min(n - 1, best_start + int(third) + int(third / 2))
    return float(lrs[idx])


def suggest(lrs: list[float], losses: list[float], skip_start: int = 5, skip_end: int = 3) -> tuple[float, float, float]:
    """(valley, steep, minimum/10) from an lr_find curve, ignoring the noisy first and last points."""
    lr = np.asarray(lrs, dtype=float)
    lo = np.asarray(losses, dtype=float)
    if len(lo) > skip_start + skip_end + 3:
        lr, lo = lr[skip_start : len(lr) - skip_end], lo[skip_start : len(lo) - skip_end]
    finite = np.isfinite(lo)
    lr, lo = lr[finite], lo[finite]
    if len(lo) == 0:
        return (float("nan"),) * 3
    minimum = float(lr[int(np.argmin(lo))]) / 10
    if len(lo) >= 2:
        grads = np.gradient(lo, np.log(lr))
        steep = float(lr[int(np.argmin(grads))])
    else:
        steep = float(lr[0])
    return _valley(lr, lo), steep, minimum


def lr_find(learn: "Learner", start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
            stop_div: bool = True, beta: float = 0.98) -> LRFindResult:
    """Run the range test on `learn`'s training data (cycling it when shorter than `num_it`).

    An out-of-memory error in the first steps halves the batch size and starts again. Under torchrun
    gradients are averaged across ranks and rank 0's curve is the result everywhere."""
    from . import oom

    while True:
        try:
            res = _lr_find(learn, start_lr, end_lr, num_it, stop_div, beta)
            break
        except BaseException as e:  # noqa: BLE001
            if not oom.recovered(learn, e, "lr_find"):
                raise
    return broadcast_object(res)


def _lr_find(learn: "Learner", start_lr: float, end_lr: float, num_it: int, stop_div: bool,
             beta: float) -> LRFindResult:
    if learn.opt is None:
        learn.create_opt()
    model_state = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    opt_state = copy.deepcopy(learn.opt.state_dict())
    rng_state = torch.get_rng_state()
    was_training = learn.model.training
    lrs, losses = [], []
    best, avg = math.inf, 0.0
    it = 0
    learn.training = True
    learn._set_train_mode()
    learn._wrap_ddp()
    dl = learn.train_dl
    mult = (end_lr / start_lr) ** (1 / max(num_it - 1, 1))
    progress = None
    if _console.interactive() and not learn.quiet:
        from rich.progress import Progress

        progress = Progress(console=_console.err, transient=True)
        progress.start()
        task = progress.add_task("lr_find", total=num_it)
    try:
        epoch = 0
        while it < num_it:
            dl.set_epoch(10_000 + epoch)
            for xb, yb in dl:
                lr = start_lr * mult**it
                set_hyper(learn.opt, "lr", [lr] * learn.n_groups)
                with learn._autocast():
                    loss = learn.loss_func(learn.forward(xb).float(), yb)
                if learn.scaler is not None:
                    learn.scaler.scale(loss).backward()
                    learn.scaler.step(learn.opt)
                    learn.scaler.update()
                else:
                    loss.backward()
                    learn.opt.step()
                learn.opt.zero_grad(set_to_none=True)
                value = loss.item()
                avg = beta * avg + (1 - beta) * value
                smooth = avg / (1 - beta ** (it + 1))
                lrs.append(lr)
                losses.append(smooth)
                it += 1
                if progress is not None:
                    progress.update(task, advance=1)
                if math.isfinite(smooth):
                    best = min(best, smooth)
                if stop_div and (not math.isfinite(smooth) or smooth > 4 * best):
                    it = num_it
                if it >= num_it:
                    break
            epoch += 1
    finally:
        if progress is not None:
            progress.stop()
        learn.model.load_state_dict(model_state)
        learn.opt.load_state_dict(opt_state)
        torch.set_rng_state(rng_state)
        learn.model.train(was_training)
        learn.training = False
        learn._ddp = None
    valley, steep, minimum = suggest(lrs, losses)
    return LRFindResult(lrs, losses, valley, steep, minimum)

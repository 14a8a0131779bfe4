"""The learning-rate finder (Leslie Smith, 2015): increase the lr exponentially per mini-batch, watch the
loss, stop when it explodes, then put the model and optimizer back exactly as they were. `LRFinder` is a
callback driven by the Learner's one fit loop, as in fastai."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._core.distributed import broadcast_object
from .._core.errors import ConfigError
from .callbacks import Callback, CancelFitException, CancelValidException
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
        from .plots import plot_lr_find

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


class LRFinder(Callback):
    """The range test as a callback of the ordinary fit loop: before every training batch it sets the lr to
    `start_lr * mult**i`, after it records the smoothed loss, and it stops the fit after `num_it` batches or
    when the loss passes 4x its best; validation is skipped and the model, optimizer and random state are
    put back exactly when the fit ends. Being a fit, it gets mixed precision, DDP, out-of-memory recovery and
    every user callback (callbacks with `records = True` sit it out)."""

    order = -30

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, stop_div: bool = True,
                 beta: float = 0.98):
        if not 0 < start_lr < end_lr:
            raise ConfigError(f"lr_find needs 0 < start_lr < end_lr; got start_lr={start_lr}, end_lr={end_lr}.")
        if num_it < 2:
            raise ConfigError(f"lr_find needs num_it >= 2 mini-batches; got {num_it}.")
        self.start_lr, self.end_lr, self.num_it, self.stop_div, self.beta = start_lr, end_lr, num_it, stop_div, beta
        self.mult = (end_lr / start_lr) ** (1 / max(num_it - 1, 1))

    @property
    def name(self) -> str:
        return "lr_finder"

    def before_fit(self) -> None:
        learn = self.learn
        self.model_state = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
        self.opt_state = copy.deepcopy(learn.opt.state_dict())
        self.rng_state = torch.get_rng_state()
        self.was_training = learn.model.training
        self.lrs, self.losses, self.best, self.avg, self.it = [], [], math.inf, 0.0, 0

    def before_batch(self) -> None:
        if self.learn.training:
            set_hyper(self.learn.opt, "lr", [self.start_lr * self.mult**self.it] * self.learn.n_groups)

    def after_batch(self) -> None:
        if not self.learn.training:
            return
        self.avg = self.beta * self.avg + (1 - self.beta) * self.learn.loss_value
        smooth = self.avg / (1 - self.beta ** (self.it + 1))
        self.lrs.append(self.start_lr * self.mult**self.it)
        self.losses.append(smooth)
        self.it += 1
        if math.isfinite(smooth):
            self.best = min(self.best, smooth)
        diverged = self.stop_div and (not math.isfinite(smooth) or smooth > 4 * self.best)
        if diverged or self.it >= self.num_it:
            raise CancelFitException()

    def before_validate(self) -> None:
        raise CancelValidException()

    def after_fit(self) -> None:
        learn = self.learn
        learn.model.load_state_dict(self.model_state)
        learn.opt.load_state_dict(self.opt_state)
        torch.set_rng_state(self.rng_state)
        learn.model.train(self.was_training)

    after_fail = after_fit

    def result(self) -> LRFindResult:
        valley, steep, minimum = suggest(self.lrs, self.losses)
        return LRFindResult(list(self.lrs), list(self.losses), valley, steep, minimum)


def lr_find(learn: "Learner", start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
            stop_div: bool = True, beta: float = 0.98) -> LRFindResult:
    """Run the range test on `learn`'s training data (cycling it when shorter than `num_it`) as a fit that leaves
    no trace. Under torchrun gradients are averaged across ranks and rank 0's curve is the result everywhere."""
    finder = LRFinder(start_lr, end_lr, num_it, stop_div, beta)
    n_epoch = -(-num_it // max(len(learn.train_dl), 1))
    learn._fit(n_epoch, start_lr, schedule=None, cbs=[finder], record=False)
    return broadcast_object(finder.result())

"""Learning-rate and momentum schedules, the ParamScheduler callback that applies them, and the fit recipes
(`fit` constant or SGDR, `fit_one_cycle`, `fine_tune`) that the Learner's methods of the same names run.

Schedules are functions of the position in the fit, `pos` in [0, 1].

`lr_mult(pos)` multiplies each layer group's base lr; `mom(pos)`, when present, sets the momentum
(SGD) or Adam's beta1. Positions count epochs and batches: pos = (epoch + i/n_batches) / n_epochs,
so SGDR's restarts land on epoch boundaries and a resumed fit continues the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from .._core.errors import ConfigError, bad_value
from .callbacks import Callback
from .optim import Lrs, set_hyper

if TYPE_CHECKING:
    from .learner import Learner


def cos_anneal(start: float, end: float, pct: float) -> float:
    """Cosine from `start` (pct=0) to `end` (pct=1)."""
    return end + (start - end) / 2 * (1 + math.cos(math.pi * min(max(pct, 0.0), 1.0)))


def combined_cos(pct_start: float, start: float, middle: float, end: float) -> Callable[[float], float]:
    """Cosine from start to middle over `pct_start`, then cosine from middle to end."""

    def f(pos: float) -> float:
        if pos < pct_start:
            return cos_anneal(start, middle, pos / pct_start)
        return cos_anneal(middle, end, (pos - pct_start) / (1 - pct_start))

    return f


@dataclass
class Schedule:
    """What the ParamScheduler applies per batch; `cycles` lists SGDR cycle lengths in epochs."""

    name: str
    lr_mult: Callable[[float], float]
    mom: Callable[[float], float] | None = None
    cycles: tuple[int, ...] = ()


def constant_schedule() -> Schedule:
    """The 2017 `learn.fit(lr, n)`: the same lr throughout."""
    return Schedule("constant", lambda pos: 1.0)


def one_cycle_schedule(
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    moms: Sequence[float] | None = (0.95, 0.85, 0.95),
) -> Schedule:
    """Leslie Smith's 1cycle as fastai does it: lr warms up (cosine) from max/div to max over
    `pct_start`, then anneals to max/div_final; momentum moves the opposite way."""
    if not 0 < pct_start < 1:
        raise bad_value("pct_start", pct_start, "in (0, 1)")
    lr = combined_cos(pct_start, 1 / div, 1.0, 1 / div_final)
    mom = combined_cos(pct_start, *moms) if moms else None
    return Schedule("one_cycle", lr, mom)


def sgdr_cycles(n_cycle: int, cycle_len: int, cycle_mult: int = 1) -> tuple[int, ...]:
    """Epochs per cycle: cycle i lasts `cycle_len * cycle_mult**i` (1+2+4 for 3 cycles of mult 2)."""
    if n_cycle < 1 or cycle_len < 1 or cycle_mult < 1:
        raise ConfigError("n_cycle, cycle_len and cycle_mult must be positive integers.")
    return tuple(int(cycle_len * cycle_mult**i) for i in range(n_cycle))


def sgdr_schedule(cycles: Sequence[int]) -> Schedule:
    """SGDR: within each cycle the lr anneals (cosine) from its base value to ~0, then restarts."""
    cycles = tuple(cycles)
    total = sum(cycles)
    bounds = [0]
    for c in cycles:
        bounds.append(bounds[-1] + c)

    def lr(pos: float) -> float:
        ep = pos * total
        for i, c in enumerate(cycles):
            if ep < bounds[i + 1] or i == len(cycles) - 1:
                return cos_anneal(1.0, 0.0, (ep - bounds[i]) / c)
        return 0.0

    return Schedule("sgdr", lr, None, cycles)


def cycle_of_epoch(cycles: Sequence[int], epoch: int) -> int:
    """Index of the SGDR cycle that epoch `epoch` (0-based) belongs to."""
    end = 0
    for i, c in enumerate(cycles):
        end += c
        if epoch < end:
            return i
    return len(cycles) - 1


class ParamScheduler(Callback):
    """Sets lr (base lr per group x schedule) and momentum before every training batch."""

    order = -20

    def __init__(self, schedule: Schedule, base_lrs: Sequence[float]):
        self.schedule, self.base_lrs = schedule, list(base_lrs)

    def before_batch(self) -> None:
        if not self.learn.training:
            return
        learn = self.learn
        pos = (learn.epoch + learn.iter / max(learn.n_iter, 1)) / learn.n_epoch
        mult = self.schedule.lr_mult(pos)
        set_hyper(learn.opt, "lr", [lr * mult for lr in self.base_lrs])
        if self.schedule.mom is not None:
            m = self.schedule.mom(pos)
            set_hyper(learn.opt, "mom", [m] * len(self.base_lrs))


# ---------------------------------------------------------------------------- fit recipes
def check_lrs(lrs, what: str, epochs_name: str) -> None:
    """Refuse an integer learning rate >= 1: `learn.fit(3)` means "3 epochs" in fastai v2 but lr=3.0 here."""
    values = [lrs] if not isinstance(lrs, (list, tuple, slice)) else (
        [lrs.start, lrs.stop] if isinstance(lrs, slice) else list(lrs))
    if any(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ConfigError(
            f"{what} got the integer {lrs!r} as its learning rate: that would train at lr={lrs}, which diverges. "
            f"The argument orders are learn.fit(lr, n_cycle) (the course's `learn.fit(0.01, 3)`: 3 epochs at "
            f"lr 0.01) and learn.fit_one_cycle(epochs, max_lr); for {lrs} epochs write {epochs_name}={lrs}.")


def fit(learn: "Learner", lrs: Lrs | None = None, n_cycle: int = 1, cycle_len: int | None = None, cycle_mult: int = 1,
        wd: float | None = None, cycle_save_name: str | None = None, cbs: Iterable[Callback] = ()) -> None:
    """Constant lr for `n_cycle` epochs, or SGDR with `cycle_len` (see `Learner.fit`)."""
    check_lrs(lrs, "fit", "n_cycle")
    if cycle_len is None:
        if cycle_save_name:
            raise ConfigError("cycle_save_name needs cycle_len (it saves at the end of each SGDR cycle).")
        return learn._fit(n_cycle, lrs, constant_schedule(), wd, cbs)
    cycles = sgdr_cycles(n_cycle, cycle_len, cycle_mult)
    cbs = list(cbs)
    if cycle_save_name:
        from .snapshots import CycleSaver

        cbs.append(CycleSaver(cycle_save_name, cycles))
    return learn._fit(sum(cycles), lrs, sgdr_schedule(cycles), wd, cbs)


def fit_one_cycle(learn: "Learner", epochs: int, max_lr: Lrs | None = None, div: float = 25.0,
                  div_final: float = 1e5, pct_start: float = 0.25, moms: Sequence[float] | None = (0.95, 0.85, 0.95),
                  wd: float | None = None, cbs: Iterable[Callback] = ()) -> None:
    """1cycle over `epochs` epochs (see `Learner.fit_one_cycle`)."""
    check_lrs(max_lr, "fit_one_cycle", "epochs")
    if isinstance(epochs, float) and not epochs.is_integer() or isinstance(epochs, bool):
        raise ConfigError(f"fit_one_cycle(epochs, max_lr): epochs must be a whole number; got {epochs!r}. "
                          f"Did you mean fit_one_cycle(1, max_lr={epochs})?")
    learn._fit(int(epochs), max_lr, one_cycle_schedule(div, div_final, pct_start, moms), wd, cbs)


def fine_tune(learn: "Learner", epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
              pct_start: float = 0.3, div: float = 5.0, cbs: Iterable[Callback] = ()) -> None:
    """fastai's recipe: 1cycle on the frozen model, unfreeze, then 1cycle with `slice(base_lr/lr_mult, base_lr)`
    (base_lr halved, as fastai does)."""
    learn.freeze()
    if freeze_epochs:
        fit_one_cycle(learn, freeze_epochs, slice(base_lr), pct_start=0.99, cbs=cbs)
    base_lr /= 2
    learn.unfreeze()
    fit_one_cycle(learn, epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, cbs=cbs)

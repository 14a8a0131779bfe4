"""Learning-rate and momentum schedules as functions of the position in the fit, `pos` in [0, 1].

`lr_mult(pos)` multiplies each layer group's base lr; `mom(pos)`, when present, sets the momentum
(SGD) or Adam's beta1. Positions count epochs and batches: pos = (epoch + i/n_batches) / n_epochs,
so SGDR's restarts land on epoch boundaries and a resumed fit continues the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import ConfigError


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
        raise ConfigError(f"pct_start must be in (0, 1), got {pct_start}.")
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

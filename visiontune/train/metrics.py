"""Metrics computed over the whole validation set from probabilities and targets.

Pass names (`metrics=("accuracy", "error_rate")`) or `Metric` objects; for multi-label data the
single-label names map to their multi-label twins (`accuracy` -> `accuracy_multi`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from .._core.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """A named function (probs, targets) -> float; `higher_is_better` guides SaveBest/EarlyStopping."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    higher_is_better: bool = True

    def __call__(self, probs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(self.fn(probs, targets))


def accuracy(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of items whose top class is the target."""
    return (probs.argmax(1) == targets).float().mean().item()


def error_rate(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - accuracy."""
    return 1.0 - accuracy(probs, targets)


def top_k_accuracy(probs: torch.Tensor, targets: torch.Tensor, k: int = 5) -> float:
    """Fraction of items whose target is among the k most probable classes."""
    k = min(k, probs.shape[1])
    return (probs.topk(k, dim=1).indices == targets[:, None]).any(1).float().mean().item()


def accuracy_multi(probs: torch.Tensor, targets: torch.Tensor, thresh: float = 0.5) -> float:
    """Multi-label: fraction of (item, label) decisions that are right at `thresh`."""
    return ((probs > thresh) == targets.bool()).float().mean().item()


def fbeta(probs: torch.Tensor, targets: torch.Tensor, beta: float = 2.0, thresh: float = 0.2, eps: float = 1e-9) -> float:
    """Multi-label F-beta averaged over items (the Planet competition's F2 with beta=2)."""
    pred = (probs > thresh).float()
    targets = targets.float()
    tp = (pred * targets).sum(1)
    prec = tp / (pred.sum(1) + eps)
    rec = tp / (targets.sum(1) + eps)
    b2 = beta**2
    f = (1 + b2) * prec * rec / (b2 * prec + rec + eps)
    return f.mean().item()


_SINGLE = {
    "accuracy": Metric("accuracy", accuracy),
    "error_rate": Metric("error_rate", error_rate, higher_is_better=False),
    "top_5_accuracy": Metric("top_5_accuracy", top_k_accuracy),
}


def _multi(thresh: float) -> dict[str, Metric]:
    return {
        "accuracy_multi": Metric("accuracy_multi", partial(accuracy_multi, thresh=thresh)),
        "fbeta": Metric("fbeta", partial(fbeta, beta=2.0, thresh=thresh)),
        "f2": Metric("fbeta", partial(fbeta, beta=2.0, thresh=thresh)),
    }


_MULTI_ALIASES = {"accuracy": "accuracy_multi", "error_rate": None}


def get_metrics(specs, multi_label: bool = False, thresh: float = 0.5) -> list[Metric]:
    """Resolve metric names/objects for the data's kind; unknown names list the valid ones."""
    table = dict(_multi(thresh)) if multi_label else dict(_SINGLE)
    out: list[Metric] = []
    for s in specs or ():
        if isinstance(s, Metric):
            out.append(s)
        elif callable(s):
            out.append(Metric(getattr(s, "__name__", "metric"), s))
        else:
            name = _MULTI_ALIASES.get(s, s) if multi_label else s
            if name is None:
                continue
            if name not in table:
                raise ConfigError(f"Unknown metric {s!r}. Valid: {', '.join(sorted(table))}.")
            out.append(table[name])
    seen: set[str] = set()
    return [m for m in out if not (m.name in seen or seen.add(m.name))]

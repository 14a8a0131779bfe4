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


def balanced_accuracy(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over classes of the recall of each class present in `targets`: 0.5 for a model that always
    predicts the majority class of two, whatever the imbalance (scikit-learn's balanced_accuracy_score)."""
    from sklearn.metrics import balanced_accuracy_score

    if len(targets) == 0:
        return float("nan")
    return float(balanced_accuracy_score(targets.numpy(), probs.argmax(1).numpy()))


def f1_macro(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """F1 averaged over the classes, each counting the same whatever its size (scikit-learn's macro F1)."""
    from sklearn.metrics import f1_score

    if len(targets) == 0:
        return float("nan")
    return float(f1_score(targets.numpy(), probs.argmax(1).numpy(), average="macro", zero_division=0))


def f1_macro_multi(probs: torch.Tensor, targets: torch.Tensor, thresh=0.5) -> float:
    """Multi-label: F1 per label at its threshold, averaged over the labels."""
    from sklearn.metrics import f1_score

    if len(targets) == 0:
        return float("nan")
    pred = (probs > thresholds(thresh)).numpy().astype(int)
    return float(f1_score(targets.numpy().astype(int), pred, average="macro", zero_division=0))


def thresholds(thresh) -> torch.Tensor:
    """A threshold (float) or one per label (list) as a tensor that compares with a (n, labels) batch."""
    return torch.as_tensor(thresh, dtype=torch.float32)


def accuracy_multi(probs: torch.Tensor, targets: torch.Tensor, thresh: float = 0.5) -> float:
    """Multi-label: fraction of (item, label) decisions that are right at `thresh`."""
    return ((probs > thresholds(thresh)) == targets.bool()).float().mean().item()


def fbeta(probs: torch.Tensor, targets: torch.Tensor, beta: float = 2.0, thresh: float = 0.2, eps: float = 1e-9) -> float:
    """Multi-label F-beta averaged over items (the Planet competition's F2 with beta=2)."""
    pred = (probs > thresholds(thresh)).float()
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
    "balanced_accuracy": Metric("balanced_accuracy", balanced_accuracy),
    "f1_macro": Metric("f1_macro", f1_macro),
}


def _multi(thresh: float) -> dict[str, Metric]:
    return {
        "accuracy_multi": Metric("accuracy_multi", partial(accuracy_multi, thresh=thresh)),
        "fbeta": Metric("fbeta", partial(fbeta, beta=2.0, thresh=thresh)),
        "f2": Metric("fbeta", partial(fbeta, beta=2.0, thresh=thresh)),
        "f1_macro": Metric("f1_macro", partial(f1_macro_multi, thresh=thresh)),
    }


_MULTI_ALIASES = {"accuracy": "accuracy_multi", "error_rate": None, "balanced_accuracy": None}


def get_metrics(specs, multi_label: bool = False, thresh=0.5) -> list[Metric]:
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


def decide(probs: torch.Tensor, classes: list[str], multi: bool, thresh=0.5, decision: dict | None = None
           ) -> torch.Tensor:
    """Predicted labels for rows of probabilities: multi-hot above the threshold(s) for multi-label; the
    tuned decision for two classes when there is one; else the most probable class."""
    if multi:
        return (probs > torch.as_tensor(thresh, dtype=torch.float32)).long()
    if decision and len(classes) == 2:
        k = classes.index(decision["positive"])
        return torch.where(probs[:, k] >= float(decision["threshold"]), k, 1 - k)
    return probs.argmax(1)

"""Lopsided data: counts per class, the imbalance ratio, class weights from train counts, and a balanced
sampler whose epoch keeps the data's length (seeded per epoch, so reruns and resumes repeat it)."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from .._core.errors import ConfigError, bad_value
from .loader import EpochSampler

IMBALANCED = 5.0  # a ratio of the largest to the smallest class above this is lopsided
FEW = 10  # a class with fewer training images than this is too small to learn well
SMALL = 30  # fewer than this per class is small data


def counts(targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Images per class (multi-label: images carrying each label)."""
    t = np.asarray(targets)
    if t.ndim == 2:
        return t.astype(bool).sum(0).astype(np.int64)
    return np.bincount(t.astype(np.int64), minlength=n_classes)


def imbalance_ratio(per_class: np.ndarray) -> float:
    """Largest class over smallest non-empty one (inf when a class has no image; 1.0 for balanced data)."""
    per_class = np.asarray(per_class)
    if not len(per_class):
        return 1.0
    if (per_class == 0).any():
        return float("inf")
    return float(per_class.max() / per_class.min())


def auto_class_weights(per_class: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Inverse frequency to `power`, normalised to mean 1 (power 1 is scikit-learn's 'balanced'): each class then
    weighs the same in the loss whatever its size. Classes without images get the largest weight."""
    c = np.asarray(per_class, dtype=np.float64)
    w = np.where(c > 0, 1.0 / np.maximum(c, 1) ** power, 0.0)
    w[c == 0] = w.max() if (c > 0).any() else 1.0
    return (w / w.mean()).astype(np.float32)


def auto_pos_weights(positives: np.ndarray, n: int, power: float = 1.0) -> np.ndarray:
    """Multi-label: BCE positive weights (negatives / positives)^power per label, at least 1, at most 1000."""
    pos = np.maximum(np.asarray(positives, dtype=np.float64), 1)
    return np.clip(((n - pos) / pos) ** power, 1.0, 1000.0).astype(np.float32)


def parse_class_weights(spec, classes: Sequence[str]) -> dict[str, float] | str | None:
    """'auto' | 'none' | None | {class: w} | 'cats=1,dogs=3' -> 'auto', None or {class: w} (checked)."""
    if spec is None or spec is False or (isinstance(spec, str) and spec.lower() in ("none", "off", "false")):
        return None
    if isinstance(spec, str) and spec.lower() == "auto":
        return "auto"
    if isinstance(spec, str):
        try:
            spec = {k.strip(): float(v) for k, v in (item.split("=", 1) for item in spec.split(",") if item.strip())}
        except ValueError:
            raise bad_value("class_weights", spec, "'auto', 'none' or class=weight pairs like cats=1,dogs=3") from None
    if not isinstance(spec, dict):
        raise bad_value("class_weights", spec, "None, 'auto' or a {class: weight} dict")
    unknown = sorted(set(spec) - set(classes))
    if unknown:
        raise ConfigError(f"class_weights names classes the data does not have: {', '.join(unknown)}. "
                          f"Classes: {', '.join(classes)}.")
    bad = [k for k, v in spec.items() if not (float(v) > 0)]
    if bad:
        raise ConfigError(f"class_weights must be positive; got {', '.join(f'{k}={spec[k]}' for k in bad)}.")
    return {k: float(v) for k, v in spec.items()}


def item_weights(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """Sampling weight per item so that every class is drawn equally often (multi-label: the mean of its
    labels' inverse frequencies; an item without labels counts as its own rare class)."""
    t = np.asarray(targets)
    per = counts(t, n_classes).astype(np.float64)
    inv = np.where(per > 0, 1.0 / np.maximum(per, 1), 0.0)
    if t.ndim == 2:
        pos = t.astype(bool)
        n_pos = pos.sum(1)
        w = np.where(n_pos > 0, (pos * inv).sum(1) / np.maximum(n_pos, 1), inv.max(initial=1.0))
    else:
        w = inv[t.astype(np.int64)]
    return torch.as_tensor(w, dtype=torch.float64)


class BalancedSampler(EpochSampler):
    """Draws `len(weights)` items per epoch with replacement, item i with probability proportional to
    weights[i], from a generator seeded by (seed, epoch): classes come up equally often, the epoch keeps the
    data's length, and an epoch's order repeats on every rerun and resume. Under torchrun each of `world`
    processes takes every world-th draw (the same draws on every rank), as DistributedSampler shards."""

    def __init__(self, weights: torch.Tensor, seed: int = 42, dataset=None, rank: int = 0, world: int = 1):
        super().__init__(len(weights), True, int(seed), dataset)  # set_epoch(epoch, start) and passes as there
        self.weights, self.rank, self.world = weights.double(), rank, max(world, 1)
        self.num_samples = len(weights) // self.world

    def __iter__(self) -> Iterator[int]:
        self._next_pass()
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        draws = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=g)
        mine = draws[self.rank::self.world][: self.num_samples].tolist()
        return iter(mine[self.start:])

    def __len__(self) -> int:
        return self.num_samples

"""Kaggle-style submission CSVs: one row per id, one probability column per class (or one chosen class)."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._core.errors import ConfigError, bad_value
from .._core.io import atomic_write


def clip_bounds(clip: float | tuple[float, float] | None) -> tuple[float, float] | None:
    """`0.05` -> (0.05, 0.95); `(lo, hi)` as given; checked to satisfy 0 <= lo < hi <= 1."""
    if clip is None:
        return None
    if isinstance(clip, (int, float)):
        lo, hi = float(clip), 1.0 - float(clip)
    else:
        try:
            lo, hi = (float(v) for v in clip)
        except (TypeError, ValueError):
            raise bad_value("clip", clip, "a number like 0.05 or a pair like (0.05, 0.95)") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"clip bounds must satisfy 0 <= low < high <= 1; got ({lo}, {hi}). "
                          f"A single number c means (c, 1 - c), so it must be below 0.5.")
    return lo, hi


def write_submission(
    probs,
    ids: Sequence,
    path: str | os.PathLike,
    classes: Sequence[str] | None = None,
    clip: float | tuple[float, float] | None = None,
    column: str | None = None,
    id_header: str = "id",
    column_header: str | None = None,
) -> Path:
    """Write `id,<class 1>,<class 2>,...` with one row per id, in the order given, and return the path.

    `clip=0.05` (or `(0.05, 0.95)`) bounds every probability, the course's trick against log loss's
    punishment of confident mistakes. `column="dogs"` writes that class's probability as the only
    column (binary competitions), headed `column_header` (default: the class name)."""
    p = probs.detach().cpu().float().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, dtype=float)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ConfigError(f"probs must be a (n_items, n_classes) array; got shape {p.shape}.")
    ids = list(ids)
    if len(ids) != len(p):
        raise ConfigError(f"{len(ids)} ids for {len(p)} rows of probabilities: pass one id per row.")
    dups = [i for i, k in Counter(map(str, ids)).items() if k > 1]
    if dups:
        raise ConfigError(f"Duplicate id {dups[0]!r} ({len(dups)} ids repeat): a submission needs each id once.")
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(p.shape[1])]
    if len(names) != p.shape[1]:
        raise ConfigError(f"{len(names)} class names for {p.shape[1]} probability columns.")
    if not np.isfinite(p).all():
        bad = int((~np.isfinite(p)).any(1).sum())
        raise ConfigError(f"{bad} rows hold NaN or infinite probabilities (images that could not be predicted?); "
                          f"leave them out or fill them before writing the submission.")
    if column is not None:
        if column not in names:
            raise ConfigError(f"column {column!r} is not a class; the classes are: {', '.join(names)}.")
        j = names.index(column)
        p, names = p[:, [j]], [column_header or column]
    bounds = clip_bounds(clip)
    if bounds is not None:
        p = np.clip(p, *bounds)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([id_header, *names])
            for i, row in zip(ids, p):
                w.writerow([i, *(f"{v:.6g}" for v in row)])

    return atomic_write(Path(path), write)

"""Odd files: pictures a classifier should probably not learn from, whatever their label. Undecodable
(the loader already skips them), very small, of an extreme aspect ratio (the centre crop keeps little),
near-constant (blank, black, a flat colour), and outliers far from every class in feature space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class OddSettings:
    """The limits; `small` is a fraction of the training size (a 224 model upsamples a 50-pixel photo 4.5x)."""

    small: float = 0.25  # short side below this fraction of the image size
    aspect: float = 3.0  # long side over short side above this
    flat_std: float = 2.0  # grey-level standard deviation below this (of 255)
    outlier_z: float = 6.0  # robust z-score of the distance to the nearest class centre above this


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding it (EXIF rotation does not change the ratio
    or the short side), or None when the header cannot be read."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001  any failure means the decoder would fail too: listed as undecodable
        return None


def size_reasons(size: tuple[int, int], train_size: int, s: OddSettings) -> list[tuple[str, float]]:
    """('very small ...', score) and ('aspect ratio ...', score) where they apply."""
    w, h = size
    out = []
    short, long = min(w, h), max(w, h)
    limit = s.small * train_size
    if short < limit:
        out.append((f"very small: {w}x{h} pixels, trained at {train_size}", float(1 - short / limit / 2)))
    if short > 0 and long / short > s.aspect:
        ratio = long / short
        out.append((f"extreme aspect ratio {ratio:.1f}:1 ({w}x{h}): the centre crop keeps {short / long:.0%}",
                    float(min(1.0, 0.5 + (ratio - s.aspect) / (2 * s.aspect)))))
    return out


def flat_reason(std: float, s: OddSettings) -> tuple[str, float] | None:
    if std < s.flat_std:
        return f"near-constant picture (grey-level std {std:.2f})", float(1 - std / s.flat_std / 2)
    return None


def outlier_scores(unit: np.ndarray, targets: np.ndarray | None, labelled: np.ndarray) -> np.ndarray:
    """Robust z-score of each row's cosine distance to the nearest class centre (centred unit features). The
    centres are the labelled rows' class means; the z-score uses the median and MAD of all rows."""
    if targets is None or not labelled.any():
        centres = unit.mean(0, keepdims=True)
    else:
        t = np.asarray(targets)[labelled]
        x = unit[labelled]
        if t.ndim == 2:
            centres = np.stack([x[t[:, k] > 0.5].mean(0) for k in range(t.shape[1]) if (t[:, k] > 0.5).any()])
        else:
            centres = np.stack([x[t == c].mean(0) for c in np.unique(t)])
    centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    dist = 1.0 - (unit @ centres.T).max(1)
    med = np.median(dist)
    mad = np.median(np.abs(dist - med)) * 1.4826
    return (dist - med) / max(mad, 1e-6)

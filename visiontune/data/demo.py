"""The demo data set: scikit-learn's real handwritten digits (1,797 8x8 images), exported once as an
image folder under the visiontune cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .._core.paths import cache_home


def digits_folder(dest: str | os.PathLike | None = None) -> Path:
    """Export `sklearn.datasets.load_digits` to `dest/{train,valid}/<digit>/NNNN.png` (every 5th image is
    valid) and return `dest`. Written to a temporary folder and renamed, so it is complete or absent."""
    dest = Path(dest) if dest is not None else cache_home() / "datasets" / "digits"
    if (dest / ".complete").exists():
        return dest
    from sklearn.datasets import load_digits

    d = load_digits()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        folder = tmp / ("valid" if i % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).round().astype(np.uint8)).save(folder / f"{i:04d}.png")
    (tmp / ".complete").write_text("sklearn.datasets.load_digits\n")
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    return dest

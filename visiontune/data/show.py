"""`ImageData.show_batch`: a grid of images with their labels, as the model will see them."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from .._core.errors import bad_value
from .._core.figures import figure, finish
from .transforms import valid_transform

if TYPE_CHECKING:
    from .core import ImageData


def label_text(data: "ImageData", target, path: Path) -> str:
    """A class name, the labels of a multi-label image joined by ';', or the file name (test set)."""
    if isinstance(target, int) and target < 0:
        return path.name
    if getattr(target, "ndim", 0) == 1:
        return ";".join(data.classes[j] for j in np.flatnonzero(np.asarray(target))) or "(none)"
    return data.classes[int(target)]


def show_batch(data: "ImageData", path: str | os.PathLike | None = None, ds: str = "train", n: int = 9,
               augment: bool = True, ncols: int | None = None) -> Figure:
    """`n` random images of `ds` (seeded by the data's seed) with their labels -> a figure that shows itself in
    a notebook (PNG at `path`)."""
    if n < 1:
        raise bad_value("n", n, "at least 1")
    dset = data.dataset(ds)
    if ds == "train" and not augment:
        dset = dset.with_transform(valid_transform(data.size))
    order = np.random.default_rng(data.seed).permutation(len(dset))
    items = []
    for i in order:
        item = dset[int(i)]
        if item is not None:  # undecodable files are reported by the dataset and left out
            items.append((item[0], label_text(data, item[1], dset.files[int(i)])))
        if len(items) == n:
            break
    ncols = ncols or min(len(items), math.ceil(math.sqrt(len(items)))) or 1
    nrows = max(1, math.ceil(len(items) / ncols))
    fig = figure(2.2 * ncols, 2.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (x, text) in zip(axes, items):
        ax.imshow(x.permute(1, 2, 0).numpy())
        ax.set_title(text, fontsize=9)
    return finish(fig, path)

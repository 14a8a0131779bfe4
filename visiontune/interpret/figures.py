"""Interpretation figures: picture grids (with Grad-CAM overlays), the confusion matrix, the first layer's
kernels and feature maps. Each returns a matplotlib Figure built without pyplot and writes a PNG when given
a path (see plots.py)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from .._core.figures import figure, finish
from ..data.transforms import valid_transform
from .gradcam import conv_layers, feature_maps, grad_cam

if TYPE_CHECKING:
    from ..train.learner import Learner

CAM_BATCH = 16


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, cmap: str = "magma") -> np.ndarray:
    """A uint8 HWC picture blended with a [0, 1] heatmap of the same size in `cmap` colours."""
    heat = colormaps[cmap](np.clip(cam, 0, 1))[..., :3] * 255.0
    return ((1 - alpha) * image.astype(np.float32) + alpha * heat).round().clip(0, 255).astype(np.uint8)


def load_pictures(learn: "Learner", ds: str, positions: Sequence[int]) -> list[torch.Tensor]:
    """The pictures at `positions` of `ds` as the model sees them (valid transform, uint8 CHW). A file that
    no longer decodes gives a grey square."""
    dset = learn.data.dataset(ds)
    if ds == "train":
        dset = dset.with_transform(valid_transform(learn.data.size))
    size = learn.data.size
    out = []
    for p in positions:
        item = dset[int(p)]
        out.append(item[0] if item is not None else torch.full((3, size, size), 128, dtype=torch.uint8))
    return out


def cam_overlays(learn: "Learner", pictures: Sequence[torch.Tensor], classes: torch.Tensor) -> list[np.ndarray]:
    """Each uint8 CHW picture (HWC out) overlaid with its Grad-CAM map for the class in `classes`."""
    from ..infer.predict import prepare_batch

    cams = []
    for s in range(0, len(pictures), CAM_BATCH):
        x = prepare_batch(learn, list(pictures[s : s + CAM_BATCH]))
        cams.append(grad_cam(learn.model, x, classes[s : s + CAM_BATCH]))
    cam = torch.cat(cams).numpy() if cams else np.zeros((0, 1, 1))
    return [overlay(to_hwc(t), c) for t, c in zip(pictures, cam)]


def to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def _grid(n: int, ncols: int | None, cell: float = 2.4):
    ncols = ncols or max(1, min(n, math.ceil(math.sqrt(n))))
    nrows = max(1, math.ceil(n / ncols))
    fig = figure(cell * ncols, (cell + 0.5) * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    return fig, axes


def short_name(name: str, width: int = 24) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def item_grid(items: list[dict], path=None, title: str | None = None, ncols: int | None = None) -> Figure:
    """Pictures titled `predicted / actual`, `loss / probability of actual` and the file name."""
    fig, axes = _grid(max(len(items), 1), ncols)
    if not items:
        axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    for ax, it in zip(axes, items):
        ax.imshow(it.get("heatmap", it["image"]))
        ax.set_title(f"{it['pred']} / {it['actual']}\n{it['loss']:.2f} / {it['prob']:.2f}\n"
                     f"{short_name(it['file'].name)}", fontsize=8)
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def plot_confusion_matrix(cm: np.ndarray, classes: Sequence[str], path=None, normalize: bool = False,
                          cmap: str = "Blues") -> Figure:
    """Rows actual, columns predicted; `normalize` shows each row as fractions of its actual class."""
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(classes)
    values = cm.astype(np.float64)
    if normalize:
        values = values / np.maximum(values.sum(1, keepdims=True), 1)
    side = min(max(4.5, 0.45 * n + 2.5), 20)
    fig = figure(side + 1, side)
    ax = fig.subplots()
    disp = ConfusionMatrixDisplay(values if normalize else cm, display_labels=list(classes))
    disp.plot(ax=ax, cmap=cmap, include_values=n <= 30, values_format=".2f" if normalize else "d",
              xticks_rotation="vertical" if n > 6 or max(map(len, classes), default=0) > 8 else "horizontal",
              colorbar=True)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix" + (" (fraction of each actual class)" if normalize else ""))
    return finish(fig, path)


def plot_filters(model: torch.nn.Module, path=None, max_filters: int = 64) -> Figure:
    """The first conv layer's kernels, each scaled to its own range; RGB when the layer sees colour."""
    name, conv = conv_layers(model)[0]
    w = conv.weight.detach().float().cpu()
    n = min(w.shape[0], max_filters)
    fig, axes = _grid(n, min(n, 8), cell=1.0)
    for ax, k in zip(axes, w[:n]):
        k = k[:3] if k.shape[0] >= 3 else k[:1].expand(3, -1, -1)
        k = (k - k.min()) / (k.max() - k.min()).clamp_min(1e-12)
        ax.imshow(k.permute(1, 2, 0).numpy(), interpolation="nearest")
    fig.suptitle(f"{name}: {w.shape[0]} kernels {w.shape[2]}x{w.shape[3]}" + (f" (first {n})" if n < w.shape[0] else ""))
    return finish(fig, path)


def plot_activations(learn: "Learner", img, path=None, n: int = 8, layers: Sequence[str] | None = None) -> Figure:
    """The image, then for each of a few conv layers its `n` feature maps with the highest mean activation."""
    from ..infer.predict import item_to_tensor, prepare_batch

    t = item_to_tensor(img, learn.data.size)
    maps = feature_maps(learn.model, prepare_batch(learn, [t]), layers)
    ncols = max(n, 1)
    fig = figure(1.6 * ncols, 1.9 * (len(maps) + 1))
    axes = fig.subplots(len(maps) + 1, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(t.permute(1, 2, 0).numpy())
    axes[0, 0].set_title("input", fontsize=8)
    for row, (name, fm) in zip(axes[1:], maps):
        top = fm.mean((1, 2)).argsort(descending=True)[:ncols]
        for j, (ax, c) in enumerate(zip(row, top.tolist())):
            ax.imshow(fm[c].numpy(), cmap="viridis")
            ax.set_title((f"{short_name(name, 18)}\n{fm.shape[0]} maps {fm.shape[1]}x{fm.shape[2]}: #{c}" if j == 0
                          else f"#{c}"), fontsize=7)
    return finish(fig, path)

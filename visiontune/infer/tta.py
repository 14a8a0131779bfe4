"""Test-time augmentation: predict each image as it is and in n augmented versions, then mix (fastai's TTA).

The augmented versions are deterministic, so `tta()` gives the same numbers every time: zoom crops by
`scale` (center, then the corners) combined with the symmetries the training augmentation used
(horizontal flips for `side_on`, the 8 dihedral rotations/flips for `top_down`, none without a preset,
since a model never shown mirrored digits should not be asked about them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torchvision.transforms.v2 import functional as TF

from .._core import console as _console
from .._core.errors import ConfigError
from ..data.transforms import AugmentConfig, valid_transform
from .data import as_dataset
from .predict import eval_mode, get_preds, image_loader, inference_model, is_named_set, report_left_out
from .progress import image_progress, show_progress

if TYPE_CHECKING:
    from ..train.learner import Learner

# (row, column) position of each zoom crop, as fractions of the free space: center, then the corners.
POSITIONS = ((0.5, 0.5), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0))


def symmetries(aug: AugmentConfig | None) -> int:
    """How many symmetries TTA may use: 8 (dihedral) for top_down, 2 (h-flip) for side_on, else 1."""
    if aug is None or aug.augment is None:
        return 1
    if aug.augment == "top_down":
        return 8
    return 2 if aug.flip else 1


def apply_symmetry(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry k of the square: k % 4 quarter turns, then a horizontal flip when k >= 4 (k=1 alone: h-flip
    when only flips are allowed, see `view_plan`)."""
    out = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return out.flip(-1) if k >= 4 else out


def view_plan(n: int, n_sym: int) -> list[tuple[int, tuple[float, float]]]:
    """The n augmented views as (symmetry, crop position): symmetries and positions cycle together, so
    n=4 with flips gives flipped-center, top-left, flipped-bottom-right, top-right."""
    plan = []
    for i in range(n):
        s = (i + 1) % n_sym
        sym = 4 if (n_sym == 2 and s == 1) else s  # with flips only, the one symmetry is the h-flip
        plan.append((sym, POSITIONS[i % len(POSITIONS)]))
    return plan


class TTAViews:
    """uint8 (3, H, W) image at its presize -> uint8 (1 + n, 3, size, size): the plain valid view first,
    then the n augmented views of `view_plan`."""

    def __init__(self, size: int, n: int, scale: float, aug: AugmentConfig | None):
        self.size, self.scale = size, scale
        self.plain = valid_transform(size)
        self.plan = view_plan(n, symmetries(aug))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.size
        zoomed = TF.resize(x, max(s, round(s * self.scale)), antialias=True)
        h, w = zoomed.shape[-2:]
        views = [self.plain(x)]
        for sym, (row, col) in self.plan:
            top, left = round((h - s) * row), round((w - s) * col)
            views.append(apply_symmetry(zoomed[:, top:top + s, left:left + s], sym))
        return torch.stack(views)


def tta(learn: "Learner", ds="valid", n: int = 4, beta: float = 0.25, scale: float = 1.1,
        bs: int | None = None, with_index: bool = False, report_skipped: bool = True):
    """(probs, targets[, index]): `beta * plain + (1 - beta) * mean(n augmented)`, as fastai's `tta`.

    `ds` takes what `get_preds` takes ('valid', 'train', 'test', files, folders, globs). `n=0` is plain
    `get_preds`. Images are decoded once; every view of a batch goes through the full model, so with
    precompute on, TTA runs on images (cached activations cannot be augmented)."""
    if n < 0:
        raise ConfigError(f"n is the number of augmented views and cannot be negative; got {n}.")
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"beta is the weight of the un-augmented predictions, between 0 and 1; got {beta}.")
    if scale < 1.0:
        raise ConfigError(f"scale is the zoom of the augmented crops and must be at least 1.0; got {scale}.")
    if n == 0:
        return get_preds(learn, ds, with_index=with_index, bs=bs, report_skipped=report_skipped)
    if learn.precompute:
        _console.notice("tta runs the full model on images: cached activations cannot be augmented.")
    dset = learn.data.dataset(ds) if is_named_set(ds) else as_dataset(learn.data, ds)
    views = TTAViews(learn.data.size, n, scale, getattr(learn.data, "aug", None))
    dl = image_loader(learn, dset.with_transform(views), bs, channels_last=False)  # 5-D batches; per view below
    plain, augmented, targs, index, model = [], [], [], [], None
    label = ds if is_named_set(ds) else "images"
    with eval_mode(learn), image_progress(len(dset), f"tta {label}", show_progress(learn, len(dset))) as advance:
        for x, y, idx in dl.iter_with_index():
            batch_views = [x[:, v].contiguous(memory_format=_fmt(learn)) for v in range(x.shape[1])]
            if model is None:  # once per pass: the weights do not change in it
                model = inference_model(learn, batch_views[0])
            probs = [learn.activation(model(view).float()).cpu() for view in batch_views]
            plain.append(probs[0])
            augmented.append(torch.stack(probs[1:]).mean(0))
            targs.append(y.cpu())
            index.append(idx)
            advance(len(idx))
    ix = torch.cat(index) if index else torch.empty(0, dtype=torch.long)
    if report_skipped:
        report_left_out(len(dset), len(ix), label)
    empty = torch.empty(0, learn.data.c)
    p = torch.lerp(torch.cat(augmented) if augmented else empty, torch.cat(plain) if plain else empty, beta)
    t = (torch.cat(targs) if targs else torch.empty(0)) if dset.is_labelled else None
    return (p, t, ix) if with_index else (p, t)


def _fmt(learn: "Learner") -> torch.memory_format:
    return torch.channels_last if learn.channels_last else torch.contiguous_format

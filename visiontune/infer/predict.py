"""Predictions: batched `get_preds` over a dataset and `predict` for a single image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .. import _console
from ..data.decode import open_image, to_rgb
from ..data.transforms import pil_to_uint8, presize, valid_transform
from ..distributed import gather_cat, is_distributed
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..train.learner import Learner


def get_preds(learn: "Learner", ds: str = "valid", with_loss: bool = False, with_index: bool = False):
    """(probs, targets[, losses][, index]) over `ds` in file order, batched under inference_mode.

    Targets are None for the unlabelled test set. Items that could not be decoded are left out with
    a notice; `with_index=True` also returns the dataset positions of the rows."""
    from ..train import oom

    while True:
        try:
            probs, targs, losses, index = _predict_pass(learn, ds, with_loss)
            break
        except BaseException as e:  # noqa: BLE001
            if not (oom.is_oom(e) and not is_distributed() and oom.shrink_batch(learn, "prediction")):
                raise
    n_total = len(learn.data.dataset(ds))
    p = torch.cat(probs) if probs else torch.empty(0, learn.data.c)
    t = torch.cat(targs) if targs else torch.empty(0, dtype=torch.long)
    ix = torch.cat(index) if index else torch.empty(0, dtype=torch.long)
    l = torch.cat(losses) if losses else torch.empty(0)
    if is_distributed():  # each rank predicted a shard: gather and put back in file order
        p, t, ix = gather_cat(p), gather_cat(t), gather_cat(ix)
        l = gather_cat(l) if with_loss else l
        order = torch.argsort(ix)
        p, t, ix = p[order], t[order], ix[order]
        l = l[order] if with_loss else l
    if len(ix) < n_total:
        _console.notice(f"{n_total - len(ix)} of {n_total} {ds} images could not be decoded and were left out.")
    labelled = learn.data.dataset(ds).is_labelled
    out: list[Any] = [p, t if labelled else None]
    if with_loss:
        out.append(l)
    if with_index:
        out.append(ix)
    return tuple(out)


def _predict_pass(learn: "Learner", ds: str, with_loss: bool):
    dl = learn.dl(ds, augment=False)
    model = learn.model
    was_training = model.training
    model.eval()
    probs, targs, losses, index = [], [], [], []
    try:
        with torch.inference_mode(), learn._autocast():
            for x, y, idx in dl.iter_with_index():
                out = learn.forward(x).float()
                probs.append(learn.activation(out).cpu())
                targs.append(y.cpu())
                index.append(idx)
                if with_loss:
                    losses.append(_per_item_loss(learn.loss_func, out, y).cpu())
    finally:
        model.train(was_training)
    return probs, targs, losses, index


def _per_item_loss(loss_fn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if isinstance(loss_fn, torch.nn.BCEWithLogitsLoss):
        return torch.nn.functional.binary_cross_entropy_with_logits(out, y.float(), reduction="none").mean(1)
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        return torch.nn.functional.cross_entropy(out, y, reduction="none", label_smoothing=loss_fn.label_smoothing)
    reduction = getattr(loss_fn, "reduction", None)
    if reduction is None:
        raise ConfigError("with_loss=True needs a loss function with a `reduction` attribute.")
    old = loss_fn.reduction
    loss_fn.reduction = "none"
    try:
        return loss_fn(out, y)
    finally:
        loss_fn.reduction = old


def item_to_tensor(item, size: int) -> torch.Tensor:
    """A path, PIL image, HWC numpy array (uint8 or 0..1 floats) or CHW tensor -> uint8 (3, size, size)."""
    short = presize(size)
    if isinstance(item, (str, os.PathLike)):
        t = pil_to_uint8(open_image(Path(item), min_size=short), short)
    elif isinstance(item, Image.Image):
        t = pil_to_uint8(to_rgb(item), short)
    elif isinstance(item, np.ndarray):
        arr = item
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255 if arr.max(initial=0) <= 1.0 else 1), 0, 255).round().astype(np.uint8)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        if arr.ndim != 3:
            raise ConfigError(f"A numpy image must be HxW or HxWxC, got shape {item.shape}.")
        t = pil_to_uint8(to_rgb(Image.fromarray(arr[..., :4] if arr.shape[-1] >= 3 else arr[..., 0])), short)
    elif isinstance(item, torch.Tensor):
        t = item.detach().cpu()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise ConfigError(f"A tensor image must be CxHxW, got shape {tuple(item.shape)}.")
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        t = pil_to_uint8(Image.fromarray(t[:3].permute(1, 2, 0).contiguous().numpy()), short)
    else:
        raise ConfigError(f"Cannot predict on a {type(item).__name__}: pass a file path, PIL image, numpy array or tensor.")
    return valid_transform(size)(t)


def decode_probs(learn: "Learner", probs: torch.Tensor):
    """One row of probabilities -> (label, index, probs); multi-label -> (labels, indices, probs)."""
    classes = learn.data.classes
    if getattr(learn.data, "is_multi_label", False):
        idx = torch.nonzero(probs > learn.thresh).flatten().tolist()
        return [classes[i] for i in idx], idx, probs
    i = int(probs.argmax())
    return classes[i], i, probs


def prepare_batch(learn: "Learner", tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack uint8 images and normalize them on the learner's device, as training batches are."""
    from ..data.loader import Normalize

    return Normalize(learn.device, learn.data.mean, learn.data.std, learn.channels_last)(torch.stack(tensors))


def predict(learn: "Learner", item):
    """(label, index, probs) for one image; always through the full model (images, not cached features)."""
    x = prepare_batch(learn, [item_to_tensor(item, learn.data.size)])
    model = learn.model
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), learn._autocast():
            probs = learn.activation(model(x).float())[0].cpu()
    finally:
        model.train(was_training)
    return decode_probs(learn, probs)

"""Predictions: batched `get_preds` over a dataset or new files, and `predict` for a single image."""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from PIL import Image

from .._core import console as _console
from .._core.allocator import release_freed_memory
from .._core.distributed import gather_cat, is_distributed
from .._core.errors import ConfigError, DataError
from ..data.decode import open_image, to_rgb
from ..data.loader import DeviceLoader, EpochSampler, Normalize
from ..data.transforms import pil_to_uint8, presize, valid_transform
from ..models.fold import WeightsKey, fold_batchnorm, has_hooks
from .data import FileImages, as_dataset
from .progress import image_progress, show_progress

if TYPE_CHECKING:
    from ..data.core import ImageDataset
    from ..train.learner import Learner

log = logging.getLogger("visiontune")

NAMED_SETS = ("train", "valid", "test")


def is_named_set(ds) -> bool:
    return isinstance(ds, str) and ds in NAMED_SETS


def image_loader(learn: "Learner", dset: "ImageDataset", bs: int | None = None,
                 channels_last: bool | None = None) -> DeviceLoader:
    """In-order, un-augmented device loader of images over any ImageDataset (new files, TTA views)."""
    if isinstance(dset, FileImages):
        raw = dset.loader(bs or learn.data.bs, learn.device, learn.data.default_workers(learn.device))
    else:
        raw = learn.data.loader(dset, bs=bs, shuffle=False, drop_last=False, augment=False, device=learn.device,
                                sampler=EpochSampler(len(dset), False, dataset=dset))  # never sharded
    cl = learn.channels_last if channels_last is None else channels_last
    return DeviceLoader(raw, learn.device, *learn.norm_stats(), cl)


def get_preds(learn: "Learner", ds="valid", with_loss: bool = False, with_index: bool = False,
              bs: int | None = None, report_skipped: bool = True, local: bool = False):
    """(probs, targets[, losses][, index]) over `ds` in file order, batched under inference_mode.

    `ds` is 'valid', 'train' or 'test' (through cached activations when precompute is on), or new
    images: a folder, a file, a glob, a list of them, or an ImageDataset. Targets are None for
    unlabelled images. Items that cannot be decoded are left out with a notice (unless
    `report_skipped=False`); `with_index=True` also returns the dataset positions of the rows.
    An out-of-memory error halves the batch size and starts again; under torchrun each process
    predicts a shard of a named set and the rows are gathered back into file order, unless `local`: then
    this process predicts every item itself (the report on rank 0)."""
    from ..train import oom

    sharded = is_named_set(ds) and not (local and is_distributed())
    dset = learn.data.dataset(ds) if is_named_set(ds) else as_dataset(learn.data, ds)
    if with_loss and not dset.is_labelled:
        raise ConfigError("with_loss=True needs labelled images; these have no targets.")
    label = ds if is_named_set(ds) else "images"
    size = {"bs": bs}

    def halve() -> None:
        size["bs"] = None if size["bs"] is None else max(size["bs"] // 2, 1)

    probs, targs, losses, index = oom.with_retry(
        learn, "prediction", lambda: _predict_pass(learn, sharded, dset, with_loss, size["bs"], label), halve)
    p = torch.cat(probs) if probs else torch.empty(0, learn.data.c)
    t = torch.cat(targs) if targs else torch.empty(0, dtype=torch.long)
    ix = torch.cat(index) if index else torch.empty(0, dtype=torch.long)
    l = torch.cat(losses) if losses else torch.empty(0)
    if sharded and is_distributed():  # each rank predicted a shard: gather and put back in file order
        p, t, ix = gather_cat(p), gather_cat(t), gather_cat(ix)
        l = gather_cat(l) if with_loss else l
        order = torch.argsort(ix)
        p, t, ix = p[order], t[order], ix[order]
        l = l[order] if with_loss else l
    if report_skipped:
        report_left_out(len(dset), len(ix), label)
    out: list[Any] = [p, t if dset.is_labelled else None]
    if with_loss:
        out.append(l)
    if with_index:
        out.append(ix)
    return tuple(out)


def _predict_pass(learn: "Learner", sharded: bool, dset, with_loss: bool, bs: int | None, label: str):
    dl = learn.dl(label, augment=False, bs=bs) if sharded else image_loader(learn, dset, bs)
    # cached activations (the head alone predicts) or a compiled model: through learn.forward
    direct = sharded and (learn.precompute or learn.accel.compile)
    probs, targs, losses, index = [], [], [], []
    forward = learn.forward if direct else None
    with eval_mode(learn), image_progress(len(dset), f"predict {label}", show_progress(learn, len(dset))) as advance:
        for x, y, idx in dl.iter_with_index():
            if forward is None:  # once per pass: the weights do not change in it
                forward = inference_model(learn, x)
            out = forward(x).float()
            probs.append(learn.activation(out).cpu())
            targs.append(y.cpu())
            index.append(idx)
            if with_loss:
                losses.append(_per_item_loss(learn.loss_func, out, y).cpu())
            advance(len(idx))
    return probs, targs, losses, index


@contextlib.contextmanager
def eval_mode(learn: "Learner") -> Iterator[None]:
    """Eval mode, inference_mode and the learner's autocast for a block; the train/eval state is restored.
    Memory that training freed but the process still holds goes back to the OS first (`release_freed_memory`)."""
    release_freed_memory()
    was_training = learn.model.training
    learn.model.eval()
    try:
        with torch.inference_mode(), learn.autocast():
            yield
    finally:
        learn.model.train(was_training)


def inference_model(learn: "Learner", x: torch.Tensor) -> torch.nn.Module:
    """The module that predicts for `learn` on batches like `x`, inside `eval_mode`: a copy of `learn.model`
    with its BatchNorms folded into the convolutions (same outputs to float rounding, a 1.24-1.40x faster forward
    for Lite0 on the CPU), made again whenever the weights change (see WeightsKey). `learn.model` itself when
    it has forward hooks (they must run), is compiled, or nothing folds."""
    model = learn.model
    if has_hooks(model) or getattr(getattr(learn, "accel", None), "compile", False):
        return model
    try:
        key = WeightsKey(model)
    except Exception as e:  # e.g. uninitialized (lazy) parameters: predict with the model as it is
        log.debug("BatchNorm folding skipped: %s", e)
        return model
    cached = learn.__dict__.get("_folded")
    if cached is None or cached[0]() is not model or cached[1] != key:
        learn.__dict__.pop("_folded", None)  # the old copy's memory first
        try:
            folded = fold_batchnorm(model, x)
        except Exception as e:  # a model that cannot be copied or probed predicts as it is, until it changes
            log.debug("BatchNorm folding skipped: %s", e)
            folded = None
        learn.__dict__["_folded"] = cached = (weakref.ref(model), key, folded)  # a replaced model is not kept
    return cached[2] if cached[2] is not None else model


def report_left_out(n_total: int, n_kept: int, what: str) -> None:
    if n_kept < n_total:
        _console.notice(f"{n_total - n_kept} of {n_total} {what} images could not be decoded and were left out.")


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


# ---------------------------------------------------------------------------- one image


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    """HxW, HxWxC or CxHxW numpy image (uint8, 16-bit, bool or 0..1 / 0..255 floats) -> RGB PIL image."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or 0 in arr.shape:
        raise ConfigError(f"A numpy image must be HxW, HxWx3/4 or 3xHxW; got shape {arr.shape}.")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ConfigError("The numpy image holds NaN or infinite values.")
        arr = np.clip(arr * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))


def _tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """CxHxW (or 1xCxHxW, HxW) tensor, uint8 or 0..1 floats -> RGB PIL image."""
    t = t.detach().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ConfigError(f"A tensor image must be CxHxW with 1, 3 or 4 channels; got shape {tuple(t.shape)}.")
    arr = t.permute(1, 2, 0).numpy()
    return _array_to_pil(arr[..., :3] if arr.shape[-1] == 4 else arr)


def item_to_tensor(item, size: int, short_side: int | None = None) -> torch.Tensor:
    """A path, PIL image, numpy array or tensor -> uint8 (3, size, size), exactly as valid images are
    prepared (short side to `short_side`, default presize(size), then resize and center crop)."""
    short = short_side or presize(size)
    if isinstance(item, (str, os.PathLike)):
        path = Path(item).expanduser()
        if not path.is_file():
            raise DataError(f"No image file at {path}" + (" (it is a folder: use learn.get_preds(ds=folder))."
                                                          if path.is_dir() else "."))
        pil = open_image(path, min_size=short)
    elif isinstance(item, Image.Image):
        pil = to_rgb(item)
    elif isinstance(item, np.ndarray):
        pil = _array_to_pil(item)
    elif isinstance(item, torch.Tensor):
        pil = _tensor_to_pil(item)
    else:
        raise ConfigError(f"Cannot predict on a {type(item).__name__}: pass a file path, PIL image, numpy array "
                          f"or tensor.")
    return valid_transform(size)(pil_to_uint8(pil, short))


def decode_probs(learn: "Learner", probs: torch.Tensor):
    """One row of probabilities -> (label, index, probs); multi-label -> (labels, indices, probs)."""
    from ..train.metrics import decide

    classes = learn.data.classes
    multi = bool(getattr(learn.data, "is_multi_label", False))
    picked = decide(probs[None], classes, multi, learn.thresh, getattr(learn, "decision", None))[0]
    if multi:
        idx = torch.nonzero(picked).flatten().tolist()
        return [classes[i] for i in idx], idx, probs
    i = int(picked)
    return classes[i], i, probs


def prepare_batch(learn: "Learner", tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack uint8 images and normalize them on the learner's device, as training batches are."""
    return Normalize(learn.device, *learn.norm_stats(), learn.channels_last)(torch.stack(tensors))


def predict(learn: "Learner", item):
    """(label, index, probs) for one image; always through the full model (images, not cached features)."""
    x = prepare_batch(learn, [item_to_tensor(item, learn.data.size, getattr(learn.data, "presize", None))])
    with eval_mode(learn):
        probs = learn.activation(inference_model(learn, x)(x).float())[0].cpu()
    return decode_probs(learn, probs)


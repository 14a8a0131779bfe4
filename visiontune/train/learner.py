"""Learner: a model, its data, an optimizer over layer groups, and the one training loop, with callbacks.

Everything else is a callback (schedules, the lr finder, progress, recording, checkpoints, run folders,
early stopping) or a small piece the Learner holds (the Accelerator: device, mixed precision, DDP).
The public verbs (`fit_one_cycle`, `lr_find`, `get_preds`, `export`, ...) are in api.py, mixed in.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from .._core import console as _console
from .._core.allocator import note_training_ended
from .._core.distributed import all_reduce_sum, gather_cat, is_main_process
from . import oom
from . import schedules as S
from .api import LearnerAPI
from .callbacks import (
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelTrainException,
    CancelValidException,
    SkipFitException,
)
from .device import Accelerator, _resolve_amp  # noqa: F401  (_resolve_amp: tests and older imports)
from .freeze import set_train_mode
from .metrics import Metric, get_metrics
from .optim import Lrs, build_optimizer, get_hyper, lr_per_group
from .progress import ProgressCallback
from .recorder import Recorder

ParamScheduler = S.ParamScheduler  # where it was before schedules.py owned it


class Learner(LearnerAPI):
    """Trains `model` on `data`. Build one with `vision_learner(data, arch)`.

    The loop fires fastai's callback events; every feature is a callback, so the loop stays short."""

    def __init__(self, data, model: nn.Module, loss_func: nn.Module | None = None, metrics: Iterable = ("accuracy",),
                 opt: str = "adamw", wd: float = 0.01, lr: float | None = None, cbs: Iterable[Callback] = (),
                 device: str | torch.device | None = None, path: str | os.PathLike | None = None,
                 model_dir: str = "models", train_bn: bool = True, freeze_bn_stats: bool = True,
                 mixed_precision: str | bool | None = None, channels_last: bool | None = None, sync_bn: bool = False,
                 compile: bool = False, thresh: float = 0.5, quiet: bool = False):
        self.data, self.model, self.thresh, self.decision = data, model, thresh, None
        self.accel = Accelerator(device, mixed_precision, channels_last, sync_bn, compile)
        self.accel.prepare(model)
        multi = bool(getattr(data, "is_multi_label", False))
        self.loss_func = (loss_func or (nn.BCEWithLogitsLoss() if multi else nn.CrossEntropyLoss())).to(self.device)
        self.metrics: list[Metric] = get_metrics(metrics, multi_label=multi, thresh=thresh)
        self.opt_name, self.wd, self._lr = opt, wd, lr
        self.path = Path(path) if path is not None else Path(getattr(data, "path", None) or ".")
        self.model_dir, self.train_bn, self.freeze_bn_stats = model_dir, train_bn, freeze_bn_stats
        self.quiet = quiet or _console.quiet()
        self.opt: torch.optim.Optimizer | None = None
        self._ddp: nn.Module | None = None
        self._precompute, self._loaders = False, {}
        self.epoch = self.n_epoch = self.iter = self.n_iter = self.train_iter = self._fit_steps = 0
        self.start_epoch = self.start_iter = 0  # where a fit starts; a callback may move it in before_fit (resume)
        self.training, self.retrying, self.recording = False, False, True
        self.valid_loss, self.last_metrics, self.frozen_to = math.nan, {}, 0
        self.cbs: list[Callback] = []
        self.recorder = Recorder()
        self.add_cbs([self.recorder, ProgressCallback(), *cbs])

    # ------------------------------------------------------------------ callbacks and events
    def add_cbs(self, cbs: Iterable[Callback]) -> None:
        for cb in cbs:
            cb.learn = self
            self.cbs.append(cb)
            if not hasattr(self, cb.name):
                setattr(self, cb.name, cb)
            if hasattr(cb, "after_create"):
                cb.after_create()
        self.cbs.sort(key=lambda c: c.order)

    def remove_cbs(self, cbs: Iterable[Callback]) -> None:
        for cb in cbs:
            if cb in self.cbs:
                self.cbs.remove(cb)
            if getattr(self, cb.name, None) is cb:
                delattr(self, cb.name)

    @contextlib.contextmanager
    def added_cbs(self, cbs: Iterable[Callback]):
        cbs = list(cbs)
        self.add_cbs(cbs)
        try:
            yield
        finally:
            self.remove_cbs(cbs)

    def _event(self, name: str) -> None:
        for cb in list(self.cbs):
            fn = getattr(cb, name, None)
            if fn is not None and (self.recording or not cb.records):
                fn()

    def _with_events(self, f, name: str, cancel: type[Exception]) -> None:
        """before_{name}, f(), after_{name}; `cancel` skips the rest and fires after_cancel_{name} first."""
        try:
            self._event(f"before_{name}")
            f()
        except cancel:
            self._event(f"after_cancel_{name}")
        self._event(f"after_{name}")

    # ------------------------------------------------------------------ properties
    device = property(lambda self: self.accel.device)
    mixed_precision = property(lambda self: self.accel.mixed_precision)
    scaler = property(lambda self: self.accel.scaler)
    channels_last = property(lambda self: self.accel.channels_last)
    compile = property(lambda self: self.accel.compile)
    is_main_process = property(lambda self: is_main_process())

    @property
    def preprocess(self):
        """How images are fed to the model (its normalization): the model's own, never the data's."""
        return getattr(self.model, "preprocess", None)

    @property
    def continuing(self) -> bool:
        """True in a fit that starts after its beginning (a resumed run)."""
        return self.start_epoch > 0 or self.start_iter > 0

    @property
    def layer_groups(self) -> list[list[nn.Module]]:
        """The model's layer groups; a model without `layer_groups` is one group."""
        return getattr(self.model, "layer_groups", None) or [[self.model]]

    @property
    def n_groups(self) -> int:
        return len(self.layer_groups)

    @property
    def lr(self) -> float:
        """Default lr when none is given: 3e-3 while the body is frozen (head only), else 1e-3."""
        return self._lr if self._lr is not None else (3e-3 if self.body_frozen else 1e-3)

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = value

    @property
    def body_frozen(self) -> bool:
        return self.frozen_to >= self.n_groups - 1

    def hypers(self, name: str) -> list[float]:
        return get_hyper(self.opt, name) if self.opt is not None else [float("nan")]

    def autocast(self):
        return self.accel.autocast()

    _autocast = autocast

    # ------------------------------------------------------------------ train mode
    def set_train_mode(self) -> None:
        set_train_mode(self.model, self.layer_groups, self.frozen_to, self.freeze_bn_stats)

    # ------------------------------------------------------------------ data and the forward pass
    def dl(self, ds: str = "train", augment: bool = True, bs: int | None = None):
        """The device loader for `ds` ('train' | 'valid' | 'test'), through cached features when precompute is on."""
        key = (ds, self._precompute, augment, bs)
        if key not in self._loaders:
            if self._precompute:
                from .precompute import feature_loader

                self._loaders[key] = feature_loader(self, ds, shuffle=(ds == "train" and augment), bs=bs)
            else:
                from ..data.loader import DeviceLoader

                raw = self.data.loader(ds, bs=bs, augment=augment, device=self.device)
                self._loaders[key] = DeviceLoader(raw, self.device, *self.norm_stats(), self.channels_last)
        return self._loaders[key]

    train_dl = property(lambda self: self.dl("train"))
    valid_dl = property(lambda self: self.dl("valid"))

    def norm_stats(self) -> tuple:
        """(mean, std) the model's images are normalized with; (None, None) for a model without preprocessing."""
        pre = self.preprocess
        return (pre.mean, pre.std) if pre is not None else (None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The head alone on features when precompute is on; through the DDP wrapper while training under
        torchrun, and the compiled module with `compile=True`."""
        if self.training and self._ddp is not None:
            return self._ddp(x)
        return self.accel.compiled(self.model.head if self._precompute else self.model)(x)

    def activation(self, out: torch.Tensor) -> torch.Tensor:
        """Logits -> probabilities: sigmoid for multi-label, softmax otherwise."""
        out = out.float()
        return torch.sigmoid(out) if isinstance(self.loss_func, nn.BCEWithLogitsLoss) else torch.softmax(out, 1)

    # ------------------------------------------------------------------ the loop
    def _do_batch(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        self.xb, self.yb, self.batch_size, self.loss = xb, yb, len(yb), None
        self._with_events(self._one_batch, "batch", CancelBatchException)

    def _one_batch(self) -> None:
        with self.autocast():
            self.pred = self.forward(self.xb)
            self._event("after_pred")
            self.loss = self.loss_func(self.pred.float(), self.yb)
        self.loss_value = self.loss.detach().float().item()
        self._event("after_loss")
        if self.training:
            self._event("before_backward")
            self.accel.backward_step(self.loss, self.opt, lambda: self._event("after_backward"))
            self._event("after_step")
            self.opt.zero_grad(set_to_none=True)
            self._fit_steps += 1

    def _train_batches(self, dl) -> None:
        for self.iter, (xb, yb) in enumerate(dl, self.first_iter):
            self.train_iter = self.epoch * self.n_iter + self.iter
            self._do_batch(xb, yb)

    def _do_epoch(self) -> None:
        self.training = True
        self.set_train_mode()
        dl = self.train_dl
        self.first_iter, self.start_iter = self.start_iter, 0
        dl.set_epoch(self.epoch, skip_batches=self.first_iter)
        self.n_iter = len(dl)
        self._with_events(lambda: self._train_batches(dl), "train", CancelTrainException)
        self._do_validate()

    def _do_validate(self, ds: str = "valid") -> None:
        self.training = False
        self.model.eval()
        self._with_events(lambda: self._validate_batches(ds), "validate", CancelValidException)

    def _validate_batches(self, ds: str) -> None:
        probs, targs, loss_sum, n = [], [], 0.0, 0
        with torch.inference_mode():
            for self.iter, (xb, yb) in enumerate(self.dl(ds)):
                self._do_batch(xb, yb)
                probs.append(self.activation(self.pred))
                targs.append(yb)
                loss_sum += self.loss_value * len(yb)
                n += len(yb)
        self.valid_loss = self._reduce_mean(loss_sum, n)
        if probs:
            p, t = gather_cat(torch.cat(probs)), gather_cat(torch.cat(targs))
            self.last_metrics = {m.name: m(p.cpu(), t.cpu()) for m in self.metrics}

    def _do_fit(self) -> None:
        self._ddp = self.accel.wrap_ddp(self.model.head if self._precompute else self.model)
        for self.epoch in range(self.start_epoch, self.n_epoch):
            self.valid_loss, self.last_metrics = math.nan, {}
            self._with_events(self._do_epoch, "epoch", CancelEpochException)

    def _run_fit(self) -> None:
        self._fit_steps = self.start_epoch = self.start_iter = 0
        try:
            self._with_events(self._do_fit, "fit", CancelFitException)
        except SkipFitException:
            return
        except BaseException as e:
            instead = oom.fit_failed(self, e)
            self._event("after_cancel_fit" if isinstance(instead, oom.FitOOM) else "after_fail")
            if instead is not None:
                raise instead from e
            raise
        finally:
            self._ddp = None
            note_training_ended()

    def _fit(self, n_epoch: int, lrs: Lrs | None = None, schedule: S.Schedule | None = None, wd: float | None = None,
             cbs: Iterable[Callback] = (), record: bool = True) -> None:
        """One fit of `n_epoch` epochs with `schedule` (None: the lrs as set); `record=False` is a fit that leaves
        no trace (callbacks with `records = True` sit it out)."""
        if self.opt is None:
            self.create_opt()
        base = lr_per_group(self.lr if lrs is None else lrs, self.n_groups)
        if wd is not None:
            for pg in self.opt.param_groups:
                if pg["weight_decay"]:
                    pg["weight_decay"] = wd
        self.n_epoch, self.schedule, self.base_lrs = n_epoch, schedule, base
        fit_cbs = ([S.ParamScheduler(schedule, base)] if schedule is not None else []) + list(cbs)
        self.recording = record
        try:
            with self.added_cbs(fit_cbs):
                oom.fit_with_retry(self, self._run_fit)
        finally:
            self.recording = True

    def _reduce_mean(self, total: float, n: int) -> float:
        """Mean over all ranks of a per-rank (sum, count): the epoch table is the global one under DDP."""
        total, n = all_reduce_sum([total, n], self.device)
        return total / n if n else float("nan")

    def create_opt(self) -> None:
        self.opt = build_optimizer(self.layer_groups, self.opt_name, lr=self.lr, wd=self.wd)

    def validate(self, ds: str = "valid") -> dict[str, float]:
        """Loss and metrics on `ds` now, e.g. {'valid_loss': 0.12, 'accuracy': 0.97}."""
        self._do_validate(ds)
        return {"valid_loss": self.valid_loss, **self.last_metrics}

"""Learner: a model, its data, an optimizer over layer groups, and the training loop with callbacks."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .. import _console
from .._allocator import keep_freed_memory
from ..distributed import all_reduce_sum, default_device, gather_cat, is_distributed, is_main_process
from ..errors import ConfigError, VisiontuneError
from . import schedules as S
from .callbacks import Callback, CancelBatchException, CancelEpochException, CancelFitException
from .metrics import Metric, get_metrics
from .optim import Lrs, build_optimizer, get_hyper, lr_per_group, set_hyper
from .progress import ProgressCallback
from .recorder import Recorder

_BN = (nn.modules.batchnorm._BatchNorm,)


class _OOMRetry(Exception):
    """Internal: the fit ran out of memory early and the batch size was halved; run it again."""


class ParamScheduler(Callback):
    """Sets lr (base lr per group x schedule) and momentum before every training batch."""

    order = -20

    def __init__(self, schedule: S.Schedule, base_lrs: Sequence[float]):
        self.schedule, self.base_lrs = schedule, list(base_lrs)

    def before_batch(self) -> None:
        if not self.learn.training:
            return
        learn = self.learn
        pos = (learn.epoch + learn.iter / max(learn.n_iter, 1)) / learn.n_epoch
        mult = self.schedule.lr_mult(pos)
        set_hyper(learn.opt, "lr", [lr * mult for lr in self.base_lrs])
        if self.schedule.mom is not None:
            m = self.schedule.mom(pos)
            set_hyper(learn.opt, "mom", [m] * len(self.base_lrs))


class Learner:
    """Trains `model` on `data`. Build one with `vision_learner(data, arch)`.

    The loop fires fastai's callback events; schedules, progress, recording, checkpoints and early
    stopping are callbacks, so every feature is removable and the loop stays short.
    """

    def __init__(
        self,
        data,
        model: nn.Module,
        loss_func: nn.Module | None = None,
        metrics: Iterable = ("accuracy",),
        opt: str = "adamw",
        wd: float = 0.01,
        lr: float | None = None,
        cbs: Iterable[Callback] = (),
        device: str | torch.device | None = None,
        path: str | os.PathLike | None = None,
        model_dir: str = "models",
        train_bn: bool = True,
        freeze_bn_stats: bool = True,
        mixed_precision: str | bool | None = None,
        channels_last: bool | None = None,
        sync_bn: bool = False,
        compile: bool = False,
        thresh: float = 0.5,
        quiet: bool = False,
    ):
        self.data, self.model = data, model
        self.device = default_device(device)
        if self.device.type == "cpu":
            keep_freed_memory()  # freed activations stay in the process: 1.2x faster frozen epochs on 2 cores
        self.thresh = thresh
        multi = bool(getattr(data, "is_multi_label", False))
        self.loss_func = loss_func or (nn.BCEWithLogitsLoss() if multi else nn.CrossEntropyLoss())
        self.metrics: list[Metric] = get_metrics(metrics, multi_label=multi, thresh=thresh)
        self.opt_name, self.wd, self._lr = opt, wd, lr
        self.path = Path(path) if path is not None else Path(getattr(data, "path", None) or ".")
        self.model_dir = model_dir
        self.train_bn, self.freeze_bn_stats = train_bn, freeze_bn_stats
        self.quiet = quiet or _console.quiet()
        self.opt: torch.optim.Optimizer | None = None
        self.recorder = Recorder()
        self.cbs: list[Callback] = []
        self.add_cbs([self.recorder, ProgressCallback(), *cbs])
        self.mixed_precision = _resolve_amp(mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.mixed_precision == "fp16" else None
        if channels_last is None:
            channels_last = self.device.type in ("cpu", "cuda") and any(isinstance(m, nn.Conv2d) for m in model.modules())
        self.channels_last = channels_last
        if sync_bn and is_distributed():
            from timm.layers import convert_sync_batchnorm

            convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.compile = compile
        self._ddp: nn.Module | None = None
        self._compiled: dict = {}
        self.retrying = False
        self._fit_steps = 0
        self._precompute = False
        self._loaders: dict = {}
        self.epoch = self.n_epoch = self.iter = self.n_iter = self.train_iter = 0
        self.training = False
        self.resuming = False  # True during a fit that continues an interrupted one
        self.n_fits = 0  # fits started on this learner: a resumed run skips those that had finished
        self.resume_from = None  # set by visiontune.runs: the checkpoint an interrupted run continues from
        self.start_iter = 0  # batches of the first epoch already done before the interruption
        self.valid_loss = float("nan")
        self.last_metrics: dict[str, float] = {}
        self.frozen_to = 0
        if hasattr(data, "set_normalization") and hasattr(model, "backbone"):
            data.set_normalization(model.backbone.mean, model.backbone.std)

    # ------------------------------------------------------------------ callbacks
    def add_cbs(self, cbs: Iterable[Callback]) -> None:
        for cb in cbs:
            cb.learn = self
            self.cbs.append(cb)
            if not hasattr(self, cb.name):
                setattr(self, cb.name, cb)
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
            if fn is not None:
                fn()

    # ------------------------------------------------------------------ properties
    @property
    def is_main_process(self) -> bool:
        return is_main_process()

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
        if self._lr is not None:
            return self._lr
        return 3e-3 if self.body_frozen else 1e-3

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = value

    @property
    def body_frozen(self) -> bool:
        return self.frozen_to >= self.n_groups - 1

    def hypers(self, name: str) -> list[float]:
        return get_hyper(self.opt, name) if self.opt is not None else [float("nan")]

    # ------------------------------------------------------------------ freezing
    def freeze_to(self, n: int) -> None:
        """Freeze layer groups [0, n) (negative n counts from the end); BatchNorm layers stay trainable."""
        groups = self.layer_groups
        n = n % len(groups) if n < 0 else min(n, len(groups))
        for i, g in enumerate(groups):
            for m in g:
                for p in m.parameters():
                    p.requires_grad_(i >= n)
        if self.train_bn:
            for g in groups[:n]:
                for top in g:
                    for m in top.modules():
                        if isinstance(m, _BN):
                            for p in m.parameters(recurse=False):
                                p.requires_grad_(True)
        self.frozen_to = n
        if n < len(groups) - 1 and self._precompute:
            self._precompute = False
            _console.notice("precompute switched off: the body is being trained, so cached activations no longer apply.")

    def freeze(self) -> None:
        """Train the head only (the pretrained body stays as it is)."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Train every layer group."""
        self.freeze_to(0)

    # ------------------------------------------------------------------ precompute
    @property
    def precompute(self) -> bool:
        """Train/predict the head on cached body activations instead of images."""
        return self._precompute

    @precompute.setter
    def precompute(self, on: bool) -> None:
        on = bool(on)
        if on and not self.body_frozen:
            raise ConfigError(
                "precompute=True needs a frozen body: activations are computed once by the body and cached, "
                "so a body that is being trained would make them stale. Call learn.freeze() first."
            )
        if on and not hasattr(self.model, "features"):
            raise ConfigError("precompute needs a VisionModel (body, pool, head).")
        self._precompute = on

    # ------------------------------------------------------------------ data
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
                self._loaders[key] = DeviceLoader(raw, self.device, self.data.mean, self.data.std, self.channels_last)
        return self._loaders[key]

    @property
    def train_dl(self):
        return self.dl("train")

    @property
    def valid_dl(self):
        return self.dl("valid")

    # ------------------------------------------------------------------ one batch
    def _autocast(self):
        if self.mixed_precision is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.mixed_precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model output for a batch: the head alone on features when precompute is on; through the DDP
        wrapper while training under torchrun, and the compiled module with `compile=True`."""
        if self.training and self._ddp is not None:
            return self._ddp(x)
        module = self.model.head if self._precompute else self.model
        if self.compile:
            if module not in self._compiled:
                self._compiled[module] = torch.compile(module)
            module = self._compiled[module]
        return module(x)

    def _wrap_ddp(self) -> None:
        """Under torchrun, wrap what trains (the model, or the head on precomputed features) in
        DistributedDataParallel; rebuilt per fit because freezing changes which parameters train."""
        self._ddp = None
        if not is_distributed():
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = self.model.head if self._precompute else self.model
        if not any(p.requires_grad for p in module.parameters()):
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = DDP(module, device_ids=ids)

    def activation(self, out: torch.Tensor) -> torch.Tensor:
        """Logits -> probabilities: sigmoid for multi-label, softmax otherwise."""
        out = out.float()
        return torch.sigmoid(out) if isinstance(self.loss_func, nn.BCEWithLogitsLoss) else torch.softmax(out, 1)

    def _backward_step(self) -> None:
        if self.scaler is not None:
            self.scaler.scale(self.loss).backward()
            self._event("after_backward")
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.loss.backward()
            self._event("after_backward")
            self.opt.step()

    def _do_batch(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        self.xb, self.yb, self.batch_size = xb, yb, len(yb)
        try:
            self._event("before_batch")
            with self._autocast():
                self.pred = self.forward(self.xb)
                self._event("after_pred")
                self.loss = self.loss_func(self.pred.float(), self.yb)
            self._event("after_loss")
            if self.training:
                self._event("before_backward")
                self._backward_step()
                self._event("after_step")
                self.opt.zero_grad(set_to_none=True)
            self.loss_value = self.loss.detach().float().item()
            if self.training:
                self._fit_steps += 1
        except CancelBatchException:
            self._event("after_cancel_batch")
        finally:
            self._event("after_batch")

    # ------------------------------------------------------------------ epochs
    def _set_train_mode(self) -> None:
        """model.train(), except that BatchNorm layers in frozen groups keep their running statistics
        (eval mode) when `freeze_bn_stats`: the frozen body then computes exactly the features it computes
        at validation time (and that precompute caches), which small batches would otherwise distort."""
        self.model.train()
        if self.freeze_bn_stats:
            for g in self.layer_groups[: self.frozen_to]:
                for top in g:
                    for m in top.modules():
                        if isinstance(m, _BN):
                            m.eval()

    def _do_train(self) -> None:
        self.training = True
        self._set_train_mode()
        dl = self.train_dl
        start, self.start_iter = self.start_iter, 0
        dl.set_epoch(self.epoch, skip_batches=start)
        self.n_iter = len(dl)
        self._event("before_train")
        for self.iter, (xb, yb) in enumerate(dl, start):
            self.train_iter = self.epoch * self.n_iter + self.iter
            self._do_batch(xb, yb)
        self._event("after_train")

    def _do_validate(self, ds: str = "valid") -> None:
        self.training = False
        self.model.eval()
        self._event("before_validate")
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
            p, t = self._gather(torch.cat(probs)), self._gather(torch.cat(targs))
            self.last_metrics = {m.name: m(p.cpu(), t.cpu()) for m in self.metrics}
        self._event("after_validate")

    def _reduce_mean(self, total: float, n: int) -> float:
        """Mean over all ranks of a per-rank (sum, count): the epoch table is the global one under DDP."""
        total, n = all_reduce_sum([total, n], self.device)
        return total / n if n else float("nan")

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        return gather_cat(t)

    def create_opt(self) -> None:
        self.opt = build_optimizer(self.layer_groups, self.opt_name, lr=self.lr, wd=self.wd)

    def _fit(self, n_epoch: int, lrs: Lrs | None, schedule: S.Schedule, wd: float | None = None,
             cbs: Iterable[Callback] = (), start_epoch: int = 0) -> None:
        from . import oom

        fit_index, self.n_fits = self.n_fits, self.n_fits + 1
        plan = self.resume_from
        if plan is not None and fit_index < plan.fit_index:
            return  # this fit had finished before the interruption; the checkpoint holds its result
        if self.opt is None:
            self.create_opt()
        base = lr_per_group(self.lr if lrs is None else lrs, self.n_groups)
        if wd is not None:
            for pg in self.opt.param_groups:
                if pg["weight_decay"]:
                    pg["weight_decay"] = wd
        self.n_epoch, self.schedule, self.base_lrs = n_epoch, schedule, base
        saved = oom.snapshot(self)
        while True:
            try:
                self._run_fit(n_epoch, schedule, base, cbs, start_epoch, plan)
                self.retrying = False
                return
            except _OOMRetry:
                oom.restore(self, saved)
                self.retrying, plan = True, None

    def _run_fit(self, n_epoch: int, schedule: S.Schedule, base: list[float], cbs: Iterable[Callback],
                 start_epoch: int, plan=None) -> None:
        from . import oom

        self._fit_steps = 0
        with self.added_cbs([ParamScheduler(schedule, base), *cbs]):
            if plan is not None:
                start_epoch, self.start_iter, self.resuming = plan.enter(self)
                self.resume_from = None
            try:
                self._wrap_ddp()
                self._event("before_fit")
                for self.epoch in range(start_epoch, n_epoch):
                    self.valid_loss, self.last_metrics = float("nan"), {}
                    try:
                        self._event("before_epoch")
                        self._do_train()
                        self._do_validate()
                    except CancelEpochException:
                        self._event("after_cancel_epoch")
                    self._event("after_epoch")
            except CancelFitException:
                self._event("after_cancel_fit")
            except BaseException as e:
                if self._fit_steps < oom.OOM_STEPS and oom.recovered(self, e, "training"):
                    self._event("after_cancel_fit")
                    raise _OOMRetry() from e
                self._event("after_fail")
                if oom.is_oom(e):
                    raise VisiontuneError(
                        f"Out of memory on {self.device} at epoch {self.epoch} batch {self.iter} with batch size "
                        f"{self.data.bs}. Pass a smaller batch size (--bs / bs=) or --bs auto."
                    ) from e
                raise
            finally:
                self._ddp = None
            self._event("after_fit")
            self.resuming = False

    # ------------------------------------------------------------------ public training API
    def fit(self, lrs: Lrs | None = None, n_cycle: int = 1, cycle_len: int | None = None, cycle_mult: int = 1,
            wd: float | None = None, cycle_save_name: str | None = None, cbs: Iterable[Callback] = ()) -> None:
        """Without `cycle_len`: `n_cycle` epochs at constant lr (2017's `learn.fit(0.01, 3)`). With it: SGDR,
        cosine-annealing to ~0 within each cycle, cycle i lasting `cycle_len * cycle_mult**i` epochs;
        `cycle_save_name` saves `{name}_cyc_{i}` at the end of every cycle."""
        if cycle_len is None:
            if cycle_save_name:
                raise ConfigError("cycle_save_name needs cycle_len (it saves at the end of each SGDR cycle).")
            return self._fit(n_cycle, lrs, S.constant_schedule(), wd, cbs)
        cycles = S.sgdr_cycles(n_cycle, cycle_len, cycle_mult)
        cbs = list(cbs)
        if cycle_save_name:
            from .snapshots import CycleSaver

            cbs.append(CycleSaver(cycle_save_name, cycles))
        return self._fit(sum(cycles), lrs, S.sgdr_schedule(cycles), wd, cbs)

    def fit_one_cycle(self, epochs: int, max_lr: Lrs | None = None, div: float = 25.0, div_final: float = 1e5,
                      pct_start: float = 0.25, moms: Sequence[float] | None = (0.95, 0.85, 0.95),
                      wd: float | None = None, cbs: Iterable[Callback] = ()) -> None:
        """1cycle: lr warms up from max_lr/div to max_lr over `pct_start` of the steps, then anneals to
        max_lr/div_final while momentum moves the opposite way. `max_lr=None` picks `learn.lr`."""
        self._fit(epochs, max_lr, S.one_cycle_schedule(div, div_final, pct_start, moms), wd, cbs)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
                  pct_start: float = 0.3, div: float = 5.0, cbs: Iterable[Callback] = ()) -> None:
        """fastai's recipe: 1cycle on the frozen model, unfreeze, then 1cycle with discriminative lrs
        `slice(base_lr/lr_mult, base_lr)` (halved, as fastai does)."""
        self.freeze()
        if freeze_epochs:
            self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, cbs=cbs)
        base_lr /= 2
        self.unfreeze()
        self.fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, cbs=cbs)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, stop_div: bool = True):
        """Exponentially increase the lr per mini-batch and record the loss; the model and optimizer are
        restored exactly afterwards. Returns an LRFindResult with `.suggestion` and `.plot()`."""
        from .lr_find import lr_find

        self.lr_find_result = lr_find(self, start_lr, end_lr, num_it, stop_div)  # the run report shows it
        return self.lr_find_result

    def snapshot_ensemble(self, name: str, ds: str = "valid", last: int | None = None):
        """Average the predictions of the SGDR snapshots saved with `cycle_save_name=name` -> (probs, targets)."""
        from .snapshots import snapshot_ensemble

        return snapshot_ensemble(self, name, ds, last)

    def validate(self, ds: str = "valid") -> dict[str, float]:
        """Loss and metrics on `ds` now, e.g. {'valid_loss': 0.12, 'accuracy': 0.97}."""
        self._do_validate(ds)
        return {"valid_loss": self.valid_loss, **self.last_metrics}

    # ------------------------------------------------------------------ predictions
    def get_preds(self, ds="valid", with_loss: bool = False):
        """(probs, targets) over `ds` in file order (targets None for the test set); with_loss adds per-item losses.

        `ds`: 'valid' | 'train' | 'test', or new images: a folder, file, glob or list of them."""
        from ..infer.predict import get_preds

        return get_preds(self, ds, with_loss=with_loss)

    def tta(self, ds="valid", n: int = 4, beta: float = 0.25, scale: float = 1.1):
        """Test-time augmentation -> (probs, targets): `beta` x the plain predictions + (1 - beta) x the mean over
        n augmented views (zoom crops by `scale`, flips as in training). n=0 is plain get_preds."""
        from ..infer.tta import tta

        return tta(self, ds, n=n, beta=beta, scale=scale)

    def predict(self, item):
        """One image (path, PIL image, HWC numpy array or CHW tensor) -> (label, index, probs).

        Multi-label: (labels above the threshold, their indices, probs)."""
        from ..infer.predict import predict

        return predict(self, item)

    def interpret(self, ds: str = "valid", tta: bool = False):
        """A ClassificationInterpretation of `ds`: confusion matrix, most_confused, top losses with Grad-CAM
        heatmaps and the five views (most correct/incorrect/uncertain...), with test-time augmentation if `tta`."""
        from ..interpret import ClassificationInterpretation

        return ClassificationInterpretation.from_learner(self, ds, tta=tta)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Weights, optimizer, grad scaler and every stateful callback's state (the recorder's history,
        SaveBest's best value, ...) by callback name: what a checkpoint needs to continue training."""
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict() if self.opt is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "callbacks": {name: cb.state_dict() for name, cb in self._stateful_cbs().items()},
        }

    def _stateful_cbs(self) -> dict[str, Callback]:
        """Callbacks with state by name (a second callback of the same name gets `_2`, ...)."""
        out: dict[str, Callback] = {}
        for cb in self.cbs:
            if hasattr(cb, "state_dict"):
                name, i = cb.name, 1
                while name in out:
                    i += 1
                    name = f"{cb.name}_{i}"
                out[name] = cb
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (callbacks are matched by name; absent ones are skipped)."""
        self.model.load_state_dict(state["model"])
        if state.get("opt") is not None:
            if self.opt is None:
                self.create_opt()
            self.opt.load_state_dict(state["opt"])
        if state.get("scaler") is not None and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        saved = state.get("callbacks", {})
        for name, cb in self._stateful_cbs().items():
            if name in saved and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(saved[name])

    # ------------------------------------------------------------------ saving
    def _model_path(self, name: str | os.PathLike) -> Path:
        p = Path(name)
        if p.suffix != ".safetensors":
            p = p.with_name(p.name + ".safetensors")
        return p if p.is_absolute() or p.parent != Path(".") else self.path / self.model_dir / p

    def save(self, name: str | os.PathLike) -> Path:
        """Write the model weights to `path/models/{name}.safetensors` (or to `name` if it is a path)."""
        from ..infer.export import save_weights

        path = self._model_path(name)
        if self.resume_from is not None and path.exists():
            return path  # replaying a resumed script: the interrupted run wrote this file; keep it
        return save_weights(self.model, path, self.data.classes)

    def load(self, name: str | os.PathLike, strict: bool = True) -> "Learner":
        """Load weights written by `save(name)` into this learner's model."""
        from ..infer.export import load_weights

        load_weights(self.model, self._model_path(name), strict=strict)
        return self

    def export(self, path: str | os.PathLike | None = None) -> Path:
        """Write ONE safe file (default `path/model.vt`) with the weights, architecture, classes, image size and
        normalization; `vt.load_learner(file)` predicts from it without the data, the network, or pickle."""
        from ..infer.export import export_learner

        return export_learner(self, self.path / "model.vt" if path is None else Path(path))

    def export_onnx(self, path: str | os.PathLike, opset: int | None = None, dynamic_batch: bool = True) -> Path:
        """Write the model as ONNX: uint8 (N, 3, size, size) images in, probabilities out (needs visiontune[onnx])."""
        from ..infer.onnx_export import export_onnx

        return export_onnx(self, path, opset=opset, dynamic_batch=dynamic_batch)


def _resolve_amp(mixed_precision, device: torch.device) -> str | None:
    if mixed_precision in (False, "off", "no", "none"):
        return None
    if mixed_precision in ("bf16", "fp16"):
        if device.type == "cpu" and mixed_precision == "fp16":
            raise ConfigError("fp16 mixed precision needs a GPU; use mixed_precision='bf16' or None on the CPU.")
        return mixed_precision
    if mixed_precision not in (None, True, "auto"):
        raise ConfigError(f"mixed_precision must be None/'auto', 'bf16', 'fp16' or False; got {mixed_precision!r}.")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return None

"""`vision_learner`: a pretrained body + a new head on an ImageData, frozen and ready to train."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from .._core.errors import ConfigError
from ..models import HeadConfig, create_model
from .callbacks import Callback
from .learner import Learner

DEFAULT_ARCH = "efficientnet_lite0"


def vision_learner(
    data,
    arch: str = DEFAULT_ARCH,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    metrics: Iterable | None = None,
    wd: float = 0.01,
    lr: float | None = None,
    opt: str = "adamw",
    precompute: bool = False,
    head: str = "fastai",
    lin_ftrs: Iterable[int] = (512,),
    ps: float = 0.5,
    concat_pool: bool = True,
    cbs: Iterable[Callback] = (),
    device=None,
    runs: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    class_weights: str | dict | bool | None = None,
    **kwargs,
) -> Learner:
    """A Learner for `data` with the `arch` body (weights: `weights` file -> cache -> hub; the default
    `efficientnet_lite0` ships with visiontune) and a fresh head. The body starts frozen.

    `precompute=True` trains the head on cached body activations (seconds per epoch on a CPU);
    `head="linear"` puts a single linear layer on the features instead of fastai's head.
    `metrics` defaults to accuracy, or to accuracy_multi and fbeta (F2) for multi-label data (lesson 2), plus
    balanced_accuracy and f1_macro when the training classes are lopsided (largest / smallest > 5).
    `class_weights`: None (default) weights the loss by inverse class frequency ('auto') when the data is
    lopsided and not sampled balanced (on single-label data the data's default sampler='auto' samples
    lopsided classes equally often instead, which the benchmarks found better); 'auto' always (and then the
    automatic balanced sampling steps aside: one correction, not two); a {class: weight} dict; False or
    'none' never. Multi-label data gets per-label positive weights for BCE. Weights come from the train
    counts only.
    `runs="runs"` (sugar for `cbs=[RunFolder("runs")]`) records every fit in a new run folder `runs/<dataset>/<time>-<arch>-<size>-bs<bs>/` (config,
    log, checkpoints every epoch, results, model); `run_dir=` names the folder; with `resume=True` an
    interrupted run continues there: rerun the same script, finished fits are skipped.
    """
    if not getattr(data, "classes", None):
        raise ConfigError("vision_learner needs data with classes, e.g. ImageData.from_folder(path).")
    multi, lopsided = bool(getattr(data, "is_multi_label", False)), bool(getattr(data, "is_imbalanced", False))
    if metrics is None:
        metrics = ("accuracy_multi", "fbeta") if multi else ("accuracy",)
        if lopsided:
            metrics = (*metrics, *(("f1_macro",) if multi else ("balanced_accuracy", "f1_macro")))
    weights_by_class = resolve_class_weights(data, class_weights)
    if weights_by_class is not None and "loss_func" not in kwargs:
        kwargs["loss_func"] = weighted_loss(weights_by_class, multi)
    model = create_model(arch, data.c, pretrained=pretrained, weights=weights,
                         head=HeadConfig(kind=head, lin_ftrs=tuple(lin_ftrs), ps=ps, concat_pool=concat_pool))
    learn = Learner(data, model, metrics=metrics, wd=wd, lr=lr, opt=opt, cbs=cbs, device=device, **kwargs)
    learn.class_weights = weights_by_class
    learn.freeze()
    if precompute:
        learn.precompute = True
    if runs is not None or run_dir is not None:  # sugar for cbs=[RunFolder(...)]: the one upward import of train
        from ..runs.callback import RunFolder

        learn.add_cbs([RunFolder(runs=runs, run_dir=run_dir, resume=resume)])
    elif resume:
        raise ConfigError("resume=True needs run_dir=: the folder of the run to continue.")
    return learn


def resolve_class_weights(data, spec) -> dict[str, float] | None:
    """{class: weight} for the loss, or None: `spec` as `vision_learner` takes it, from the train counts."""
    from .._core import console as _console
    from ..data.balance import auto_class_weights, auto_pos_weights, parse_class_weights

    if not hasattr(data, "class_counts"):
        spec = parse_class_weights(spec, data.classes) if isinstance(spec, dict) else None
        return {c: spec.get(c, 1.0) for c in data.classes} if spec else None
    if spec is None:
        if data.is_imbalanced and getattr(data, "sampler", None) == "balanced":
            if getattr(data, "balances_automatically", False):
                _console.notice(f"training classes are lopsided ({data.imbalance_ratio:.1f}:1): every class is "
                                f"sampled equally often (ImageData sampler='auto'; sampler=None or --no-balanced for "
                                f"plain training, class_weights='auto' to weight the loss instead).")
            return None
        spec = "auto" if data.is_imbalanced else None
        if spec:
            _console.notice(f"training classes are lopsided ({data.imbalance_ratio:.1f}:1): the loss weights each "
                            f"class by its inverse frequency (class_weights='auto'; pass class_weights=False for "
                            f"plain training).")
    elif spec not in (False, "none") and getattr(data, "balances_automatically", False):
        data.sampler = None  # weights asked for: the automatic balanced sampling steps aside (not both)
        _console.notice("class weights given: the balanced sampling lopsided data gets by default is off.")
    spec = parse_class_weights(spec, data.classes)
    if spec is None or isinstance(spec, dict):
        return {c: spec.get(c, 1.0) for c in data.classes} if spec else None
    per = list(data.class_counts().values())
    if data.is_multi_label:
        w = auto_pos_weights(per, len(data.train_ds))
    else:
        w = auto_class_weights(per)
    return {c: round(float(x), 6) for c, x in zip(data.classes, w)}


def weighted_loss(weights: dict[str, float], multi: bool) -> torch.nn.Module:
    """CrossEntropyLoss with class weights, or BCEWithLogitsLoss with per-label positive weights."""
    w = torch.tensor(list(weights.values()), dtype=torch.float32)
    return torch.nn.BCEWithLogitsLoss(pos_weight=w) if multi else torch.nn.CrossEntropyLoss(weight=w)


def learner_settings(learn: "Learner") -> dict:
    """What config.yaml records for a run made from Python: the learner's and the data's settings."""
    data, model = learn.data, learn.model
    cfg = getattr(model, "config", None)
    return {
        "data": str(Path(data.path).resolve()),
        "arch": getattr(cfg, "arch", type(model).__name__),
        "head": cfg.head.kind if cfg is not None else None,
        "size": data.size,
        "bs": data.bs,
        "seed": data.seed,
        "augment": data.aug.augment,
        "class_weights": getattr(learn, "class_weights", None),
        "sampler": getattr(data, "sampler", None),
        "classes": list(data.classes),
        "opt": learn.opt_name,
        "wd": learn.wd,
        "lr": learn._lr,
        "metrics": [m.name for m in learn.metrics],
        "device": str(learn.device),
        "mixed_precision": learn.mixed_precision,
        "precompute": learn.precompute,
        "torch_seed": int(torch.initial_seed()),
    }

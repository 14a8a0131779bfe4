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
    **kwargs,
) -> Learner:
    """A Learner for `data` with the `arch` body (weights: `weights` file -> cache -> hub; the default
    `efficientnet_lite0` ships with visiontune) and a fresh head. The body starts frozen.

    `precompute=True` trains the head on cached body activations (seconds per epoch on a CPU);
    `head="linear"` puts a single linear layer on the features instead of fastai's head.
    `metrics` defaults to accuracy, or to accuracy_multi and fbeta (F2) for multi-label data (lesson 2).
    `runs="runs"` (sugar for `cbs=[RunFolder("runs")]`) records every fit in a new run folder `runs/<dataset>/<time>-<arch>-<size>-bs<bs>/` (config,
    log, checkpoints every epoch, results, model); `run_dir=` names the folder; with `resume=True` an
    interrupted run continues there: rerun the same script, finished fits are skipped.
    """
    if metrics is None:
        metrics = ("accuracy_multi", "fbeta") if getattr(data, "is_multi_label", False) else ("accuracy",)
    if not getattr(data, "classes", None):
        raise ConfigError("vision_learner needs data with classes, e.g. ImageData.from_folder(path).")
    model = create_model(arch, data.c, pretrained=pretrained, weights=weights,
                         head=HeadConfig(kind=head, lin_ftrs=tuple(lin_ftrs), ps=ps, concat_pool=concat_pool))
    learn = Learner(data, model, metrics=metrics, wd=wd, lr=lr, opt=opt, cbs=cbs, device=device, **kwargs)
    learn.freeze()
    if precompute:
        learn.precompute = True
    if runs is not None or run_dir is not None:  # sugar for cbs=[RunFolder(...)]: the one upward import of train
        from ..runs.callback import RunFolder

        learn.add_cbs([RunFolder(runs=runs, run_dir=run_dir, resume=resume)])
    elif resume:
        raise ConfigError("resume=True needs run_dir=: the folder of the run to continue.")
    return learn


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

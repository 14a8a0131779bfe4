"""`train(config)`: the whole `visiontune train` pipeline as one Python call (the CLI is a thin layer on it)."""

from __future__ import annotations

import random
from typing import Iterable

import numpy as np
import torch

from .. import _console
from ..data import ImageData
from ..distributed import is_main_process, setup_from_env, world_size
from ..train import Callback, Learner, vision_learner
from ..train.oom import find_batch_size
from .config import TrainConfig


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run on the CPU repeats exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_data(cfg: TrainConfig) -> ImageData:
    return ImageData.from_folder(
        cfg.data_path, valid_pct=cfg.valid_pct, seed=cfg.seed, size=cfg.size, bs=64 if cfg.bs == "auto" else cfg.bs,
        augment=cfg.augment, num_workers=cfg.num_workers,
    )


def build_learner(cfg: TrainConfig, data: ImageData, cbs: Iterable[Callback] = ()) -> Learner:
    return vision_learner(
        data, cfg.arch, pretrained=cfg.pretrained, weights=cfg.weights, metrics=cfg.metrics, wd=cfg.wd,
        lr=cfg.lr, opt=cfg.opt, precompute=cfg.precompute, head=cfg.head, cbs=cbs, device=cfg.device,
        mixed_precision=cfg.mixed_precision, sync_bn=cfg.sync_bn, compile=cfg.compile,
    )


def run_phase(learn: Learner, cfg: TrainConfig, epochs: int, lrs, cbs: Iterable[Callback] = ()) -> None:
    """One phase of `epochs` epochs with the configured schedule."""
    if cfg.schedule == "one_cycle":
        learn.fit_one_cycle(epochs, lrs, cbs=cbs)
    elif cfg.schedule == "sgdr":
        cycle_len, mult = cfg.cycle_len or 1, cfg.cycle_mult
        n_cycle, total = 0, 0
        while total < epochs:
            total += cycle_len * mult**n_cycle
            n_cycle += 1
        learn.fit(lrs, n_cycle, cycle_len=cycle_len, cycle_mult=mult, cbs=cbs)
    else:
        learn.fit(lrs, epochs, cbs=cbs)


def train_phases(learn: Learner, cfg: TrainConfig, cbs: Iterable[Callback] = ()) -> None:
    """The training schedule the config describes, on an already built learner."""
    if cfg.fine_tune:
        learn.fine_tune(cfg.epochs, base_lr=cfg.lr or 2e-3, freeze_epochs=cfg.freeze_epochs, lr_mult=cfg.lr_mult,
                        cbs=cbs)
        return
    run_phase(learn, cfg, cfg.epochs, cfg.lr, cbs)
    if cfg.unfreeze_epochs:
        learn.unfreeze()
        run_phase(learn, cfg, cfg.unfreeze_epochs, cfg.unfreeze_lrs(), cbs)


def train(cfg: TrainConfig, cbs: Iterable[Callback] = ()) -> Learner:
    """Build data and learner from `cfg`, train, and return the learner. Under torchrun this joins the
    process group first and trains with DistributedDataParallel."""
    setup_from_env()
    seed_everything(cfg.seed)
    data = build_data(cfg)
    say = not _console.quiet() and is_main_process()
    if say:
        _console.out.print(data.summary())
    learn = build_learner(cfg, data)
    if cfg.bs == "auto":
        find_batch_size(learn)
    if say:
        where = learn.model.backbone.weights_source
        ranks = f" x {world_size()} processes (global batch size {data.bs * world_size()})" if world_size() > 1 else ""
        amp = f", mixed precision {learn.mixed_precision}" if learn.mixed_precision else ""
        _console.out.print(f"model: {cfg.arch} ({where} weights) on {learn.device}{ranks}{amp}")
    train_phases(learn, cfg, cbs)
    return learn

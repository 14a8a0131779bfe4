"""Data and learner from a TrainConfig: what `visiontune train`, `resume`, `report` and `lr-find` build."""

from __future__ import annotations

import os
import random
from typing import Iterable

import numpy as np
import torch

from ..data import ImageData
from ..train import Callback, Learner, vision_learner
from ..train.tracking import EarlyStopping, SaveBest, TensorBoardLogger
from .config import TrainConfig


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch so a run on the CPU repeats exactly. `deterministic` also asks PyTorch
    for deterministic GPU kernels (slower; ops without one warn)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_data(cfg: TrainConfig) -> ImageData:
    """The data the config describes: its layout detected (or as recorded in a run's config.yaml)."""
    return ImageData.from_path(
        cfg.data_path, train=cfg.train, valid=cfg.valid, test=cfg.test, label_re=cfg.label_re, labels=cfg.labels,
        fname_col=cfg.fname_col, label_col=cfg.label_col, label_delim=cfg.label_delim, suffix=cfg.suffix,
        folder=cfg.folder, valid_pct=cfg.valid_pct, seed=cfg.seed, size=cfg.size,
        bs=64 if cfg.bs == "auto" else cfg.bs, augment=cfg.augment, num_workers=cfg.num_workers,
        sampler={True: "balanced", False: None}.get(cfg.balanced, "auto"),
    )


def config_callbacks(cfg: TrainConfig) -> list[Callback]:
    """The callbacks the config asks for: SaveBest, EarlyStopping, TensorBoardLogger."""
    cbs: list[Callback] = []
    if cfg.save_best:
        cbs.append(SaveBest(monitor=cfg.monitor))
    if cfg.early_stop:
        cbs.append(EarlyStopping(monitor=cfg.monitor, patience=cfg.early_stop))
    if cfg.tensorboard:
        cbs.append(TensorBoardLogger("tensorboard"))
    return cbs


def build_learner(cfg: TrainConfig, data: ImageData, cbs: Iterable[Callback] = ()) -> Learner:
    """The learner the config describes. On lopsided data (> 5:1) the epoch table adds balanced_accuracy, and
    single-label classes are sampled equally often (multi-label: the loss is weighted) unless --class-weights
    or --no-balanced say otherwise."""
    metrics = list(cfg.metrics)
    if getattr(data, "is_imbalanced", False) and not data.is_multi_label and "balanced_accuracy" not in metrics:
        metrics.append("balanced_accuracy")
    class_weights = cfg.class_weights  # None: vision_learner's default (none when the data is sampled balanced)
    return vision_learner(
        data, cfg.arch, pretrained=cfg.pretrained, weights=cfg.weights, metrics=metrics, wd=cfg.wd,
        lr=cfg.lr, opt=cfg.opt, precompute=cfg.precompute, head=cfg.head, cbs=cbs, device=cfg.device,
        mixed_precision=cfg.mixed_precision, sync_bn=cfg.sync_bn, compile=cfg.compile, class_weights=class_weights,
    )

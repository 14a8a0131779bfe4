"""Out-of-fold probabilities: K heads trained on precomputed body features, each predicting the fold it did
not see, so every labelled image gets a probability from a model that never trained on it (what confident
learning needs; in-sample probabilities would simply repeat the given labels)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._core.errors import ConfigError
from ..data.dataset import single_thread
from ..models import HeadConfig
from ..models.head import create_head


@dataclass(frozen=True)
class HeadRecipe:
    """How each fold's head is trained: one-cycle AdamW over mini-batches of features (the frozen phase of
    `fit_one_cycle`, on the cache)."""

    epochs: int | None = None  # None: enough epochs for about `min_steps` optimizer steps (at least 5, at most 30)
    lr: float = 3e-3
    wd: float = 0.01
    bs: int = 64
    min_steps: int = 150


def fold_ids(targets: np.ndarray, folds: int, seed: int = 42) -> np.ndarray:
    """A fold number per example, stratified: each class (each example's first label when multi-label) is dealt
    round-robin over the folds in a seeded random order."""
    if folds < 2:
        raise ConfigError(f"folds must be at least 2 (each image is predicted by a head that did not see it); got {folds}.")
    targets = np.asarray(targets)
    key = targets.argmax(1) if targets.ndim == 2 else targets
    rng = np.random.default_rng(seed)
    out = np.empty(len(key), dtype=np.int64)
    start = 0
    for c in np.unique(key):
        members = np.flatnonzero(key == c)
        rng.shuffle(members)
        out[members] = (np.arange(len(members)) + start) % folds
        start += len(members)  # the next class starts where this one stopped: folds stay the same size
    return out


def train_head(feats: torch.Tensor, targets: torch.Tensor, n_out: int, head: HeadConfig, recipe: HeadRecipe,
               multi: bool, seed: int) -> nn.Module:
    """A fresh head (the learner's kind) trained on `feats` -> `targets`; returned in eval mode. One thread:
    a batch of 64 feature rows is too small to split, and on a busy CPU more threads make it several times slower."""
    with single_thread():
        return _train_head(feats, targets, n_out, head, recipe, multi, seed)


def _train_head(feats: torch.Tensor, targets: torch.Tensor, n_out: int, head: HeadConfig, recipe: HeadRecipe,
                multi: bool, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_head(feats.shape[1], n_out, head.kind, head.lin_ftrs, head.ps)
    loss_fn = nn.BCEWithLogitsLoss() if multi else nn.CrossEntropyLoss()
    n = len(feats)
    bs = max(2, min(recipe.bs, n))
    steps_per_epoch = max(1, n // bs)
    epochs = recipe.epochs or int(min(30, max(5, math.ceil(recipe.min_steps / steps_per_epoch))))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=epochs * steps_per_epoch)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # dropout draws, without touching the caller's random state
        for _ in range(epochs):
            order = torch.randperm(n, generator=g)
            for s in range(steps_per_epoch):
                idx = order[s * bs:(s + 1) * bs]
                if len(idx) < 2:  # BatchNorm needs two rows
                    continue
                loss = loss_fn(model(feats[idx]), targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def predict_head(model: nn.Module, feats: torch.Tensor, multi: bool) -> np.ndarray:
    with torch.inference_mode():
        out = model(feats).float()
        return (torch.sigmoid(out) if multi else torch.softmax(out, 1)).numpy().astype(np.float64)


def out_of_fold_probs(feats: np.ndarray, targets: np.ndarray, n_out: int, folds: int = 5,
                      head: HeadConfig | None = None, recipe: HeadRecipe | None = None,
                      seed: int = 42, heads: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, n_out), fold of each row): row i is predicted by the head trained on the other folds.

    `targets` are class indices, or multi-hot rows for multi-label data (sigmoid per label). Pass a list as
    `heads` to get the trained heads back (the review page explains pictures with the first)."""
    head = head or HeadConfig()
    recipe = recipe or HeadRecipe()
    targets = np.asarray(targets)
    multi = targets.ndim == 2
    fid = fold_ids(targets, folds, seed)
    x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    y = torch.from_numpy(targets.astype(np.float32)) if multi else torch.from_numpy(targets.astype(np.int64))
    probs = np.zeros((len(x), n_out), dtype=np.float64)
    for k in range(folds):
        held = fid == k
        if not held.any():
            continue
        tr = torch.from_numpy(~held)
        model = train_head(x[tr], y[tr], n_out, head, recipe, multi, seed + 1000 * k)
        probs[held] = predict_head(model, x[torch.from_numpy(held)], multi)
        if heads is not None:
            heads.append(model)
    return probs, fid


def fit_full_head(feats: np.ndarray, targets: np.ndarray, n_out: int, head: HeadConfig | None = None,
                  recipe: HeadRecipe | None = None, seed: int = 42) -> nn.Module:
    """One head on every labelled row: the model the review page's Grad-CAM explains."""
    targets = np.asarray(targets)
    multi = targets.ndim == 2
    x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    y = torch.from_numpy(targets.astype(np.float32)) if multi else torch.from_numpy(targets.astype(np.int64))
    return train_head(x, y, n_out, head or HeadConfig(), recipe or HeadRecipe(), multi, seed)

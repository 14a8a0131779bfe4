"""Training plots: lr finder, losses, schedules, metrics. Each returns a matplotlib Figure (shown inline in
Jupyter) and writes a PNG when given a path. Figures are built without pyplot, so no display is needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from .._core.figures import finish, new_figure

if TYPE_CHECKING:
    from .lr_find import LRFindResult
    from .recorder import Recorder


def plot_lr_find(res: "LRFindResult", path=None, skip_start: int = 5, skip_end: int = 3) -> Figure:
    fig, ax = new_figure()
    ax = ax[0, 0]
    lrs, losses = np.asarray(res.lrs), np.asarray(res.losses)
    if len(lrs) > skip_start + skip_end + 3:
        lrs, losses = lrs[skip_start : len(lrs) - skip_end], losses[skip_start : len(losses) - skip_end]
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    for (name, lr), color in zip(res.suggestions.items(), ("C1", "C2", "C3")):
        if np.isfinite(lr):
            y = np.interp(np.log(lr), np.log(lrs), losses) if len(lrs) else 0
            ax.plot([lr], [y], "o", color=color, label=f"{name}: {lr:.2e}")
    ax.legend()
    ax.set_title(f"lr_find: suggestion {res.suggestion:.2e}")
    return finish(fig, path)


def plot_losses(rec: "Recorder", path=None) -> Figure:
    fig, ax = new_figure()
    ax = ax[0, 0]
    if rec.batch_history:
        losses = np.array([b[2] for b in rec.batch_history])
        ax.plot(np.arange(len(losses)), losses, alpha=0.4, label="train (batch)")
        k = max(1, len(losses) // 30)
        if k > 1:
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(k - 1, len(losses)), smooth, label="train (smoothed)")
    if rec.rows:
        ax.plot(rec.epoch_ends, [r["valid_loss"] for r in rec.rows], "o-", label="valid (epoch)")
    ax.set_xlabel("batches")
    ax.set_ylabel("loss")
    ax.legend()
    return finish(fig, path)


def plot_lr(rec: "Recorder", path=None) -> Figure:
    fig, ax = new_figure()
    ax[0, 0].plot(rec.lrs)
    ax[0, 0].set_xlabel("batches (last fit)")
    ax[0, 0].set_ylabel("learning rate")
    return finish(fig, path)


def plot_sched(rec: "Recorder", path=None) -> Figure:
    fig, ax = new_figure(10, 4, ncols=2)
    ax[0, 0].plot(rec.lrs)
    ax[0, 0].set_title("learning rate")
    ax[0, 1].plot(rec.moms)
    ax[0, 1].set_title("momentum / beta1")
    for a in ax[0]:
        a.set_xlabel("batches (last fit)")
    return finish(fig, path)


def plot_metrics(rec: "Recorder", path=None) -> Figure:
    names = [k for k in (rec.rows[0] if rec.rows else {}) if k not in ("phase", "epoch", "lr", "time")]
    fig, ax = new_figure(4 * max(len(names), 1), 3.5, ncols=max(len(names), 1))
    for a, n in zip(ax[0], names):
        a.plot(range(1, len(rec.rows) + 1), [r.get(n) for r in rec.rows], "o-")
        a.set_title(n)
        a.set_xlabel("epoch (all fits)")
    return finish(fig, path)

"""Training history for the report: the epoch table and per-batch losses (from a live learner's recorder, or
read from a run folder by visiontune.runs), and the curves drawn from it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from .._core.figures import figure, finish

if TYPE_CHECKING:
    from ..train.recorder import Recorder

NOT_METRICS = ("phase", "epoch", "lr", "train_loss", "valid_loss", "time", "seconds")


@dataclass
class TrainingHistory:
    """`rows`: one dict per epoch over every phase (log.csv's columns); `batch_losses`: training loss per
    batch; `epoch_ends[i]`: number of batches done when row i was written (empty when unknown)."""

    rows: list[dict] = field(default_factory=list)
    batch_losses: list[float] = field(default_factory=list)
    epoch_ends: list[int] = field(default_factory=list)

    @classmethod
    def from_recorder(cls, rec: "Recorder") -> "TrainingHistory":
        return cls([{("seconds" if k == "time" else k): v for k, v in r.items()} for r in rec.rows],
                   [b[2] for b in rec.batch_history], list(rec.epoch_ends))

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for r in self.rows:
            names += [k for k in r if k not in NOT_METRICS and k not in names]
        return names

    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        if "seconds" in cols:
            cols.remove("seconds")
            cols.append("seconds")
        return cols

    def plot(self, path: str | Path | None = None) -> Figure:
        """Loss (training per batch, smoothed, and validation per epoch) and each metric per epoch."""
        names = self.metric_names
        fig = figure(6 + 4 * bool(names), 3.6)
        axes = fig.subplots(1, 1 + bool(names), squeeze=False)[0]
        ax = axes[0]
        n_epochs = len(self.rows)
        if self.batch_losses and len(self.epoch_ends) == n_epochs:
            losses = np.asarray(self.batch_losses, dtype=float)
            ax.plot(np.arange(1, len(losses) + 1), losses, alpha=0.3, color="C0", label="train (batch)")
            k = max(1, len(losses) // 30)
            if k > 1:
                ax.plot(np.arange(k, len(losses) + 1), np.convolve(losses, np.ones(k) / k, mode="valid"),
                        color="C0", label="train (smoothed)")
            x, xlabel = np.asarray(self.epoch_ends), "batches"
        else:
            x, xlabel = np.arange(1, n_epochs + 1), "epoch"
            ax.plot(x, [_float(r.get("train_loss")) for r in self.rows], "o-", color="C0", label="train (epoch)")
        ax.plot(x, [_float(r.get("valid_loss")) for r in self.rows], "o-", color="C1", label="valid (epoch)")
        for a_x in _phase_starts(self.rows, x):
            ax.axvline(a_x, color="grey", ls="--", lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss")
        ax.set_title("loss")
        if n_epochs or self.batch_losses:
            ax.legend(fontsize=8)
        if names:
            m = axes[1]
            for i, n in enumerate(names):
                m.plot(range(1, n_epochs + 1), [_float(r.get(n)) for r in self.rows], "o-", color=f"C{i + 2}", label=n)
            m.set_xlabel("epoch (all phases)")
            m.set_title("metrics")
            m.legend(fontsize=8)
        return finish(fig, path)


def _phase_starts(rows: list[dict], x) -> list[float]:
    """x positions between the last epoch of a phase and the first of the next (dashed lines)."""
    out = []
    for i in range(1, len(rows)):
        if rows[i].get("phase") != rows[i - 1].get("phase"):
            out.append((float(x[i - 1]) + float(x[i])) / 2)
    return out


def parse_number(v: str):
    """A log.csv cell: an int, a float, or the text as it is."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan

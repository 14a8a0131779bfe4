"""Recorder: per-batch lr, momentum and loss, and the per-epoch table, across every fit of a learner."""

from __future__ import annotations

import time
from pathlib import Path

from .callbacks import Callback


class Recorder(Callback):
    """Always present as `learn.recorder`. `rows` is the epoch table over all fits (each row says
    its `phase`); `lrs`, `moms`, `losses` are per training batch of the current fit; `batch_history`
    keeps (phase, iteration, loss, lr) for every batch of every fit."""

    order = -10
    records = True

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.epoch_ends: list[int] = []  # len(batch_history) when each row was written
        self.batch_history: list[tuple[int, int, float, float]] = []
        self.phase = -1
        self.lrs: list[float] = []
        self.moms: list[float] = []
        self.losses: list[float] = []
        self.metric_names: list[str] = []
        self._sum, self._n, self._elapsed = 0.0, 0, 0.0  # the epoch in progress (kept in checkpoints)

    # --------------------------------------------------------------- events
    def before_fit(self) -> None:
        if not self.learn.continuing:  # a resumed fit keeps its phase and batch lists
            if not self.learn.retrying:  # a fit restarted after an out-of-memory error keeps its phase
                self.phase += 1
            self.lrs, self.moms, self.losses = [], [], []
        self.metric_names = [m.name for m in self.learn.metrics]

    def before_epoch(self) -> None:
        if getattr(self.learn, "start_iter", 0):  # resuming mid-epoch: keep the restored partial sums
            self._t0 = time.perf_counter() - self._elapsed
            return
        self._t0 = time.perf_counter()
        self._sum, self._n = 0.0, 0

    def after_batch(self) -> None:
        if not self.learn.training or self.learn.loss is None:  # a batch cancelled before its loss
            return
        loss = float(self.learn.loss_value)
        lr = self.learn.hypers("lr")[-1]
        self.lrs.append(lr)
        self.moms.append(self.learn.hypers("mom")[-1])
        self.losses.append(loss)
        self.batch_history.append((self.phase, self.learn.train_iter, loss, lr))
        bs = self.learn.batch_size
        self._sum += loss * bs
        self._n += bs

    def after_epoch(self) -> None:
        row = {
            "phase": self.phase,
            "epoch": self.learn.epoch,
            "lr": self.learn.hypers("lr")[-1],
            "train_loss": self.learn._reduce_mean(self._sum, self._n),
            "valid_loss": self.learn.valid_loss,
            **self.learn.last_metrics,
            "time": time.perf_counter() - self._t0,
        }
        self.rows.append(row)
        self.epoch_ends.append(len(self.batch_history))

    # --------------------------------------------------------------- views
    @property
    def last(self) -> dict:
        return self.rows[-1] if self.rows else {}

    def state_dict(self) -> dict:
        elapsed = time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0
        return {"rows": self.rows, "batch_history": self.batch_history, "phase": self.phase,
                "epoch_ends": self.epoch_ends, "lrs": self.lrs, "moms": self.moms, "losses": self.losses,
                "epoch_progress": {"sum": self._sum, "n": self._n, "seconds": elapsed}}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [dict(r) for r in state.get("rows", [])]
        self.batch_history = [tuple(x) for x in state.get("batch_history", [])]
        self.phase = int(state.get("phase", -1))
        self.epoch_ends = list(state.get("epoch_ends", []))
        self.lrs, self.moms, self.losses = (list(state.get(k, [])) for k in ("lrs", "moms", "losses"))
        progress = state.get("epoch_progress", {})
        self._sum, self._n = float(progress.get("sum", 0.0)), int(progress.get("n", 0))
        self._elapsed = float(progress.get("seconds", 0.0))

    def plot_losses(self, path: str | Path | None = None):
        """Training loss per batch and validation loss per epoch, over all fits."""
        from .plots import plot_losses

        return plot_losses(self, path)

    def plot_lr(self, path: str | Path | None = None):
        """Learning rate (last layer group) per batch of the last fit."""
        from .plots import plot_lr

        return plot_lr(self, path)

    def plot_sched(self, path: str | Path | None = None):
        """Learning rate and momentum per batch of the last fit, side by side."""
        from .plots import plot_sched

        return plot_sched(self, path)

    def plot_metrics(self, path: str | Path | None = None):
        """Each metric per epoch over all fits."""
        from .plots import plot_metrics

        return plot_metrics(self, path)

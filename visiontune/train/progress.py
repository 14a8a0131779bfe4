"""ProgressCallback: a live bar per epoch (images/second) and the epoch table, one row per epoch."""

from __future__ import annotations

import math
import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from .._core import console as _console
from .callbacks import Callback


def format_time(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m:02d}:{s:02d}"


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6f}"
    return str(v)


class ProgressCallback(Callback):
    """Prints the epoch table (epoch, train_loss, valid_loss, metrics, time); shows a transient
    progress bar with images/second while a terminal is attached."""

    order = 100

    def __init__(self, show_bar: bool | None = None):
        self.show_bar = show_bar
        self._progress: Progress | None = None

    def _enabled(self) -> bool:
        return not self.learn.quiet and self.learn.is_main_process

    def before_fit(self) -> None:
        self.after_fit()
        if not self._enabled():
            return
        names = ["epoch", "train_loss", "valid_loss", *[m.name for m in self.learn.metrics], "time"]
        self._widths = [max(len(n), 10) for n in names]
        self._widths[0] = 5
        header = "  ".join(n.ljust(w) for n, w in zip(names, self._widths))
        if self.learn.recording:  # a fit that leaves no trace (lr_find) shows its bar, not an epoch table
            _console.out.print(f"[bold]{header}[/]", markup=True)
        bar = self.show_bar if self.show_bar is not None else _console.interactive()
        if bar:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[speed]}"),
                TimeRemainingColumn(),
                console=_console.err,
                transient=True,
            )
            self._progress.start()

    def before_train(self) -> None:
        self._start_task(f"epoch {self.learn.epoch + 1}/{self.learn.n_epoch} train", self.learn.n_iter)

    def before_validate(self) -> None:
        self._start_task(f"epoch {self.learn.epoch + 1}/{self.learn.n_epoch} valid", len(self.learn.valid_dl))

    def _start_task(self, desc: str, total: int) -> None:
        if self._progress is None:
            return
        if getattr(self, "_task", None) is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(desc, total=total, speed="")
        self._n_img = 0
        self._t0 = time.perf_counter()

    def after_batch(self) -> None:
        if self._progress is None:
            return
        self._n_img += self.learn.batch_size
        speed = self._n_img / max(time.perf_counter() - self._t0, 1e-9)
        self._progress.update(self._task, advance=1, speed=f"{speed:,.0f} img/s")

    def after_epoch(self) -> None:
        if not self._enabled() or not self.learn.recording:
            return
        row = self.learn.recorder.last
        vals = [row["epoch"], row["train_loss"], row["valid_loss"], *[row.get(m.name) for m in self.learn.metrics]]
        cells = [_fmt(v) for v in vals] + [format_time(row["time"])]
        _console.out.print("  ".join(c.ljust(w) for c, w in zip(cells, self._widths)))

    def after_fit(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    after_fail = after_cancel_fit = after_fit

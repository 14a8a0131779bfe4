"""Callbacks that watch the epochs: SaveBest, EarlyStopping, CSVLogger and TensorBoardLogger.

Each works on its own (`learn.fit_one_cycle(5, cbs=[SaveBest(), EarlyStopping(patience=3)])`) and is what
`visiontune train --save-best --early-stop 3` adds. Their state goes into checkpoints, so a resumed run
remembers the best value and the epochs without improvement.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
from pathlib import Path

from .._core import console as _console
from .._core.errors import ConfigError
from .._core.io import write_text
from .callbacks import Callback, CancelFitException

LOSSES = ("valid_loss", "train_loss")


class TrackerCallback(Callback):
    """Follows `monitor` (a loss or a metric name) epoch by epoch and keeps its best value.

    The direction comes from the metric (`Metric.higher_is_better`; losses are better lower). An epoch
    improves when it beats the best by more than `min_delta`. With `reset_on_fit` (fastai's default) each
    fit starts afresh; otherwise the best value carries over from one fit (phase) to the next."""

    order = 60
    records = True

    def __init__(self, monitor: str = "valid_loss", min_delta: float = 0.0, reset_on_fit: bool = True):
        self.monitor, self.min_delta, self.reset_on_fit = monitor, abs(float(min_delta)), reset_on_fit
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.higher_is_better = False

    def before_fit(self) -> None:
        self.higher_is_better = self._direction()
        if self.reset_on_fit and not self.learn.continuing:
            self.best, self.best_epoch = None, None

    def _direction(self) -> bool:
        if self.monitor in LOSSES:
            return False
        for m in self.learn.metrics:
            if m.name == self.monitor:
                return m.higher_is_better
        valid = [*LOSSES, *(m.name for m in self.learn.metrics)]
        raise ConfigError(f"{type(self).__name__} monitors {self.monitor!r}, which this learner does not compute. "
                          f"Valid: {', '.join(valid)}.")

    def value(self) -> float:
        return float(self.learn.recorder.last.get(self.monitor, math.nan))

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best so far (NaN never does)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.higher_is_better else value < self.best - self.min_delta

    def after_epoch(self) -> None:
        value = self.value()
        self.new_best = self.improved(value)
        if self.new_best:
            self.best, self.best_epoch = value, self.learn.epoch

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


class SaveBest(TrackerCallback):
    """Saves the weights to `models/{fname}.safetensors` whenever `monitor` improves and, with `load_best`,
    loads the best ones back when the fit ends (fastai's SaveModelCallback), so what you export is the best
    epoch rather than the last one."""

    def __init__(self, monitor: str = "valid_loss", fname: str = "best", min_delta: float = 0.0,
                 load_best: bool = True, reset_on_fit: bool = True):
        super().__init__(monitor, min_delta, reset_on_fit)
        self.fname, self.load_best = fname, load_best

    @property
    def name(self) -> str:
        return "save_best"

    def after_epoch(self) -> None:
        super().after_epoch()
        if self.new_best and self.learn.is_main_process:
            self.learn.save(self.fname)

    def after_fit(self) -> None:
        if self.load_best and self.best_epoch is not None and self.learn._model_path(self.fname).exists():
            self.learn.load(self.fname)
            _console.notice(f"loaded the best weights: epoch {self.best_epoch}, {self.monitor} {self.best:.6f}.")


class EarlyStopping(TrackerCallback):
    """Stops the fit when `monitor` has not improved for `patience` epochs. The epoch that decides it is
    finished first (logged, checkpointed, shown); the stop happens before the next one begins."""

    def __init__(self, monitor: str = "valid_loss", patience: int = 3, min_delta: float = 0.0,
                 reset_on_fit: bool = True):
        if int(patience) < 1:
            raise ConfigError(f"EarlyStopping needs patience >= 1 epoch, got {patience}.")
        super().__init__(monitor, min_delta, reset_on_fit)
        self.patience, self.wait, self.stopped_epoch = int(patience), 0, None

    @property
    def name(self) -> str:
        return "early_stopping"

    def before_fit(self) -> None:
        super().before_fit()
        if self.reset_on_fit and not self.learn.continuing:
            self.wait, self.stopped_epoch = 0, None

    def before_epoch(self) -> None:
        if self.wait >= self.patience:
            self.stopped_epoch = self.learn.epoch
            _console.notice(f"early stopping: no improvement in {self.monitor} for {self.wait} epochs "
                            f"(best {self.best:.6f} at epoch {self.best_epoch}).")
            raise CancelFitException()

    def after_epoch(self) -> None:
        super().after_epoch()
        self.wait = 0 if self.new_best else self.wait + 1

    def state_dict(self) -> dict:
        return {**super().state_dict(), "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.wait, self.stopped_epoch = int(state.get("wait", 0)), state.get("stopped_epoch")


def epoch_table(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """(columns, rows) of the epoch log: phase, epoch, lr, train_loss, valid_loss, metrics..., seconds."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            k = "seconds" if k == "time" else k
            if k not in cols:
                cols.append(k)
    if "seconds" in cols:
        cols.remove("seconds")
        cols.append("seconds")
    out = [{("seconds" if k == "time" else k): v for k, v in r.items()} for r in rows]
    return cols, out


class CSVLogger(Callback):
    """Writes the epoch table (every fit of the learner, one row per epoch) to `fname` after each epoch.

    The file is rewritten from the recorder each time (atomically), so after a resume it never shows an
    epoch twice or one that the checkpoint lost. A relative `fname` lives in `learn.path`."""

    order = 70
    records = True

    def __init__(self, fname: str | Path = "log.csv"):
        self.fname = Path(fname)

    @property
    def name(self) -> str:
        return "csv_logger"

    @property
    def path(self) -> Path:
        return self.fname if self.fname.is_absolute() else self.learn.path / self.fname

    def write(self) -> None:
        if not self.learn.is_main_process:
            return
        cols, rows = epoch_table(self.learn.recorder.rows)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        write_text(self.path, buf.getvalue())

    def before_fit(self) -> None:
        if self.learn.recorder.rows:
            self.write()  # after a resume: drop rows the checkpoint does not have

    def after_epoch(self) -> None:
        self.write()

    def after_fit(self) -> None:
        self.write()


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(Callback):
    """Logs training loss and lr per batch and the validation loss and metrics per epoch to TensorBoard
    (`tensorboard --logdir runs/`). Needs the optional extra: `pip install "visiontune[tensorboard]"`.

    Steps count training batches over every fit; after a resume, events past the checkpoint are purged."""

    order = 70
    records = True

    def __init__(self, log_dir: str | Path = "tensorboard"):
        if not tensorboard_available():
            raise ConfigError('TensorBoardLogger needs the tensorboard package: pip install "visiontune[tensorboard]".')
        self.log_dir = Path(log_dir)
        self.writer = None

    @property
    def name(self) -> str:
        return "tensorboard_logger"

    def _step(self) -> int:
        return len(self.learn.recorder.batch_history)

    def before_fit(self) -> None:
        if not self.learn.is_main_process:
            return
        from torch.utils.tensorboard import SummaryWriter

        log_dir = self.log_dir if self.log_dir.is_absolute() else self.learn.path / self.log_dir
        if self.writer is None or self.learn.continuing:
            if self.writer is not None:
                self.writer.close()
            purge = self._step() if self.learn.continuing else None
            self.writer = SummaryWriter(str(log_dir), purge_step=purge)

    def after_batch(self) -> None:
        if self.writer is None or not self.learn.training:
            return
        step = self._step()
        self.writer.add_scalar("train/loss", float(self.learn.loss_value), step)
        self.writer.add_scalar("train/lr", self.learn.hypers("lr")[-1], step)

    def after_epoch(self) -> None:
        if self.writer is None:
            return
        row, step = self.learn.recorder.last, self._step()
        for k, v in row.items():
            if k not in ("phase", "epoch", "time", "lr") and isinstance(v, float) and not math.isnan(v):
                self.writer.add_scalar(f"{'valid' if k != 'train_loss' else 'train'}/{k}", v, step)
        self.writer.flush()

    def after_fit(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def after_fail(self) -> None:
        self.after_fit()

"""RunCallback: makes a learner's training a run folder that survives crashes.

Every epoch it writes a checkpoint (atomically; the two newest are kept), the epoch log and the per-batch
events; Ctrl-C or SIGTERM stop training at the end of the current batch, save a checkpoint there and print
the command that continues the run. `attach_run` wires it (and a CSVLogger) onto a learner.
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import _console
from ..distributed import is_main_process
from ..errors import CheckpointError
from ..train.callbacks import Callback
from ..train.tracking import CSVLogger
from . import folder as F
from .checkpoint import (
    Checkpoint,
    Position,
    checkpoint_paths,
    checkpoint_state,
    latest_checkpoint,
    next_checkpoint_path,
    prune_checkpoints,
    remove_partial_files,
    write_checkpoint,
)
from .failpoints import failpoint

if TYPE_CHECKING:
    from ..train.learner import Learner

STOP_SIGNALS = ("SIGINT", "SIGTERM")
API_RESUME_HINT = "rerun your script with vision_learner(..., run_dir='{run_dir}', resume=True)"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped training after a batch; the state at that batch is saved."""


class RunCallback(Callback):
    """Checkpoints, events, status and clean stops for the run folder at `path`.

    `keep` checkpoints are kept (the newest is the one a resume uses; the previous one is the fallback if
    the newest is damaged). With `finish_each_fit` (the Python API, which cannot know which fit is the
    last), results.json and the model are written when every fit ends; `visiontune train` writes them once."""

    order = 90

    def __init__(self, path: str | Path, keep: int = 2, finish_each_fit: bool = True, resume_hint: str = ""):
        self.path, self.keep, self.finish_each_fit = Path(path), max(int(keep), 1), finish_each_fit
        self.resume_hint = resume_hint or f"visiontune resume {self.path}"  # printed after an interruption
        self.fits: list[dict] = []
        self.stop_signal: int | None = None
        self._old_handlers: dict[int, object] = {}
        self._events = None
        self.last_checkpoint: Path | None = None
        self.checkpoint_seconds: list[float] = []

    @property
    def name(self) -> str:
        return "run"

    @property
    def models(self) -> Path:
        return self.path / "models"

    # ------------------------------------------------------------------ events
    def before_fit(self) -> None:
        learn = self.learn
        if not learn.resuming:
            self.fits.append({"epochs": learn.n_epoch, "schedule": learn.schedule.name, "lrs": list(learn.base_lrs),
                              "frozen_to": learn.frozen_to, "precompute": learn.precompute})
        if is_main_process():
            self._events = open(self.path / "events.jsonl", "a", encoding="utf-8")
            F.write_status(self.path, "running", phase=learn.n_fits - 1)
        self._install_handlers()

    def after_batch(self) -> None:
        learn = self.learn
        if learn.training:
            if self._events is not None:
                rec = learn.recorder
                line = {"phase": rec.phase, "epoch": learn.epoch, "iter": learn.iter, "step": len(rec.batch_history),
                        "loss": float(learn.loss_value), "lr": learn.hypers("lr")[-1]}
                self._events.write(json.dumps(line) + "\n")
                self._events.flush()
            failpoint("batch")
        if self.stop_signal is not None:
            done = learn.iter + 1 if learn.training else learn.n_iter
            self.save(Position(learn.n_fits - 1, learn.epoch, done, True, learn.n_epoch, list(learn.base_lrs)))
            where = f"phase {learn.n_fits - 1}, epoch {learn.epoch}, batch {done} of {learn.n_iter}"
            msg = f"stopped at {where}; saved. Continue with:\n  {self.resume_hint}"
            _console.err.print(msg, highlight=False)
            F.write_status(self.path, "interrupted", position=where)
            self.stop_signal = None
            raise TrainingInterrupted(msg)

    def after_epoch(self) -> None:
        learn = self.learn
        self.save(Position(learn.n_fits - 1, learn.epoch + 1, 0, True, learn.n_epoch, list(learn.base_lrs)))

    def after_fit(self) -> None:
        self.save(Position(self.learn.n_fits, inside_fit=False))
        self._close()
        if self.finish_each_fit:
            self.finish()

    def after_fail(self) -> None:
        self._close()
        exc = sys.exc_info()[1]
        if isinstance(exc, TrainingInterrupted):
            return
        if isinstance(exc, KeyboardInterrupt):
            F.write_status(self.path, "interrupted")
            _console.err.print(f"interrupted; the last checkpoint is kept. Continue with:\n  {self.resume_hint}",
                               highlight=False)
        else:
            F.write_status(self.path, "failed", error=f"{type(exc).__name__}: {exc}"[:1000])
            if checkpoint_paths(self.models):
                _console.err.print("training failed; the last checkpoint is kept. "
                                   f"After fixing the cause, continue with:\n  {self.resume_hint}", highlight=False)

    # ------------------------------------------------------------------ state and files
    def state_dict(self) -> dict:
        return {"fits": self.fits}

    def load_state_dict(self, state: dict) -> None:
        self.fits = [dict(f) for f in state.get("fits", [])]

    def save(self, position: Position) -> Path | None:
        """Write a checkpoint of the learner at `position` and prune old ones (main process only)."""
        if not is_main_process():
            return None
        t0 = time.perf_counter()
        if self._events is not None:
            self._events.flush()
            position.extra["events_offset"] = self._events.tell()
        tensors, meta = checkpoint_state(self.learn, position)
        path = write_checkpoint(next_checkpoint_path(self.models), tensors, meta)
        prune_checkpoints(self.models, self.keep)
        self.last_checkpoint = path
        self.checkpoint_seconds.append(time.perf_counter() - t0)
        return path

    def finish(self) -> dict:
        """results.json, final weights, model.vt, report; status finished."""
        extra = {"phases": self.fits}
        if self.checkpoint_seconds:
            extra["checkpoint_seconds_median"] = round(statistics.median(self.checkpoint_seconds), 3)
        return F.finish_run(self.learn, self.path, extra)

    def truncate_events(self, offset: int) -> None:
        """Drop events logged after the checkpoint a resume starts from."""
        path = self.path / "events.jsonl"
        if path.exists() and path.stat().st_size > offset:
            with open(path, "rb+") as f:
                f.truncate(offset)

    def _close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        self._restore_handlers()

    # ------------------------------------------------------------------ signals
    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._old_handlers:
            return
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers = {}

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum
        old = self._old_handlers.pop(signum, signal.SIG_DFL)
        signal.signal(signum, old)  # a second Ctrl-C stops at once
        _console.err.print("stopping at the end of this batch to save a checkpoint (press Ctrl-C again to stop now)",
                           highlight=False)


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


def attach_run(learn: "Learner", runs: str | Path | None = None, run_dir: str | Path | None = None,
               settings: dict | None = None, name: str | None = None, resume: bool = False, keep: int = 2,
               finish_each_fit: bool = True, resume_hint: str = API_RESUME_HINT,
               run_info: dict | None = None) -> RunCallback:
    """Make `learn` train into a run folder: a new `runs/<dataset>/<name>/`, the given `run_dir`, or (with
    `resume=True`) the existing `run_dir`, continuing from its newest readable checkpoint.

    `settings` is what config.yaml records (the learner's settings by default); `resume_hint` is the command
    printed after an interruption (`{run_dir}` is filled in). Saved models (`learn.save`, SaveBest, SGDR
    snapshots) go to the run's models/ folder from then on."""
    if run_dir is None and runs is None:
        raise CheckpointError("attach_run needs runs= (a folder of runs) or run_dir= (one run folder).")
    checkpoint: Checkpoint | None = None
    if resume:
        if run_dir is None:
            raise CheckpointError("resume=True needs run_dir=: the folder of the run to continue.")
        path = Path(run_dir)
        if not (path / "config.yaml").exists():
            raise CheckpointError(f"{path} is not a run folder (no config.yaml); nothing to resume.")
        remove_partial_files(path)
        remove_partial_files(path / "models")
        checkpoint = latest_checkpoint(path / "models")
    else:
        if run_dir is not None:
            path = Path(run_dir)
            if path.exists() and any(path.iterdir()):
                raise CheckpointError(f"{path} already holds files. Pick a new run_dir, pass resume=True to continue "
                                      f"that run, or runs= to get a fresh folder.")
            path.mkdir(parents=True, exist_ok=True)
        else:
            dataset = Path(learn.data.path).resolve().name
            arch = learner_settings(learn)["arch"]
            default = f"{time.strftime('%Y%m%d-%H%M%S')}-{arch}-{learn.data.size}-bs{learn.data.bs}"
            path = F.new_run_dir(runs, dataset, name or default)
        info = {"source": "python", "data_fingerprint": learn.data.fingerprint(), **(run_info or {}),
                **F.environment()}
        if is_main_process():
            F.write_config(path, settings if settings is not None else learner_settings(learn), info)
    cb = RunCallback(path, keep=keep, finish_each_fit=finish_each_fit, resume_hint=resume_hint.format(run_dir=path))
    learn.path = path
    learn.add_cbs([CSVLogger(path.resolve() / "log.csv"), cb])
    if not resume:
        F.write_status(path, "running")
        if settings is None:
            _console.notice(f"run folder: {path}")
    elif checkpoint is None:  # killed before the first checkpoint: start from the beginning
        cb.truncate_events(0)
        (path / "log.csv").unlink(missing_ok=True)
    else:
        cb.truncate_events(checkpoint.position.extra.get("events_offset", 0))
        # The state right away (a script whose fits had all finished ends with it); everything again,
        # random state included, when the learner reaches the interrupted fit.
        checkpoint.restore(learn, rng=False)
        learn.resume_from = checkpoint
    return cb

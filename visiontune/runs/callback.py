"""RunFolder: the callback that makes a learner's training a run folder that survives crashes, and Resume,
the callback that positions a resumed run's fits.

Every epoch RunFolder writes a checkpoint (atomically; the two newest are kept), the epoch log and the per-batch
events; Ctrl-C or SIGTERM stop training at the end of the current batch, save a checkpoint there and print
the command that continues the run. `vision_learner(data, cbs=[RunFolder("runs")])` is the whole wiring
(`runs=` and `run_dir=`/`resume=` are sugar for it); the Learner knows nothing of run folders.
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

from .._core import console as _console
from .._core.distributed import is_main_process
from .._core.errors import CheckpointError
from .._core.failpoints import failpoint
from .._core.io import disk_full_error, is_disk_full
from ..train.callbacks import Callback, CancelSaveException, SkipFitException
from ..train.tracking import CSVLogger
from ..train.vision import learner_settings
from .checkpoint import (
    Checkpoint,
    Position,
    checkpoint_paths,
    checkpoint_state,
    latest_checkpoint,
    next_checkpoint_path,
    prune_checkpoints,
    write_checkpoint,
)
from .finish import finish_run
from .rundir import RunDir, environment

if TYPE_CHECKING:
    from ..train.learner import Learner

STOP_SIGNALS = ("SIGINT", "SIGTERM")
API_RESUME_HINT = "rerun your script with vision_learner(..., run_dir='{run_dir}', resume=True)"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped training after a batch; the state at that batch is saved."""


class RunFolder(Callback):
    """Trains the learner into a run folder: a new `runs/<dataset>/<name>/`, the given `run_dir`, or (with
    `resume=True`) the existing `run_dir`, continuing from its newest readable checkpoint.

    Writes config.yaml (`settings`, the learner's settings by default), status.json, log.csv (a CSVLogger),
    events.jsonl and a checkpoint every epoch (`keep` are kept: the newest, and fallbacks if it is damaged).
    With `finish_each_fit` (the Python API, which cannot know which fit is the last) results.json, the model
    and the report are written when every fit ends; `visiontune train` writes them once. Saved models
    (`learn.save`, SaveBest, SGDR snapshots) go to the run's models/ folder. `resume_hint` is the command
    printed after an interruption (`{run_dir}` is filled in)."""

    order = 90
    records = True

    def __init__(self, runs: str | Path | None = None, run_dir: str | Path | None = None, resume: bool = False,
                 name: str | None = None, settings: dict | None = None, run_info: dict | None = None, keep: int = 2,
                 finish_each_fit: bool = True, resume_hint: str = API_RESUME_HINT):
        if run_dir is None and runs is None:
            raise CheckpointError("RunFolder needs runs= (a folder of runs) or run_dir= (one run folder).")
        if resume and run_dir is None:
            raise CheckpointError("resume=True needs run_dir=: the folder of the run to continue.")
        self.runs, self.run_dir, self.resume, self.run_name = runs, run_dir, resume, name
        self.settings, self.run_info = settings, run_info
        self.keep, self.finish_each_fit, self.hint = max(int(keep), 1), finish_each_fit, resume_hint
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
        return self.dir.models

    @property
    def fit_index(self) -> int:
        """The fit (phase) under way, counted from 0 over the whole run, resumed ones included."""
        return len(self.fits) - 1

    # ------------------------------------------------------------------ the folder
    def after_create(self) -> None:
        learn = self.learn
        self.dir = self._open() if self.resume else self._new()
        self.path = self.dir.path
        self.resume_hint = self.hint.format(run_dir=self.path)
        learn.path = self.path
        learn.add_cbs([CSVLogger(self.dir.log_file.resolve())])
        if not self.resume:
            self.dir.write_status("running")
            if self.settings is None:
                _console.notice(f"run folder: {self.path}")
            return
        checkpoint = latest_checkpoint(self.models)
        self._check_config(checkpoint)
        if checkpoint is None:  # killed before the first checkpoint: start from the beginning
            self.dir.truncate_events(0)
            self.dir.log_file.unlink(missing_ok=True)
        else:
            self.dir.truncate_events(checkpoint.position.extra.get("events_offset", 0))
        learn.add_cbs([Resume(checkpoint)])

    def _new(self) -> RunDir:
        learn = self.learn
        if self.run_dir is not None:
            path = Path(self.run_dir)
            if path.exists() and any(path.iterdir()):
                raise CheckpointError(f"{path} already holds files. Pick a new run_dir, pass resume=True to continue "
                                      f"that run, or runs= to get a fresh folder.")
            path.mkdir(parents=True, exist_ok=True)
            run = RunDir(path)
        else:
            settings = learner_settings(learn)
            default = f"{time.strftime('%Y%m%d-%H%M%S')}-{settings['arch']}-{learn.data.size}-bs{learn.data.bs}"
            run = RunDir.create(self.runs, Path(learn.data.path).resolve().name, self.run_name or default)
        info = {"source": "python", "data_fingerprint": learn.data.fingerprint(), **(self.run_info or {}),
                **environment()}
        if is_main_process():
            run.write_config(self.settings if self.settings is not None else learner_settings(learn), info)
        run.lock()
        return run

    def _open(self) -> RunDir:
        run = RunDir(self.run_dir)
        if not run.config_file.exists():
            raise CheckpointError(f"{run.path} is not a run folder (no config.yaml); nothing to resume.")
        run.lock()  # before touching anything: another process may be writing these files
        run.remove_partial_files()
        return run

    def _check_config(self, checkpoint: Checkpoint | None) -> None:
        """Refuse to resume when config.yaml is not the file the checkpoint was written under (damaged, or
        edited): the resumed epochs would silently train a different run."""
        recorded = checkpoint.position.extra.get("config_sha256") if checkpoint is not None else None
        if recorded is None or recorded == self.dir.config_digest():
            return
        self.dir.unlock()
        raise CheckpointError(
            f"{self.dir.config_file} changed since {checkpoint.path.name} was written (its SHA-256 differs): it was "
            f"damaged or edited, and resuming would train a different run. Put the original back, or train anew "
            f"with `visiontune rerun {self.dir.config_file}`.")

    # ------------------------------------------------------------------ events
    def before_fit(self) -> None:
        learn = self.learn
        if not learn.continuing:
            self.fits.append({"epochs": learn.n_epoch, "schedule": learn.schedule.name, "lrs": list(learn.base_lrs),
                              "frozen_to": learn.frozen_to, "precompute": learn.precompute})
        self.dir.lock()  # again after finish() released it (the Python API: one finish per fit)
        if is_main_process():
            self._events = open(self.dir.events_file, "a", encoding="utf-8")
            self.dir.write_status("running", phase=self.fit_index)
        self._install_handlers()

    def after_batch(self) -> None:
        learn = self.learn
        if learn.training:
            if self._events is not None and learn.loss is not None:
                rec = learn.recorder
                line = {"phase": rec.phase, "epoch": learn.epoch, "iter": learn.iter, "step": len(rec.batch_history),
                        "loss": float(learn.loss_value), "lr": learn.hypers("lr")[-1]}
                self._log_event(json.dumps(line) + "\n")
            failpoint("batch")
        if self.stop_signal is not None:
            done = learn.iter + 1 if learn.training else learn.n_iter
            self.save(Position(self.fit_index, learn.epoch, done, True, learn.n_epoch, list(learn.base_lrs)))
            where = f"phase {self.fit_index}, epoch {learn.epoch}, batch {done} of {learn.n_iter}"
            msg = f"stopped at {where}; saved. Continue with:\n  {self.resume_hint}"
            _console.err.print(msg, highlight=False)
            self.dir.write_status( "interrupted", position=where)
            self.stop_signal = None
            raise TrainingInterrupted(msg)

    def _log_event(self, line: str) -> None:
        """Append one line to events.jsonl; a full disk stops training with the one clear message."""
        try:
            self._events.write(line)
            self._events.flush()
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(self.dir.events_file, len(line), e) from e
            raise

    def after_epoch(self) -> None:
        learn = self.learn
        self.save(Position(self.fit_index, learn.epoch + 1, 0, True, learn.n_epoch, list(learn.base_lrs)))

    def after_fit(self) -> None:
        self.save(Position(self.fit_index + 1, inside_fit=False))
        self._close()
        if self.finish_each_fit:
            self.finish()

    def after_fail(self) -> None:
        self._close()
        self.dir.unlock()
        exc = sys.exc_info()[1]
        if isinstance(exc, TrainingInterrupted):
            return
        if isinstance(exc, KeyboardInterrupt):
            self.dir.write_status( "interrupted")
            _console.err.print(f"interrupted; the last checkpoint is kept. Continue with:\n  {self.resume_hint}",
                               highlight=False)
        else:
            self.dir.write_status( "failed", error=f"{type(exc).__name__}: {exc}"[:1000])
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
        position.extra["config_sha256"] = self.dir.config_digest()
        tensors, meta = checkpoint_state(self.learn, position)
        path = write_checkpoint(next_checkpoint_path(self.models), tensors, meta)
        prune_checkpoints(self.models, self.keep)
        self.last_checkpoint = path
        self.checkpoint_seconds.append(time.perf_counter() - t0)
        return path

    def finish(self, predict_test: bool = False, clip: float | None = None) -> dict:
        """results.json, final weights, model.vt, report (and, with `predict_test`, the test set's predictions
        and submission); status finished."""
        extra = {"phases": self.fits}
        if self.checkpoint_seconds:
            extra["checkpoint_seconds_median"] = round(statistics.median(self.checkpoint_seconds), 3)
        try:
            return finish_run(self.learn, self.dir, extra, predict_test=predict_test, clip=clip)
        finally:
            self.dir.unlock()

    def _close(self) -> None:
        if self._events is not None:
            try:
                self._events.close()
            except OSError:  # a full disk: the lines that fit are kept; a resume truncates to the checkpoint
                pass
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




class Resume(Callback):
    """Positions a resumed run: fits that had finished before the interruption are skipped (the checkpoint
    holds their result), and the interrupted one continues at the checkpoint's epoch and batch with its
    weights, optimizer, callback states and random state. Added by RunFolder(resume=True)."""

    order = -100  # before every other callback: a skipped fit fires no event at all
    records = True

    def __init__(self, checkpoint: Checkpoint | None):
        self.checkpoint, self.seen, self.done = checkpoint, 0, checkpoint is None

    def after_create(self) -> None:
        # The state right away (a script whose fits had all finished ends with it); everything again, random
        # state included, when the learner reaches the interrupted fit.
        if self.checkpoint is not None:
            self.checkpoint.restore(self.learn, rng=False)

    def before_fit(self) -> None:
        if self.done:
            return
        index, self.seen = self.seen, self.seen + 1
        if index == 0:
            self.checkpoint.restore(self.learn, rng=False)  # callbacks added after the run folder have state too
        if index < self.checkpoint.fit_index:
            raise SkipFitException()
        self.done = True
        self.learn.start_epoch, self.learn.start_iter, _ = self.checkpoint.enter(self.learn)

    def before_save(self) -> None:
        if not self.done and self.learn.save_path.exists():
            raise CancelSaveException()  # replaying the script: the interrupted run wrote this file; keep it


def attach_run(learn: "Learner", **kwargs) -> RunFolder:
    """Add a RunFolder(**kwargs) to `learn` and return it (the older spelling of `cbs=[RunFolder(...)]`)."""
    cb = RunFolder(**kwargs)
    learn.add_cbs([cb])
    return cb


RunCallback = RunFolder  # the name before the architecture round

"""RunDir: the one owner of a run folder's layout. Nothing else in visiontune spells out these names.

    runs/<dataset>/<YYYYMMDD-HHMMSS>-<arch>-<size>-<key params>/
      config.yaml    every setting (defaults included), the data path and fingerprint, versions
      status.json    running / finished / interrupted / failed, with the process id and the last position
      log.csv        one row per epoch: phase, epoch, lr, train_loss, valid_loss, metrics, seconds
      events.jsonl   one line per training batch: phase, epoch, iter, step, loss, lr
      models/        checkpoints (the newest two), best.safetensors, final.safetensors, your own saves
      results.json   final metrics, class names, confusion matrix, the phases that were trained
      model.vt       the exported model;  report.html  the report page;  lr_find.png  (when you make one)
      predictions.csv, submission.csv   the test set's predictions (`visiontune train` on data with a test folder)
      .lock          held (fcntl.flock) by the one process that trains or resumes the run; the kernel
                     releases it when that process ends, however it ends (kill -9 included)
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from .._core.distributed import broadcast_object, is_main_process
from .._core.errors import CheckpointError, ConfigError, RunLockedError
from .._core.io import read_yaml_mapping, remove_partial_files, write_text
from .._core.version import __version__

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so two resumes of one run are not prevented there
    fcntl = None

if TYPE_CHECKING:
    from ..interpret.history import TrainingHistory
    from .config import TrainConfig

STATUSES = ("running", "finished", "interrupted", "failed")


class RunDir:
    """A run folder: where each of its files lives, and reading and writing them."""

    CONFIG, STATUS, LOG, EVENTS, RESULTS = "config.yaml", "status.json", "log.csv", "events.jsonl", "results.json"
    MODELS, FINAL, MODEL, REPORT, LR_FIND = "models", "final", "model.vt", "report.html", "lr_find.png"
    PREDICTIONS, SUBMISSION, LOCK = "predictions.csv", "submission.csv", ".lock"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ the layout
    config_file = property(lambda self: self.path / self.CONFIG)
    status_file = property(lambda self: self.path / self.STATUS)
    log_file = property(lambda self: self.path / self.LOG)
    events_file = property(lambda self: self.path / self.EVENTS)
    results_file = property(lambda self: self.path / self.RESULTS)
    models = property(lambda self: self.path / self.MODELS)
    final_weights = property(lambda self: self.models / f"{self.FINAL}.safetensors")
    model_file = property(lambda self: self.path / self.MODEL)
    report_file = property(lambda self: self.path / self.REPORT)
    lr_find_image = property(lambda self: self.path / self.LR_FIND)
    predictions_file = property(lambda self: self.path / self.PREDICTIONS)
    submission_file = property(lambda self: self.path / self.SUBMISSION)

    @classmethod
    def is_run(cls, path: str | os.PathLike) -> bool:
        return (Path(path) / cls.CONFIG).is_file()

    @classmethod
    def of(cls, path: str | os.PathLike) -> "RunDir":
        """The run folder `path` names: the folder itself, or the folder of its config.yaml."""
        path = Path(path)
        return cls(path.parent if path.name == cls.CONFIG else path)

    @classmethod
    def containing(cls, file: str | os.PathLike) -> "RunDir | None":
        """The run folder a file (model.vt, models/x.safetensors) sits in, or None."""
        for folder in (Path(file).parent, Path(file).parent.parent):
            if cls.is_run(folder):
                return cls(folder)
        return None

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, runs: str | os.PathLike, dataset: str, name: str) -> "RunDir":
        """Create `runs/<dataset>/<name>` (with `-2`, `-3`, ... when that name is taken). Under torchrun, rank 0
        creates it and every rank gets its path."""
        if not is_main_process():
            return cls(broadcast_object(None))
        base = Path(runs).expanduser() / (dataset or "data")
        base.mkdir(parents=True, exist_ok=True)
        for i in range(1, 1000):
            path = base / (name if i == 1 else f"{name}-{i}")
            try:
                path.mkdir()
                broadcast_object(str(path))
                return cls(path)
            except FileExistsError:
                continue
        raise ConfigError(f"Too many runs named {name} in {base}.")

    def remove_partial_files(self) -> None:
        """Temporary files a killed writer left in the folder and in models/."""
        remove_partial_files(self.path)
        remove_partial_files(self.models)

    # ------------------------------------------------------------------ the lock
    lock_file = property(lambda self: self.path / self.LOCK)

    def lock(self) -> None:
        """Take the run's lock for as long as this process trains it (idempotent). Two processes training one
        folder would interleave checkpoints and log rows, so the second is refused with RunLockedError. The
        lock is an flock on RUN/.lock: the kernel drops it when its holder dies, so a killed run never blocks
        its own resume."""
        if self._lock_fd is not None or fcntl is None or not is_main_process():
            return
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"{self.path} is being trained by another visiontune process (pid {holder}); two "
                                 f"processes must not write one run. Wait for it to end (or stop it), then run "
                                 f"`visiontune resume {self.path}` again.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock taken by `lock` (a no-op when this object does not hold it)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def check_unlocked(self) -> None:
        """Raise RunLockedError now if another process holds the lock (so `resume` refuses before it loads
        data and model); takes nothing."""
        self.lock()
        self.unlock()

    # ------------------------------------------------------------------ config
    def config_digest(self) -> str | None:
        """SHA-256 of config.yaml as it is on disk (None when missing): checkpoints record it, so a resume
        notices a config.yaml damaged or edited since (it would train a different run)."""
        import hashlib

        try:
            return hashlib.sha256(self.config_file.read_bytes()).hexdigest()
        except OSError:
            return None

    def write_config(self, settings: dict, run_info: dict) -> Path:
        """config.yaml: the settings (which `TrainConfig.from_dict` reads back for rerun) and, under `_run`,
        what was resolved at run time (data fingerprint, device, versions)."""
        self.__dict__.pop("config", None)
        return write_text(self.config_file, yaml.safe_dump({**settings, "_run": run_info}, sort_keys=False))

    @cached_property
    def config(self) -> dict:
        """config.yaml as a dict (`_run` included), parsed once."""
        path = self.config_file
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist. Pass a run folder (runs/<dataset>/<run>/) or its "
                                  f"config.yaml.")
        return read_yaml_mapping(path)

    @property
    def settings(self) -> dict:
        """The settings of config.yaml, without the `_run` record."""
        return {k: v for k, v in self.config.items() if k != "_run"}

    @property
    def info(self) -> dict:
        """The `_run` record of config.yaml: how the run was made and what its defaults resolved to."""
        return self.config.get("_run") or {}

    @property
    def from_python(self) -> bool:
        return self.info.get("source") == "python"

    # ------------------------------------------------------------------ status
    def write_status(self, status: str, **extra) -> None:
        """status.json: the run's state, the process that owns it and when it was last updated."""
        if not is_main_process():
            return
        info = {**self.read_status(), "status": status, "pid": os.getpid(), "host": socket.gethostname(),
                "updated": datetime.now().isoformat(timespec="seconds"), **extra}
        info.setdefault("started", info["updated"])
        if status != "failed":
            info.pop("error", None)
        write_text(self.status_file, json.dumps(info, indent=2))

    def read_status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    @property
    def status(self) -> str:
        """finished / interrupted / failed / running; a run marked running whose process is gone was killed
        (power cut, kill -9, out of memory): interrupted."""
        info = self.read_status()
        status = info.get("status", "interrupted")
        if status == "running" and info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", 0) or 0)):
            return "interrupted"
        return status

    # ------------------------------------------------------------------ what training leaves
    def read_results(self) -> dict:
        try:
            return json.loads(self.results_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def write_results(self, results: dict) -> None:
        if is_main_process():
            write_text(self.results_file, json.dumps(results, indent=2))

    def history(self) -> "TrainingHistory":
        """log.csv (epochs) and events.jsonl (batches) as a TrainingHistory; either may be missing."""
        import csv

        from ..interpret.history import TrainingHistory, parse_number

        rows: list[dict] = []
        if self.log_file.is_file():
            with open(self.log_file, newline="") as f:
                rows = [{k: parse_number(v) for k, v in r.items()} for r in csv.DictReader(f)]
        losses, ends = [], {}
        if self.events_file.is_file():
            for line in self.events_file.read_text().splitlines():
                try:
                    e = json.loads(line)
                    losses.append(float(e["loss"]))
                    ends[(int(e["phase"]), int(e["epoch"]))] = int(e.get("step", len(losses)))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash
        epoch_ends = [ends.get((int(r.get("phase", -1)), int(r.get("epoch", -1))), -1) for r in rows]
        return TrainingHistory(rows, losses, [] if any(e < 0 for e in epoch_ends) else epoch_ends)

    def truncate_events(self, offset: int) -> None:
        """Drop events logged after the checkpoint a resume starts from."""
        path = self.events_file
        if path.exists() and path.stat().st_size > offset:
            with open(path, "rb+") as f:
                f.truncate(offset)

    def model_source(self) -> Path:
        """The file to predict with: model.vt, else models/final.safetensors, else the newest saved weights."""
        if self.model_file.is_file():
            return self.model_file
        if self.final_weights.is_file():
            return self.final_weights
        saved = sorted(self.models.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        if saved:
            return saved[-1]
        raise CheckpointError(f"{self.path} holds no model: expected {self.model_file} or {self.models}/*.safetensors "
                              f"(a run folder written by `visiontune train`).")


# ---------------------------------------------------------------------------- naming and facts
def _fmt_num(x: float) -> str:
    return f"{x:g}"


def run_name(cfg: "TrainConfig", when: datetime | None = None) -> str:
    """`YYYYMMDD-HHMMSS-<arch>-<size>-<key params>`: the settings people compare runs by."""
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    parts = [stamp, cfg.arch, str(cfg.size)]
    if cfg.fine_tune:
        parts.append(f"ft{cfg.epochs}")
    else:
        parts.append(f"e{cfg.epochs}")
        if cfg.unfreeze_epochs:
            parts.append(f"u{cfg.unfreeze_epochs}")
    if cfg.lr is not None:
        parts.append(f"lr{_fmt_num(cfg.lr)}")
    if cfg.precompute:
        parts.append("pre")
    if cfg.augment:
        parts.append(cfg.augment)
    if cfg.schedule != "one_cycle":
        parts.append(cfg.schedule)
    return "-".join(parts)


def _program() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return "visiontune" if name in ("__main__.py", "visiontune") else name


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    return {
        "visiontune": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "created": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([_program(), *sys.argv[1:]]),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

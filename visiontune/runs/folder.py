"""Run folders: `runs/<dataset>/<YYYYMMDD-HHMMSS>-<arch>-<size>-<key params>/` with config.yaml, log.csv,
events.jsonl, models/ (checkpoints, best, final), results.json, status.json, report.html and model.vt.

    config.yaml   every setting (defaults included), the data path and fingerprint, versions
    status.json   running / finished / interrupted / failed, with the process id and the last position
    log.csv       one row per epoch: phase, epoch, lr, train_loss, valid_loss, metrics, seconds
    events.jsonl  one line per training batch: phase, epoch, iter, step, loss, lr
    results.json  final metrics, class names, confusion matrix, the phases that were trained
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from .. import __version__, _console
from ..distributed import broadcast_object, is_main_process
from ..errors import CheckpointError, ConfigError
from ..infer.export import atomic_write

if TYPE_CHECKING:
    from ..train.learner import Learner
    from .config import TrainConfig

STATUSES = ("running", "finished", "interrupted", "failed")


# ---------------------------------------------------------------------------- naming and creation
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


def new_run_dir(runs: str | os.PathLike, dataset: str, name: str) -> Path:
    """Create and return `runs/<dataset>/<name>` (with `-2`, `-3`, ... when that name is taken). Under
    torchrun, rank 0 creates it and every rank gets its path."""
    if not is_main_process():
        return Path(broadcast_object(None))
    path = _create_run_dir(runs, dataset, name)
    broadcast_object(str(path))
    return path


def _create_run_dir(runs: str | os.PathLike, dataset: str, name: str) -> Path:
    base = Path(runs).expanduser() / (dataset or "data")
    base.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        path = base / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"Too many runs named {name} in {base}.")


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


def write_config(run_dir: Path, settings: dict, run_info: dict) -> Path:
    """config.yaml: the settings (which `TrainConfig.from_dict` reads back for rerun) and, under `_run`,
    what was resolved at run time (data fingerprint, device, versions)."""
    text = yaml.safe_dump({**settings, "_run": run_info}, sort_keys=False)
    return atomic_write(Path(run_dir) / "config.yaml", lambda tmp: Path(tmp).write_text(text))


def read_config(path: str | os.PathLike) -> dict:
    """config.yaml of a run (pass the file or its run folder) as a dict, `_run` included."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist. Pass a run folder (runs/<dataset>/<run>/) or its config.yaml.")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path} should hold `key: value` lines, got {type(d).__name__}.")
    return d


# ---------------------------------------------------------------------------- status
def write_status(run_dir: Path, status: str, **extra) -> None:
    """status.json: the run's state, the process that owns it and when it was last updated."""
    if not is_main_process():
        return
    path = Path(run_dir) / "status.json"
    old = read_status(run_dir)
    info = {**old, "status": status, "pid": os.getpid(), "host": socket.gethostname(),
            "updated": datetime.now().isoformat(timespec="seconds"), **extra}
    info.setdefault("started", info["updated"])
    if status != "failed":
        info.pop("error", None)
    text = json.dumps(info, indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: Path) -> str:
    """finished / interrupted / failed / running; a run marked running whose process is gone was killed
    (power cut, kill -9, out of memory): interrupted."""
    info = read_status(run_dir)
    status = info.get("status", "interrupted")
    if status == "running" and info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", 0) or 0)):
        return "interrupted"
    return status


# ---------------------------------------------------------------------------- results
def confusion(learn: "Learner", probs: torch.Tensor, targets: torch.Tensor) -> list:
    """sklearn's confusion matrix (rows: actual, columns: predicted); per class 2x2 for multi-label."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

    if getattr(learn.data, "is_multi_label", False):
        return multilabel_confusion_matrix(targets.numpy().astype(int), (probs > learn.thresh).numpy().astype(int)).tolist()
    return confusion_matrix(targets.numpy(), probs.argmax(1).numpy(), labels=list(range(learn.data.c))).tolist()


def final_results(learn: "Learner") -> dict:
    """Loss and metrics of the model as it is now on the validation set, and its confusion matrix."""
    probs, targets, losses = learn.get_preds("valid", with_loss=True)
    out: dict[str, Any] = {"metrics": {}, "classes": list(learn.data.classes), "n_valid": int(len(targets))}
    if len(targets):
        out["metrics"] = {"valid_loss": float(losses.float().mean()), **{m.name: m(probs, targets) for m in learn.metrics}}
        out["confusion_matrix"] = confusion(learn, probs, targets)
    return out


def write_results(learn: "Learner", run_dir: Path, extra: dict | None = None) -> dict:
    """results.json: final metrics, classes, confusion matrix, epochs, best epoch and phases."""
    res = final_results(learn)
    rows = learn.recorder.rows
    res["epochs"] = len(rows)
    res["train_seconds"] = round(sum(r.get("time", 0.0) for r in rows), 2)
    best = getattr(learn, "save_best", None)
    if best is not None and best.best_epoch is not None:
        res["best"] = {"monitor": best.monitor, "value": best.best, "epoch": best.best_epoch}
    res.update(extra or {})
    res["written"] = datetime.now().isoformat(timespec="seconds")
    if is_main_process():
        text = json.dumps(res, indent=2)
        atomic_write(Path(run_dir) / "results.json", lambda tmp: Path(tmp).write_text(text))
    return res


def write_report(learn: "Learner", run_dir: Path) -> Path | None:
    """Hook for the HTML report of the interpretation issue: report.html, when visiontune has it."""
    try:
        from ..interpret.report import write_report as _write_report  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _write_report(learn, Path(run_dir) / "report.html")


def save_outputs(learn: "Learner", run_dir: Path) -> dict[str, str]:
    """The final weights (models/final.safetensors), model.vt (when the learner can export) and the report."""
    run_dir = Path(run_dir)
    out = {"weights": learn.save(run_dir / "models" / "final")}
    if hasattr(learn, "export"):
        out["model"] = learn.export(run_dir / "model.vt")
    report = write_report(learn, run_dir)
    if report is not None:
        out["report"] = report
    return {k: str(Path(v).relative_to(run_dir)) if Path(v).is_relative_to(run_dir) else str(v)
            for k, v in out.items()}


def print_summary(results: dict, run_dir: Path) -> None:
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in results.get("metrics", {}).items())
    outputs = results.get("outputs", {})
    model = Path(run_dir) / (outputs.get("model") or outputs.get("weights") or "")
    _console.out.print(f"\n[bold green]done[/]: {results.get('epochs', 0)} epochs in {results.get('train_seconds', 0):.0f}s"
                       f"  {metrics}\nrun folder: {run_dir}\nmodel: {model}", markup=True)


def finish_run(learn: "Learner", run_dir: Path, extra: dict | None = None) -> dict:
    """Write the outputs and results.json, and mark the run finished."""
    outputs = save_outputs(learn, run_dir) if is_main_process() else {}
    results = write_results(learn, run_dir, {**(extra or {}), "outputs": outputs})
    write_status(run_dir, "finished", epochs=results["epochs"])
    return results

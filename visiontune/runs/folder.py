"""Run folders: `runs/<dataset>/<YYYYMMDD-HHMMSS>-<arch>-<size>-<key params>/` with the config, the epoch
log, the results and the model."""

from __future__ import annotations

import csv
import json
import platform
import time
from datetime import datetime
from pathlib import Path

import torch
import yaml

from .. import __version__, _console
from ..distributed import broadcast_object, is_main_process
from .config import TrainConfig


def run_name(cfg: TrainConfig, when: datetime | None = None) -> str:
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    parts = [stamp, cfg.arch, str(cfg.size)]
    if cfg.fine_tune:
        parts.append(f"ft{cfg.epochs}")
    else:
        parts.append(f"e{cfg.epochs}")
        if cfg.unfreeze_epochs:
            parts.append(f"u{cfg.unfreeze_epochs}")
    if cfg.precompute:
        parts.append("pre")
    if cfg.augment:
        parts.append(cfg.augment)
    return "-".join(parts)


def start_run(cfg: TrainConfig) -> Path:
    """Create the run folder and write config.yaml (every resolved setting plus versions)."""
    dataset = cfg.data_path.resolve().name or "data"
    base = Path(cfg.out) / dataset
    name = run_name(cfg)
    run_dir = base / name
    i = 1
    while run_dir.exists():
        i += 1
        run_dir = base / f"{name}-{i}"
    run_dir = Path(broadcast_object(str(run_dir)))  # rank 0 names the one folder of a torchrun job
    if is_main_process():
        run_dir.mkdir(parents=True)
        meta = {"visiontune": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
        (run_dir / "config.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "_versions": meta}, sort_keys=False))
    return run_dir


def write_log(learn, path: Path) -> None:
    """log.csv: one row per epoch over all phases."""
    rows = learn.recorder.rows
    if not rows:
        return
    keys = list(rows[0].keys())
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in keys})


def finish_run(learn, cfg: TrainConfig, run_dir: Path, seconds: float) -> dict:
    """Save the model, log.csv and results.json; print the final metrics and where everything is."""
    last = learn.recorder.last
    results = {k: v for k, v in last.items() if k not in ("phase", "epoch", "lr", "time")}
    results.update({"classes": learn.data.classes, "seconds": round(seconds, 2), "finished": time.time()})
    if is_main_process():
        model_path = learn.save(run_dir / "models" / "final")
        write_log(learn, run_dir / "log.csv")
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float) and k != "finished")
        _console.out.print(f"\n[bold green]done[/] in {seconds:.0f}s: {metrics}\nrun folder: {run_dir}\nmodel: {model_path}",
                           markup=True)
    return results

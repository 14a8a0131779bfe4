"""`list_runs(dir)`: what `visiontune runs` shows, one dict per run folder found under `dir`."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from .._core.errors import ConfigError
from ..train.metrics import get_metrics
from .rundir import RunDir


def find_run_dirs(root: Path, depth: int = 3) -> list[Path]:
    """Folders holding a config.yaml under `root` (root itself, runs/<dataset>/<run>, ...)."""
    root = Path(root)
    if RunDir.is_run(root):
        return [root]
    found: list[Path] = []
    if depth and root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and not p.name.startswith("."):
                found += find_run_dirs(p, depth - 1)
    return found


def _read_log(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def best_metric(rows: list[dict], metrics: list[str]) -> tuple[str, float] | None:
    """(name, best value) of the run's first metric over its epoch log (valid_loss if it has none)."""
    for name in [*metrics, "valid_loss"]:
        values = []
        for r in rows:
            try:
                values.append(float(r.get(name, "nan")))
            except ValueError:
                continue
        values = [v for v in values if not math.isnan(v)]
        if not values:
            continue
        higher = False
        if name != "valid_loss":
            try:
                higher = get_metrics([name])[0].higher_is_better
            except (ConfigError, IndexError):
                higher = True
        return name, (max(values) if higher else min(values))
    return None


def planned_epochs(cfg: dict) -> int | None:
    if "epochs" not in cfg or "unfreeze_epochs" not in cfg:
        return None
    if cfg.get("fine_tune"):
        return int(cfg["epochs"]) + int(cfg.get("freeze_epochs") or 0)
    return int(cfg["epochs"]) + int(cfg["unfreeze_epochs"] or 0)


def list_runs(root: str | os.PathLike = "runs") -> list[dict]:
    """One dict per run under `root`, oldest first: path, date, dataset, arch, epochs, planned, best, status."""
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"{root} does not exist. Pass the folder your runs are in (default: runs).")
    out = []
    for run_dir in find_run_dirs(root):
        run = RunDir(run_dir)
        try:
            cfg = run.config
        except Exception:  # noqa: BLE001  (a damaged config still gets listed)
            cfg = {}
        info = cfg.get("_run") or {}
        rows = _read_log(run.log_file)
        out.append({
            "path": str(run_dir),
            "name": run_dir.name,
            "date": str(info.get("created", "")).replace("T", " "),
            "dataset": Path(str(cfg.get("data", ""))).name or run_dir.parent.name,
            "arch": cfg.get("arch", "?"),
            "epochs": len(rows),
            "planned": planned_epochs(cfg),
            "best": best_metric(rows, list(cfg.get("metrics") or [])),
            "status": run.status,
        })
    return sorted(out, key=lambda r: (r["date"], r["path"]))

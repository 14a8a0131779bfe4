"""`visiontune resume`, `rerun` and `runs`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .._core import console as _console
from .app import app


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="The run folder to continue (runs/DATASET/RUN/)."),
) -> None:
    """Continue a stopped run (Ctrl-C, kill -9, power cut, crash) from its newest complete checkpoint, in the
    same folder, with the same settings, learning-rate schedule and random state."""
    from ..runs.recipe import resume as run_resume

    run_resume(run_dir)


@app.command()
def rerun(
    config: Path = typer.Argument(..., help="A run's config.yaml (or its run folder)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Change a setting: --set epochs=5 --set lr=1e-3 "
                                             "(keys as in config.yaml)."),
) -> None:
    """Train again from a run's config.yaml into a new run folder. Unchanged, it reproduces the run: the same
    seed gives the same metrics on the CPU; it prints the old and new final metrics side by side."""
    from ..runs.recipe import rerun as run_rerun

    config_dir = config if config.is_dir() else config.parent
    before = _results(config_dir)
    learn = run_rerun(config, list(set_ or []))
    after = _results(learn.run.path)
    if before.get("metrics") and after.get("metrics"):
        _console.out.print(f"{'':12}  {'original':>12}  {'rerun':>12}")
        for k, v in before["metrics"].items():
            w = after["metrics"].get(k)
            _console.out.print(f"{k:12}  {v:12.6f}  {w:12.6f}" if w is not None else f"{k:12}  {v:12.6f}")


def _results(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@app.command("runs")
def list_runs_cmd(
    root: Path = typer.Argument(Path("runs"), help="Folder of runs (default: runs)."),
) -> None:
    """List the runs under a folder: date, dataset, arch, epochs, best metric and status
    (finished / interrupted / failed / running)."""
    from rich.markup import escape

    from ..runs.listing import list_runs

    rows = list_runs(root)
    if not rows:
        _console.out.print(f"no runs in {root}")
        return
    header = ("date", "dataset", "run", "arch", "epochs", "best", "status")
    cells = []
    for r in rows:
        epochs = f"{r['epochs']}/{r['planned']}" if r["planned"] else str(r["epochs"])
        best = f"{r['best'][0]} {r['best'][1]:.4f}" if r["best"] else "-"
        cells.append((r["date"][:16], r["dataset"], r["name"], str(r["arch"]), epochs, best, r["status"]))
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
    colors = {"finished": "green", "interrupted": "yellow", "failed": "red", "running": "cyan"}
    _console.out.print("[bold]" + "  ".join(h.ljust(w) for h, w in zip(header, widths)) + "[/]", markup=True)
    for c in cells:
        line = escape("  ".join(str(v).ljust(w) for v, w in zip(c[:-1], widths)))
        _console.out.print(f"{line}  [{colors.get(c[-1], 'white')}]{c[-1]}[/]", markup=True)

"""`visiontune report`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .._core import console as _console
from .app import app


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder made by `visiontune train` (runs/DATASET/RUN/)."),
    out: Optional[Path] = typer.Option(None, help="Where to write the page (default: RUN_DIR/report.html)."),
    k: int = typer.Option(9, help="Pictures in the top-losses and most-uncertain sections."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, mps (default: best available)."),
) -> None:
    """Write the run's report page: config, training curves, epoch table, accuracy, confusion matrix,
    most-confused pairs, top losses with Grad-CAM heatmaps and the most uncertain pictures, in one
    self-contained HTML file. It predicts the validation set again, so the run's data must be on disk."""
    from ..runs.report import report_run

    path = report_run(run_dir, out=out, k=k, device=device)
    _console.out.print(f"report: {path}")

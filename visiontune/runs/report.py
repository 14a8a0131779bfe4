"""The report of a run: `write_run_report` at the end of training, `report_run` (`visiontune report RUN`) for a
finished or interrupted run rebuilt from its folder. The page itself is rendered by interpret/report.py from
what this module reads out of the folder (settings, epoch log, lr_find.png)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..interpret.report import write_report
from .cleandir import data_issues_summary, newest_clean_dir
from .rundir import RunDir

if TYPE_CHECKING:
    from ..train.learner import Learner


def write_run_report(learn: "Learner", run: RunDir, out: str | os.PathLike | None = None, k: int = 9,
                     on_error: str = "notice") -> Path | None:
    """report.html for `learn` in its run folder, with the run's config, log and lr_find.png, and the "Data
    issues" of the newest clean folder made for the same data beside the run (runs/<dataset>/clean-*/)."""
    settings = None
    if run.config_file.is_file():
        try:
            settings = dict(run.config)
        except Exception as e:  # noqa: BLE001  (a damaged config must not cost the rest of the report)
            settings = {"config.yaml": f"could not be read: {e}"}
    history = None if learn.recorder.rows else run.history()
    image = run.lr_find_image if run.lr_find_image.is_file() else None
    clean = newest_clean_dir(run.path.parent, learn.data.path)
    issues = data_issues_summary(clean) if clean is not None else None
    return write_report(learn, Path(out) if out is not None else run.report_file, k=k, on_error=on_error,
                        settings=settings, history=history, lr_find_image=image, title=run.path.name,
                        data_issues=issues)


def report_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, k: int = 9,
               device: str | None = None) -> Path:
    """Rebuild a `visiontune train` run's learner from its folder (config.yaml, the data it names, and
    models/final.safetensors, or the newest checkpoint of an unfinished run) and write its report to
    `out` (default `run_dir/report.html`). The run's data must still be on disk."""
    from .load import load_run

    run = RunDir.of(run_dir)
    learn = load_run(run.path, device=device)
    path = Path(out) if out is not None else run.report_file
    return write_run_report(learn, run, out=path, k=k, on_error="raise") or path

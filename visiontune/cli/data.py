"""`visiontune split-valid` and `visiontune sample`: organise a data set before training (course notes, week 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .._core import console as _console
from .app import app


@app.command("split-valid")
def split_valid(
    data: Path = typer.Argument(..., help="Data folder with DATA/train/CLASS/ images."),
    n: Optional[int] = typer.Option(None, "--n", help="Move this many images (stratified by class)."),
    pct: Optional[float] = typer.Option(None, "--pct", help="Or move this fraction of the images, e.g. 0.2."),
    seed: int = typer.Option(42, help="Random seed for the sample."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Move the files (without it: a dry run that only prints the plan)."),
    undo: bool = typer.Option(False, "--undo", help="Put back every file an earlier split moved, from its journal."),
    train: str = typer.Option("train", help="Name of the training folder."),
    valid: Optional[str] = typer.Option(None, help="Name of the validation folder (default: the existing valid/, "
                                        "val/, validation/ or dev/, else valid/)."),
) -> None:
    """Move a random stratified sample of images from DATA/train/ to DATA/valid/.

    A dry run unless you pass --yes. Never overwrites a file; writes a journal in DATA so that
    `visiontune split-valid --undo DATA` puts everything back exactly.
    """
    from ..data.organise import JOURNAL, undo_split_valid
    from ..data.organise import split_valid as do_split

    if undo:
        restored = undo_split_valid(data)
        _console.out.print(f"Put back {restored} files; removed the journal {data / JOURNAL}.")
        return
    plan = do_split(data, n=n, pct=pct, seed=seed, apply=yes, train=train, valid=_valid_name(data, valid))
    _console.out.print(plan.summary())
    if yes:
        _console.out.print(f"Journal: {data / JOURNAL}. Undo with: visiontune split-valid --undo {data}")
    else:
        _console.out.print(f"Dry run: nothing was moved. Run again with --yes to move these {len(plan.moves)} files.")


@app.command()
def sample(
    data: Path = typer.Argument(..., help="Data folder with DATA/train/CLASS/ (and DATA/valid/CLASS/) images."),
    out: Path = typer.Argument(..., help="New folder for the sample (must not exist, or be empty)."),
    train: int = typer.Option(1500, help="Training images to copy (stratified by class)."),
    valid: int = typer.Option(50, help="Validation images to copy."),
    seed: int = typer.Option(42, help="Random seed for the sample."),
) -> None:
    """Copy a small random sample of DATA into OUT, mirroring its train/valid class folders, for fast experiments."""
    from ..data.organise import sample as do_sample

    _console.out.print(do_sample(data, out, train=train, valid=valid, seed=seed,
                                 valid_name=_valid_name(data, None)).summary())


def _valid_name(data: Path, given: str | None) -> str:
    """The validation folder's name: the one given, else the one DATA has (val/, ...), else valid."""
    from ..data.layout import VALID_NAMES, _pick

    return given or (_pick(data, None, VALID_NAMES, "validation", "--valid") if data.is_dir() else None) or "valid"

"""`visiontune clean`: find label errors, duplicates, leaks and odd files; review them on a local page; apply
the decisions; undo them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .._core import console as _console
from .._core.errors import ConfigError
from .app import app

PATH_HELP = ("DATA (an image folder: DATA/train/CLASS/ + DATA/valid/CLASS/, or DATA/CLASS/) to find issues in, "
             "or CLEAN_FOLDER (runs/DATASET/clean-TIME/, what an earlier `clean DATA` wrote) with --review, "
             "--apply or --undo.")


@app.command()
def clean(
    path: Path = typer.Argument(..., metavar="DATA|CLEAN_FOLDER", help=PATH_HELP),
    review: bool = typer.Option(False, "--review", help="Open the review page (after finding, or for CLEAN_FOLDER)."),
    apply: bool = typer.Option(False, "--apply", help="Carry out CLEAN_FOLDER's decisions (moves files in DATA)."),
    undo: bool = typer.Option(False, "--undo", help="Put back everything --apply moved for CLEAN_FOLDER."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --apply: print the plan, move nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --apply: create new class folders without asking."),
    train: Optional[str] = typer.Option(None, help="Training folder under DATA (default: detected, as `train` does)."),
    valid: Optional[str] = typer.Option(None, help="Validation folder under DATA (default: valid/, val/, ...)."),
    test: Optional[str] = typer.Option(None, help="Unlabelled test folder to check for duplicates and leaks "
                                       "(default: test/, test1/ or testing/)."),
    label_re: Optional[str] = typer.Option(None, help="Class = first group of this regex in each file's path."),
    labels: Optional[str] = typer.Option(None, help="Labels CSV under DATA (default: labels.csv or train.csv)."),
    valid_pct: Optional[float] = typer.Option(None, help="Fraction of train held out as valid when there is no valid/ "
                                                         "folder (default 0.2), split as `train` splits it."),
    arch: str = typer.Option("efficientnet_lite0", help="Backbone whose features are used."),
    weights: Optional[Path] = typer.Option(None, help="Pretrained weights file for the backbone."),
    size: int = typer.Option(224, help="Image size."),
    bs: int = typer.Option(64, help="Batch size of the feature pass."),
    folds: int = typer.Option(5, help="Folds of the out-of-fold predictions (each image is predicted by a head "
                                      "that did not see it)."),
    head: str = typer.Option("fastai", help="Head trained on each fold: fastai or linear."),
    seed: int = typer.Option(42, help="Random seed (valid split, folds, heads)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, mps."),
    num_workers: Optional[int] = typer.Option(None, help="Data loader worker processes (default: sized to the machine)."),
    out: Path = typer.Option(Path("runs"), help="Runs folder: the clean folder is OUT/DATASET/clean-TIME/."),
    host: str = typer.Option("127.0.0.1", help="Address of the review page. Other than 127.0.0.1 it can be "
                                               "reached from other machines (anyone with the token can decide)."),
    port: int = typer.Option(0, help="Port of the review page (0: a free one)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the review page in the default browser."),
) -> None:
    """Find label errors, duplicates, leaks and odd files in DATA, review them, fix them with undo.

    `visiontune clean DATA` writes runs/DATASET/clean-TIME/ (issues.csv, issues.json) and changes nothing
    in DATA. `--review` opens a local page to keep, delete or relabel each flagged picture (saved at once to
    journal.jsonl). `visiontune clean --apply CLEAN_FOLDER` moves the files (relabel: to the other class folder;
    delete: to CLEAN_FOLDER/trash/), `--undo CLEAN_FOLDER` puts them back."""
    from ..runs.cleandir import CleanDir

    if sum([apply, undo]) > 1 or (review and (apply or undo)):
        raise ConfigError("Choose one of --review, --apply and --undo.")
    if dry_run and not apply:
        raise ConfigError("--dry-run goes with --apply: visiontune clean --apply CLEAN_FOLDER --dry-run.")
    if apply or undo:
        _apply_or_undo(_clean_folder(path, out), undo=undo, dry_run=dry_run, yes=yes)
        return
    if CleanDir.is_clean(path):
        if not review:
            raise ConfigError(f"{path} is a clean folder: add --review to open it, --apply to carry out its "
                              f"decisions or --undo to take them back.")
        _serve(CleanDir.open(path), host, port, open_browser)
        return
    folder = _find(path, dict(train=train, valid=valid, test=test, valid_pct=valid_pct, size=size, bs=bs, seed=seed,
                              num_workers=num_workers, label_re=label_re, labels=labels), dict(folds=folds, arch=arch, weights=weights, device=device,
                                                             seed=seed, head=head), out)
    if review:
        _serve(folder, host, port, open_browser)
    else:
        _console.out.print(f"Review them: visiontune clean --review {folder.path}", markup=False)


def _clean_folder(path: Path, out: Path):
    """The clean folder `path` names; for a data folder, an error that points at its newest clean folder."""
    from ..runs.cleandir import CleanDir, newest_clean_dir

    if not CleanDir.is_clean(path) and path.is_dir():
        newest = newest_clean_dir(out / path.resolve().name, path)
        if newest is not None:
            raise ConfigError(f"{path} is a data folder; --apply and --undo take the clean folder that `visiontune clean "
                              f"{path}` wrote. The newest for it: {newest.path}")
    return CleanDir.open(path)


def _find(path: Path, layout: dict, options: dict, out: Path):
    from ..clean.find import csv_labels_of, find_issues, load_data

    if path.is_dir() and out.resolve().is_relative_to(path.resolve()):
        raise ConfigError(f"--out {out} is inside the data folder {path}: the clean folder (and the trash of deleted "
                          f"files) would become part of the data. Pass --out outside it.")
    data = load_data(path, **layout)
    for line in data.layout_lines():
        _console.out.print(line, markup=False)
    issues = find_issues(data, labels=csv_labels_of(data), **options)
    layout = {"loader": "from_path", **data.layout.settings(),
              **{k: layout[k] for k in ("valid_pct", "seed")}}
    folder = issues.save(runs=out, layout=layout)
    _console.out.print(issues.summary_text(), markup=False)
    top = issues.rows[:10]
    for r in top:
        lab = f"{r.given_label} -> {r.suggested_label}" if r.suggested_label else r.given_label
        _console.out.print(f"  {r.kind:9} {r.score:.3f}  {r.file}  {lab}  {r.reason}", markup=False)
    if len(issues) > len(top):
        _console.out.print(f"  ... and {len(issues) - len(top)} more", markup=False)
    _console.out.print(f"Wrote {folder.issues_csv} and {folder.issues_json}. Nothing in {path} was changed.", markup=False)
    return folder


def _serve(folder, host: str, port: int, open_browser: bool) -> None:
    from ..clean.server import ReviewServer

    server = ReviewServer(folder, host=host, port=port)
    if not server.loopback:
        _console.notice(f"the review page listens on {host}: other machines can reach it; the token is the only lock.")
    print(f"Review page: {server.url}", flush=True)
    _console.out.print(f"Decisions are saved to {folder.journal} as you make them. Stop with Ctrl-C; then "
                       f"`visiontune clean --apply {folder.path}` (add --dry-run to see the plan first).", markup=False)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve()
    except KeyboardInterrupt:
        _console.out.print(f"Stopped. Reopen with: visiontune clean --review {folder.path}", markup=False)


def _apply_or_undo(folder, undo: bool, dry_run: bool, yes: bool) -> None:
    from ..clean.fix import apply_decisions, apply_state, plan_apply, undo_decisions

    if undo:
        n = undo_decisions(folder)
        _console.out.print(f"Put back {n} files from {folder.path}; the data folder is as it was before --apply.", markup=False)
        return
    if dry_run:
        _console.out.print(apply_decisions(folder, dry_run=True).summary(), markup=False)
        _console.out.print("Dry run: nothing was moved.")
        return
    create = yes
    interrupted = apply_state(folder) == "applying"
    plan = plan_apply(folder)
    if interrupted:
        _console.out.print(f"An apply of {folder.path} was interrupted; finishing the moves it recorded.", markup=False)
    elif plan.new_classes and not yes:
        names = ", ".join(repr(c) for c in plan.new_classes)
        if not sys.stdin.isatty():
            raise ConfigError(f"The decisions relabel files to new class(es) {names}; applying creates their folders "
                              f"({', '.join(plan.created_dirs)}). Pass --yes to confirm.")
        create = typer.confirm(f"Create the new class folder(s) {', '.join(plan.created_dirs)} for {names}?",
                               default=False)
        if not create:
            _console.out.print("Nothing was moved.")
            return
    plan = apply_decisions(folder, create_classes=create)
    _console.out.print(plan.summary(), markup=False)
    _console.out.print(f"Undo with: visiontune clean --undo {folder.path}", markup=False)

"""`visiontune predict` and `visiontune export`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from .._core import console as _console
from .app import app

MODEL_HELP = "An exported model (model.vt), a run folder, or a weights file saved by learn.save (.safetensors)."
TABLE_ROWS_WITH_CSV = 20


@app.command()
def predict(
    model: Path = typer.Argument(..., metavar="MODEL", help=MODEL_HELP),
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Image files, folders (searched recursively), "
                                       "quoted globs like 'test/*.jpg', or a data folder (its test/ or test1/ is "
                                       "predicted)."),
    tta: bool = typer.Option(False, "--tta", help="Test-time augmentation: average with zoomed/flipped views."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write file, label, confidence, class probabilities "
                                       "and error per image, in input order."),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Show (and write) the k most probable classes."),
    submission: Optional[Path] = typer.Option(None, "--submission", help="Also write a Kaggle submission: "
                                              "id (the file name without extension) and class probabilities."),
    clip: Optional[float] = typer.Option(None, "--clip", help="Bound probabilities to [c, 1-c] in the CSV and "
                                         "submission (the log-loss trick), e.g. 0.05."),
    column: Optional[str] = typer.Option(None, "--column", help="Write only this class's probability "
                                         "(binary competitions, e.g. --column dogs)."),
    column_header: Optional[str] = typer.Option(None, "--column-header", help="Header of the --column column in "
                                                "the submission (e.g. label); default: the class name."),
    bs: int = typer.Option(64, "--bs", min=1, help="Batch size."),
    size: Optional[int] = typer.Option(None, "--size", help="Image size, only for a weights file without "
                                       "a config.yaml next to it."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 or mps (default: best available)."),
    backend: str = typer.Option("torch", "--backend", help="torch, or onnx: the model exported to ONNX (cached) "
                                "and run by onnxruntime on the CPU (faster there; same probabilities to 1e-4)."),
) -> None:
    """Predict the class of every image named by INPUT... with a trained model: prints a table, and writes
    a CSV or a Kaggle submission. Unreadable images get a row with an error; the exit status is non-zero
    only if nothing could be predicted."""
    from .._core.allocator import keep_freed_memory
    from .._core.errors import ConfigError
    from ..infer import predict_files
    from ..infer.batch import summary_line
    from ..infer.submission import clip_bounds
    from ..runs.load import learner_from_checkpoint

    clip_bounds(clip)
    keep_freed_memory()  # freed activations stay in the process: ~1.7x faster batches on CPU
    learn = learner_from_checkpoint(model, size=size, device=device)
    if column is not None and column not in learn.data.classes:
        raise ConfigError(f"--column {column!r} is not a class of {model}; the classes are: "
                          f"{', '.join(learn.data.classes)}.")
    t0 = time.perf_counter()
    preds = predict_files(learn, _test_sets(inputs), tta=tta, bs=bs, backend=backend)
    seconds = time.perf_counter() - t0
    if csv is not None:
        preds.to_csv(csv, top_k=top_k, clip=clip, column=column)
    if submission is not None and preds.n_ok:
        preds.to_submission(submission, clip=clip, column=column, column_header=column_header)
    _print_table(preds, top_k, limit=TABLE_ROWS_WITH_CSV if csv is not None else None)
    _console.err.print(summary_line(preds, seconds) + (f"; wrote {csv}" if csv else "")
                       + (f"; wrote {submission}" if submission and preds.n_ok else ""), highlight=False)
    if preds.n_ok == 0:
        _console.err.print("[bold red]error:[/] no image could be predicted.", markup=True)
        raise typer.Exit(1)


def _test_sets(inputs: list[str]) -> list[str]:
    """A data folder (with train/ and a test/, test1/ or testing/ folder) stands for its test set."""
    from ..data.layout import find_test_folder

    out = []
    for item in inputs:
        p = Path(item).expanduser()
        test = find_test_folder(p) if p.is_dir() and (p / "train").is_dir() else None
        if test is not None:
            _console.notice(f"{p} is a data folder: predicting its test set {test}")
        out.append(str(test) if test is not None else item)
    return out


def _print_table(preds, top_k: int, limit: int | None) -> None:
    """Aligned columns, one line per image (plain text: rich tables take seconds per 10,000 rows, and piped
    output stays greppable)."""
    rows = preds.rows(top_k)
    shown = rows if limit is None or len(rows) <= limit else rows[:limit]
    cols = ["file", "label", "confidence"]
    cells = [[r["file"], r["label"], r["confidence"]] for r in shown]
    if top_k > 1:
        cols.append(f"next {top_k - 1}")
        for c, r in zip(cells, shown):
            c.append(", ".join(f"{r[f'label_{j}']} {float(r[f'confidence_{j}']):.3f}"
                               for j in range(2, top_k + 1) if r[f"label_{j}"]))
    if any(r["error"] for r in rows):
        cols.append("error")
        for c, r in zip(cells, shown):
            c.append(r["error"])
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(cols)]

    def line(values: list[str]) -> str:
        out = [v.rjust(w) if h == "confidence" else v.ljust(w) for v, w, h in zip(values, widths, cols)]
        return "  ".join(out).rstrip()

    try:
        _console.out.print(line(cols), style="bold", markup=False, highlight=False)
        _console.out.file.write("".join(line(c) + "\n" for c in cells))
        _console.out.file.flush()
    except BrokenPipeError:  # `visiontune predict ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if len(shown) < len(rows):
        _console.out.print(f"... and {len(rows) - len(shown)} more rows in the CSV", highlight=False)


@app.command()
def export(
    run: Path = typer.Argument(..., metavar="RUN_OR_CHECKPOINT", help="A run folder (runs/DATASET/RUN/) or a "
                               "weights file saved by learn.save (.safetensors)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The model file to write (default: model.vt in the run "
                                       "folder, or next to the weights file)."),
    onnx: bool = typer.Option(False, "--onnx", help="Also write an ONNX model (uint8 images in, probabilities out) "
                              "next to it."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
    size: Optional[int] = typer.Option(None, "--size", help="Image size, only for a weights file without a "
                                       "config.yaml next to it."),
) -> None:
    """Turn a trained run into ONE safe model file (model.vt) that `visiontune predict` and
    `vt.load_learner` open without the training data and without pickle; --onnx adds model.onnx."""
    from ..runs.load import learner_from_checkpoint

    learn = learner_from_checkpoint(run, size=size, device="cpu")
    if out is None:
        out = run / "model.vt" if run.is_dir() else run.with_suffix(".vt")
    written = [learn.export(out)]
    if onnx:
        written.append(learn.export_onnx(out.with_suffix(".onnx"), opset=opset))
    for p in written:
        _console.out.print(f"wrote {p} ({p.stat().st_size / 1e6:.1f} MB)")

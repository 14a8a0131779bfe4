"""Predict many image files at once (what `visiontune predict` runs): one row per input in a stable order,
unreadable inputs as rows with an error, written as a table, a CSV or a Kaggle submission."""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import torch

from .._core import console as _console
from .._core.errors import ConfigError, bad_value
from .._core.io import atomic_write
from .data import files_dataset, image_files
from .predict import get_preds
from .submission import clip_bounds, write_submission
from .tta import tta as run_tta

if TYPE_CHECKING:
    from ..train.learner import Learner

FIXED_COLUMNS = ("file", "label", "confidence", "error")


@dataclass
class FilePredictions:
    """Predictions for a list of files: `probs` has one row per file (NaN where `errors[i]` says why not)."""

    files: list[Path]
    probs: torch.Tensor
    errors: list[str | None]
    classes: list[str]
    is_multi_label: bool = False
    thresh: float | list = 0.5
    decision: dict | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def n_ok(self) -> int:
        return sum(e is None for e in self.errors)

    def labels(self) -> list[str | list[str] | None]:
        """Predicted class per file (multi-label: the list above the threshold); None where it failed."""
        from ..train.metrics import decide

        chosen = decide(self.probs.nan_to_num(-1.0), self.classes, self.is_multi_label, self.thresh, self.decision)
        if self.is_multi_label:
            picked = [[c for c, on in zip(self.classes, row) if on] for row in chosen.tolist()]
        else:
            picked = [self.classes[i] for i in chosen.tolist()]
        return [None if e is not None else p for p, e in zip(picked, self.errors)]

    def top_k(self, k: int = 1) -> list[list[tuple[str, float]]]:
        """The k most probable (class, probability) pairs per file; [] where it failed."""
        k = max(1, min(k, len(self.classes)))
        vals, idx = self.probs.nan_to_num(-1.0).topk(k, dim=1)
        return [[] if e is not None else [(self.classes[i], float(v)) for v, i in zip(vr.tolist(), ir.tolist())]
                for vr, ir, e in zip(vals, idx, self.errors)]

    def rows(self, top_k: int = 1) -> list[dict]:
        """One dict per file: file, label, confidence, label_2/confidence_2 ... label_k/confidence_k, error."""
        rows = []
        for f, label, tops, err in zip(self.files, self.labels(), self.top_k(top_k), self.errors):
            r: dict = {"file": str(f)}
            r["label"] = ";".join(label) if isinstance(label, list) else (label or "")
            r["confidence"] = f"{tops[0][1]:.4f}" if tops else ""
            for j in range(2, top_k + 1):
                r[f"label_{j}"] = tops[j - 1][0] if len(tops) >= j else ""
                r[f"confidence_{j}"] = f"{tops[j - 1][1]:.4f}" if len(tops) >= j else ""
            r["error"] = err or ""
            rows.append(r)
        return rows

    def to_csv(self, path: str | os.PathLike, top_k: int = 1, clip=None, column: str | None = None) -> Path:
        """file, label, confidence (+ top-k), one probability column per class (or just `column`), clipped to
        `clip`, and error; one row per file in input order. Class columns are named after the classes,
        prefixed `prob_` when a class name would clash with another column."""
        names = self._prob_columns(column)
        clash = any(n in FIXED_COLUMNS or n.startswith(("label_", "confidence_")) for n in names)
        headers = [f"prob_{n}" if clash else n for n in names]
        idx = [self.classes.index(n) for n in names]
        p = self.probs[:, idx]
        bounds = clip_bounds(clip)
        if bounds is not None:
            p = p.clamp(*bounds)
        rows = self.rows(top_k)

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                fixed = [k for k in rows[0] if k != "error"] if rows else list(FIXED_COLUMNS[:3])
                w = csv.writer(f)
                w.writerow([*fixed, *headers, "error"])
                for r, pr, err in zip(rows, p.tolist(), self.errors):
                    probs = ["" if err is not None else f"{v:.6g}" for v in pr]
                    w.writerow([*(r[k] for k in fixed), *probs, r["error"]])

        return atomic_write(Path(path), write)

    def to_submission(self, path: str | os.PathLike, clip=None, column: str | None = None,
                      column_header: str | None = None, ids: str = "stem") -> Path:
        """A Kaggle submission (`write_submission`) of the files that could be predicted, with ids taken from
        the file names (`ids='stem'`: 'test/1234.jpg' -> 1234; 'name': '1234.jpg'; 'path': the path)."""
        if ids not in ("stem", "name", "path"):
            raise bad_value("ids", ids, "'stem', 'name' or 'path'")
        keep = [i for i, e in enumerate(self.errors) if e is None]
        if len(keep) < len(self):
            _console.notice(f"{len(self) - len(keep)} images that could not be read are not in {path}.")
        pick = {"stem": lambda f: f.stem, "name": lambda f: f.name, "path": str}[ids]
        return write_submission(self.probs[keep], [pick(self.files[i]) for i in keep], path, classes=self.classes,
                                clip=clip, column=column, column_header=column_header)

    def _prob_columns(self, column: str | None) -> list[str]:
        if column is None:
            return list(self.classes)
        if column not in self.classes:
            raise ConfigError(f"column {column!r} is not a class; the classes are: {', '.join(self.classes)}.")
        return [column]


def predict_files(learn: "Learner", inputs: Iterable[str | os.PathLike], tta: bool = False, bs: int | None = None,
                  n: int = 4, beta: float = 0.25, scale: float = 1.1, backend: str = "torch") -> FilePredictions:
    """Predict every image that `inputs` (files, folders searched recursively, globs) names, batched.

    Never raises for a bad input: inputs that name nothing and files that cannot be decoded get a row with
    an error instead, so one corrupt file does not cost the other 9,999 predictions. `backend="onnx"` runs
    the model exported to ONNX in onnxruntime on the CPU (the same probabilities to < 1e-4)."""
    from .onnx_runtime import check_backend, onnx_preds

    if check_backend(backend) == "onnx" and tta:
        raise ConfigError("--tta runs on the torch backend only: drop --backend onnx, or --tta.")
    entries = image_files(inputs)
    if not entries:
        raise ConfigError("No inputs: pass image files, folders of images, or a glob like 'test/*.jpg'.")
    errors: list[str | None] = [e.error for e in entries]
    probs = torch.full((len(entries), learn.data.c), float("nan"))
    todo = [i for i, e in enumerate(entries) if e.error is None]
    if todo:
        dset = files_dataset(learn.data, [entries[i].path for i in todo])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undecodable files are reported in their rows instead
            if backend == "onnx":
                p, ix = onnx_preds(learn, dset, bs=bs)
            elif tta:
                p, _, ix = run_tta(learn, dset, n=n, beta=beta, scale=scale, bs=bs, with_index=True,
                                   report_skipped=False)
            else:
                p, _, ix = get_preds(learn, dset, with_index=True, bs=bs, report_skipped=False)
        rows = torch.as_tensor(todo)[ix]
        probs[rows] = p.float()
        position = {str(f): j for j, f in enumerate(dset.files)}
        for path, reason in dset.bad.paths.items():
            errors[todo[position[path]]] = _short_reason(reason, path)
    return FilePredictions([e.path for e in entries], probs, errors, list(learn.data.classes),
                           bool(getattr(learn.data, "is_multi_label", False)), learn.thresh,
                           getattr(learn, "decision", None))


def _short_reason(reason: str, path: str) -> str:
    """'path: cannot decode image (...)' -> 'cannot decode image (...)': the row already names the file."""
    return reason[len(path) + 2:] if reason.startswith(f"{path}: ") else reason


def summary_line(preds: FilePredictions, seconds: float) -> str:
    n, ok = len(preds), preds.n_ok
    speed = f" ({ok / seconds:,.0f} images/s)" if seconds > 0 and ok else ""
    failed = f"; {n - ok} could not be read (see the error column)" if ok < n else ""
    return f"predicted {ok} of {n} images in {seconds:.2f}s{speed}{failed}"


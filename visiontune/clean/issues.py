"""The issues table: one row per (kind, file), ranked, with what the review page and the run report show, and
how it is written into a clean folder (issues.csv, issues.json, the Grad-CAM model)."""

from __future__ import annotations

import csv
import html
import io
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .._core.io import write_text
from .._core.version import __version__
from ..runs.cleandir import CleanDir

if TYPE_CHECKING:
    from torch import nn

    from ..data import ImageData
    from ..train.learner import Learner

KINDS = ("label", "leak", "duplicate", "odd")
COLUMNS = ("kind", "file", "given_label", "suggested_label", "score", "group", "split", "suggested_prob",
           "self_confidence", "reason")
FORMAT = 1


@dataclass
class Issue:
    """One flagged file. `score` in [0, 1], higher = more surely a problem: 1 - self-confidence for label
    issues, the similarity for copies, a severity for odd files. `group` numbers a set of copies."""

    kind: str  # label | duplicate | leak | odd
    file: str  # relative to the data folder, with forward slashes
    given_label: str
    suggested_label: str
    score: float
    group: int | None = None
    split: str = ""
    suggested_prob: float | None = None
    self_confidence: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("score", "suggested_prob", "self_confidence"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 6)
        return d


class Issues:
    """What `find_issues` found: `rows` (ranked Issue objects), `summary` (class balance, counts, out-of-fold
    accuracy, timings) and the out-of-fold probabilities (`probs`, rows in `oof_files` order).

    `issues.label`, `.leaks`, `.duplicates`, `.odd` filter by kind; `issues.save()` writes a clean folder;
    `visiontune.review(issues)` opens the review page."""

    def __init__(self, rows: list[Issue], data: "ImageData", summary: dict, files: dict, learn: "Learner | None" = None,
                 head: "nn.Module | None" = None, own_learner: bool = True, oof=None, table_files=None):
        self.rows = list(rows)
        self.data, self.learn, self.summary, self.files = data, learn, summary, files
        self.head, self.own_learner = head, own_learner
        self.folder: CleanDir | None = None
        self.labels_csv = None  # a CsvLabels when the labels live in a CSV (find_issues(labels=...))
        if oof is not None:
            rows_idx, probs, fid = oof
            self.probs, self.folds = probs, fid
            self.oof_files = [table_files[i] for i in rows_idx]
        else:
            self.probs, self.folds, self.oof_files = None, None, []

    # ------------------------------------------------------------------ the table
    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Issue]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> Issue:
        return self.rows[i]

    def of(self, kind: str) -> list[Issue]:
        return [r for r in self.rows if r.kind == kind]

    label = property(lambda self: self.of("label"))
    leaks = property(lambda self: self.of("leak"))
    duplicates = property(lambda self: self.of("duplicate"))
    odd = property(lambda self: self.of("odd"))

    @property
    def balance(self) -> dict:
        return self.summary["balance"]

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in self.rows:
            d = r.to_dict()
            w.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
        return buf.getvalue()

    def record(self, layout: dict | None = None) -> dict[str, Any]:
        """issues.json: the rows with everything apply and the review need about the data."""
        data = self.data
        return {
            "format": FORMAT, "visiontune": __version__, "created": datetime.now().isoformat(timespec="seconds"),
            "data": str(Path(data.path).resolve()), "data_abspath": os.path.abspath(data.path), "dataset": data.name,
            "layout": {**(layout or {"loader": "ImageData"}),
                       **({"labels_csv": self.labels_csv.to_dict()} if self.labels_csv is not None else {})},
            "classes": list(data.classes), "multi_label": bool(data.is_multi_label), "size": data.size,
            "cache_dir": str(data.cache_dir), "columns": list(COLUMNS), "summary": _jsonable(self.summary),
            "issues": [r.to_dict() for r in self.rows], "files": self.files,
        }

    # ------------------------------------------------------------------ the clean folder
    def save(self, folder: str | os.PathLike | CleanDir | None = None, runs: str | os.PathLike = "runs",
             layout: dict | None = None) -> CleanDir:
        """Write issues.csv, issues.json and the Grad-CAM model into `folder` (default: a new
        `runs/<dataset>/clean-<time>/`) -> the CleanDir. Nothing is written into the data folder."""
        if folder is None:
            clean = CleanDir.create(runs, self.data.name)
        else:
            clean = folder if isinstance(folder, CleanDir) else CleanDir(folder)
            clean.path.mkdir(parents=True, exist_ok=True)
        write_text(clean.issues_csv, self.to_csv())
        self._save_model(clean)
        write_text(clean.issues_json, json.dumps(self.record(layout), indent=1))  # last: marks the folder complete
        self.folder = clean
        return clean

    def _save_model(self, clean: CleanDir) -> None:
        """model.json + weights: the head fitted here on the stock body, or the whole model passed in."""
        from safetensors.torch import save_file

        learn = self.learn
        if learn is None:
            return
        model = learn.model
        pre = model.preprocess
        spec = {"arch": model.config.arch, "n_out": model.config.n_out, "head": model.config.to_dict()["head"],
                "preprocess": pre.to_dict() if pre is not None else None, "size": self.data.size,
                "presize": self.data.presize, "classes": list(self.data.classes),
                "multi_label": bool(self.data.is_multi_label)}
        if self.own_learner and self.head is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(state, str(clean.head_weights))
            spec["weights"] = "head"
            spec["body_weights"] = self.summary.get("settings", {}).get("weights")
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(clean.model_weights))
            spec["weights"] = "model"
        write_text(clean.model_json, json.dumps(spec, indent=1))

    # ------------------------------------------------------------------ showing it
    def summary_text(self) -> str:
        s = self.summary
        counts = s.get("counts", {})
        bal = s["balance"]
        parts = [f"{counts.get(k, 0)} {k}" for k in KINDS]
        lines = [f"{self.data.path}: " + ", ".join(parts) + " issues"]
        lab = s.get("label", {})
        if "oof_accuracy" in lab:
            lines.append(f"out-of-fold accuracy {lab['oof_accuracy']:.3f} ({s['folds']} folds); estimated label "
                         f"noise {lab['noise_rate']:.1%}")
        lines.append("images per class (train+valid): " + ", ".join(f"{c} {n}" for c, n in bal["total"].items())
                     + f"; imbalance {bal['imbalance']:.2f}x ({bal['largest']} / {bal['smallest']})")
        if s.get("undecodable"):
            lines.append(f"{s['undecodable']} files cannot be decoded (listed as odd)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Issues({self.summary_text().splitlines()[0]})"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS[:6])
        body = []
        for r in self.rows[:30]:
            d = r.to_dict()
            body.append("<tr>" + "".join(f"<td>{html.escape('' if d[c] is None else str(d[c]))}</td>"
                                         for c in COLUMNS[:6]) + "</tr>")
        more = f"<p>... {len(self.rows) - 30} more rows</p>" if len(self.rows) > 30 else ""
        text = html.escape(self.summary_text()).replace("\n", "<br>")
        return f"<p>{text}</p><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if np.isfinite(v) else None
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x

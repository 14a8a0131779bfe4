"""CleanDir: the one owner of a clean folder's layout, beside the run folders of the same data set.

    runs/<dataset>/clean-<YYYYMMDD-HHMMSS>/
      issues.csv      the ranked table: kind, file (relative to DATA), given_label, suggested_label, score, group, ...
      issues.json     the same rows, the class balance, the data's path and layout, what each listed file was
      model.json      how to rebuild the model that Grad-CAM shows (+ head.safetensors or model.safetensors)
      journal.jsonl   one line per decision made in the review page (keep / delete / relabel), appended at once
      applied.json    what `visiontune clean --apply` moved (written before the first move), read by --undo
      trash/          deleted files, at their path relative to DATA

It lives on the runs floor because the run report reads it (the "Data issues" section), and runs may not import
the clean floor; `visiontune.clean` builds on it.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from .._core.errors import DataError

PREFIX = "clean-"


class CleanDir:
    """A clean folder: where each of its files lives, and reading its issues."""

    ISSUES_CSV, ISSUES_JSON, JOURNAL, APPLIED, TRASH = "issues.csv", "issues.json", "journal.jsonl", "applied.json", "trash"
    MODEL_JSON, HEAD, FULL_MODEL = "model.json", "head.safetensors", "model.safetensors"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CleanDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    issues_csv = property(lambda self: self.path / self.ISSUES_CSV)
    issues_json = property(lambda self: self.path / self.ISSUES_JSON)
    journal = property(lambda self: self.path / self.JOURNAL)
    applied = property(lambda self: self.path / self.APPLIED)
    trash = property(lambda self: self.path / self.TRASH)
    model_json = property(lambda self: self.path / self.MODEL_JSON)
    head_weights = property(lambda self: self.path / self.HEAD)
    model_weights = property(lambda self: self.path / self.FULL_MODEL)

    @classmethod
    def is_clean(cls, path: str | os.PathLike) -> bool:
        return (Path(path) / cls.ISSUES_JSON).is_file()

    @classmethod
    def create(cls, runs: str | os.PathLike, dataset: str, when: datetime | None = None) -> "CleanDir":
        """A new, empty `runs/<dataset>/clean-<time>` (with `-2`, `-3`, ... when that name is taken)."""
        base = Path(runs).expanduser() / (dataset or "data")
        base.mkdir(parents=True, exist_ok=True)
        stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
        for i in range(1, 1000):
            path = base / (f"{PREFIX}{stamp}" if i == 1 else f"{PREFIX}{stamp}-{i}")
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise DataError(f"Too many clean folders named {PREFIX}{stamp} in {base}.")

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CleanDir":
        """The clean folder at `path`; a clear error when it is not one."""
        folder = cls(Path(path).expanduser())
        if not folder.issues_json.is_file():
            hint = ""
            if folder.path.is_dir():
                newest = sorted(p.name for p in folder.path.glob(f"{PREFIX}*") if cls.is_clean(p))
                if newest:
                    hint = f" It holds clean folders: did you mean {folder.path / newest[-1]}?"
            raise DataError(f"{folder.path} is not a clean folder (no {cls.ISSUES_JSON}): pass the folder that "
                            f"`visiontune clean DATA` wrote, runs/<dataset>/{PREFIX}<time>/.{hint}")
        return folder

    def read(self) -> dict[str, Any]:
        """issues.json as a dict; a clear error when it is damaged."""
        try:
            record = json.loads(self.issues_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{self.issues_json} cannot be read ({e}). Run `visiontune clean DATA` again.") from None
        if not isinstance(record, dict) or not isinstance(record.get("issues"), list):
            raise DataError(f"{self.issues_json} is not an issues file written by visiontune clean.")
        return record

    @property
    def data_path(self) -> Path:
        return Path(self.read()["data"])


def newest_clean_dir(runs_root: str | os.PathLike, data_path: str | os.PathLike) -> CleanDir | None:
    """The newest clean folder under `runs_root` (runs/<dataset>/) made for `data_path`, or None."""
    root = Path(runs_root)
    if not root.is_dir():
        return None
    want = str(Path(data_path).resolve())
    for folder in sorted((p for p in root.glob(f"{PREFIX}*") if CleanDir.is_clean(p)), key=lambda p: p.name,
                         reverse=True):
        try:
            with open(folder / CleanDir.ISSUES_JSON, encoding="utf-8") as f:
                if json.load(f).get("data") == want:
                    return CleanDir(folder)
        except (OSError, ValueError, AttributeError):
            continue
    return None


def data_issues_summary(clean: CleanDir, top: int = 10) -> dict[str, Any] | None:
    """What the run report's "Data issues" section shows: the top label issues and the leaks of a clean folder,
    its class balance and whether its decisions were applied. Plain data (strings and numbers), to be escaped
    by whoever renders it; None when the folder cannot be read."""
    try:
        record = clean.read()
    except DataError:
        return None
    rows = record["issues"]
    labels = [r for r in rows if r.get("kind") == "label"][:top]
    leaks = [r for r in rows if r.get("kind") == "leak"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("kind", "?")] = counts.get(r.get("kind", "?"), 0) + 1
    applied = None
    if clean.applied.is_file():
        try:
            applied = json.loads(clean.applied.read_text()).get("state")
        except (OSError, ValueError):
            applied = "unreadable"
    return {"folder": str(clean.path), "created": record.get("created", ""), "counts": counts,
            "label": [[r.get("file", ""), r.get("given_label", ""), r.get("suggested_label", ""),
                       float(r.get("suggested_prob") or 0.0), float(r.get("score") or 0.0)] for r in labels],
            "leak": [[str(r.get("group", "")), r.get("file", ""), r.get("split", ""), float(r.get("score") or 0.0)]
                     for r in leaks[: 3 * top]],
            "n_leak_groups": len({r.get("group") for r in leaks}),
            "balance": record.get("summary", {}).get("balance", {}), "applied": applied}

"""Label sources: class folders, a regular expression over file names, a CSV file or a DataFrame.

Each source returns files with raw labels (a class name per file, or a list of names per file for
multi-label data); `encode` turns them into targets and `split` into train and valid. Validation
happens here, at the door, with messages that name the offending files and the way out.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._core.errors import ConfigError, DataError, bad_value
from .sources import read_class_folders, scan_images, stratified_split

DEFAULT_PAT = r"/([^/]+)_\d+\.jpg$"
ON_MISSING = ("error", "skip")


@dataclass
class Labelled:
    """Files and their targets (int64 class indices, or float32 multi-hot rows), before the split."""

    files: list[Path]
    targets: np.ndarray
    classes: list[str]
    ignored: int = 0
    notes: list[str] = field(default_factory=list)
    is_valid: np.ndarray | None = None  # rows the source marks as validation (a valid_col, a valid/ folder)


def _examples(items: Sequence[Any], k: int = 5) -> str:
    shown = ", ".join(str(x) for x in items[:k])
    return shown + (f" (and {len(items) - k} more)" if len(items) > k else "")


def sort_classes(names) -> list[str]:
    """Class names in sorted order; all-integer names sort numerically ('2' before '10')."""
    names = set(names)
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def encode(labels: Sequence, multi: bool, classes: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class names -> (int64 indices, classes); lists of names (multi) -> (float32 multi-hot rows, classes)."""
    if multi:
        classes = list(classes) if classes is not None else sort_classes(t for row in labels for t in row)
        index = {c: i for i, c in enumerate(classes)}
        y = np.zeros((len(labels), len(classes)), dtype=np.float32)
        for r, row in enumerate(labels):
            for t in row:
                y[r, index[t]] = 1.0
        return y, classes
    classes = list(classes) if classes is not None else sort_classes(labels)
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[x] for x in labels], dtype=np.int64), classes


def check_classes(lab: Labelled, source: str) -> None:
    """A classifier needs two classes; multi-label data needs at least one."""
    multi = lab.targets.ndim == 2
    if not lab.files:
        raise DataError(f"{source} gives no images.")
    if not multi and len(lab.classes) < 2:
        raise DataError(f"{source} has a single class ({', '.join(lab.classes)}); a classifier needs at least two.")
    if multi and not lab.classes:
        raise DataError(f"{source} has no labels at all: every row's label column is empty.")


def split(lab: Labelled, valid_pct: float | None, seed: int) -> tuple[tuple[list[Path], np.ndarray], tuple[list[Path], np.ndarray], str | None]:
    """-> ((train files, targets), (valid files, targets), note). Uses the source's valid marks when it has
    them and `valid_pct` is None; otherwise a per-class random split of `valid_pct` (default 0.2) by `seed`."""
    if lab.is_valid is not None and valid_pct is None:
        va_idx = np.flatnonzero(lab.is_valid)
        tr_idx = np.flatnonzero(~lab.is_valid)
        if len(tr_idx) == 0 or len(va_idx) == 0:
            which = "training" if len(tr_idx) == 0 else "validation"
            raise DataError(f"The valid marks leave no {which} images; pass valid_pct= to split randomly instead.")
        note = None
    else:
        pct = 0.2 if valid_pct is None else float(valid_pct)
        tr_idx, va_idx = stratified_split(lab.targets, pct, seed)
        kind = "per class" if lab.targets.ndim == 1 else "at random"
        note = f"valid = {pct:.0%} of the training images {kind} (seed {seed})"
    pick = lambda idx: ([lab.files[i] for i in idx], lab.targets[idx])  # noqa: E731
    return pick(tr_idx), pick(va_idx), note


# ---------------------------------------------------------------------------------------- folders


def folder_labels(root: Path, train: str = "train", valid: str = "valid", valid_pct: float | None = None,
                  exclude: tuple[str, ...] = ()) -> Labelled:
    """`root/train/<class>/*` (+ `root/valid/<class>/*`, marked valid), or `root/<class>/*` without a train level."""
    notes: list[str] = []
    train_dir = root / train
    if not train_dir.is_dir():
        if (root / valid).is_dir():
            raise DataError(f"{root} has {valid}/ but no {train}/ folder. Expected {root}/{train}/<class>/*.jpg.")
        train_dir = root
        notes.append(f"no {train}/ folder: using the class folders of {root} directly")
    tr = read_class_folders(train_dir, exclude=exclude if train_dir == root else ())
    files, ignored, nested = list(tr.files), tr.ignored, tr.nested
    labels = [tr.classes[j] for j in tr.labels]
    is_valid = [False] * len(files)
    valid_dir = root / valid
    if valid_pct is None and valid_dir.is_dir() and train_dir != root:
        va = read_class_folders(valid_dir, min_classes=1)
        unknown = sorted(set(va.classes) - set(tr.classes))
        if unknown:
            raise DataError(
                f"{valid_dir} has class folders that {train_dir} lacks: {', '.join(unknown[:5])}. "
                f"Every valid class needs training images."
            )
        files += va.files
        labels += [va.classes[j] for j in va.labels]
        is_valid += [True] * len(va.files)
        ignored, nested = ignored + va.ignored, nested + va.nested
    if nested:
        notes.append(f"{nested} images in sub-folders of class folders were not used (one level of class folders is read)")
    y, classes = encode(labels, multi=False, classes=tr.classes)
    mark = np.asarray(is_valid, dtype=bool) if any(is_valid) else None
    return Labelled(files, y, classes, ignored=ignored, notes=notes, is_valid=mark)


# ---------------------------------------------------------------------------------------- name_re


def _compile(pat: str, what: str = "pat", error: type[Exception] = ConfigError, example: str = DEFAULT_PAT
             ) -> re.Pattern:
    """`pat` compiled, with one group (the label); `what` names the argument or flag in the message."""
    try:
        rx = re.compile(pat)
    except re.error as e:
        raise error(f"{what} {pat!r} is not a valid regular expression: {e}.") from None
    if rx.groups < 1:
        raise error(f"{what} {pat!r} has no group: put the label part in parentheses, e.g. {example!r}.")
    return rx


def resolve_fnames(root: Path, fnames, exclude: Path | None = None) -> tuple[list[Path], int]:
    """`fnames` (relative to root, or absolute) -> existing paths; None -> every image under root but `exclude`."""
    if fnames is None:
        scan = scan_images(root)
        files = [f for f in scan.files if exclude is None or not f.is_relative_to(exclude)]
        if not files:
            raise DataError(f"{root} has no images (.jpg, .png, .webp, ...) in it or its sub-folders.")
        return files, scan.ignored
    files = [Path(f) if Path(f).is_absolute() else root / f for f in fnames]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of the {len(files)} fnames do not exist: {_examples(missing)}.")
    if not files:
        raise DataError("fnames is empty: pass the image files to label, or fnames=None for every image under path.")
    return files, 0


def name_re_labels(root: Path, fnames, pat: str, exclude: Path | None = None) -> Labelled:
    """Label = first group of `pat` searched in each file's path (with forward slashes), fastai's from_name_re."""
    rx = _compile(pat)
    files, ignored = resolve_fnames(root, fnames, exclude)
    labels, unmatched = [], []
    for f in files:
        m = rx.search(f.as_posix())
        if m is None or not m.group(1):
            unmatched.append(f.name)
        else:
            labels.append(m.group(1))
    if unmatched:
        raise DataError(
            f"{len(unmatched)} of {len(files)} file names do not match pat {pat!r} (the first group is the label), "
            f"e.g.: {_examples(unmatched)}. Fix the pattern, or pass fnames= without these files."
        )
    y, classes = encode(labels, multi=False)
    return Labelled(files, y, classes, ignored=ignored)


# ---------------------------------------------------------------------------------------- CSV / DataFrame


@dataclass
class Table:
    """Columns of strings read from a CSV file or a DataFrame; `source` names it in messages."""

    names: list[str]
    columns: list[list[str]]
    source: str
    first_line: int = 2  # file line of row 0, for messages (1 when there is no header)

    def column(self, col: int | str, what: str) -> list[str]:
        if isinstance(col, (int, np.integer)) and not isinstance(col, bool):
            if not -len(self.columns) <= col < len(self.columns):
                raise ConfigError(f"{what}={col} but {self.source} has {len(self.columns)} columns ({', '.join(self.names)}).")
            return self.columns[col]
        if col not in self.names:
            raise ConfigError(f"{what}={col!r} is not a column of {self.source}. Columns: {', '.join(self.names)}.")
        return self.columns[self.names.index(col)]

    def name_of(self, col: int | str) -> str:
        return self.names[col] if isinstance(col, (int, np.integer)) else str(col)


def read_csv(path: Path, header: bool = True, delimiter: str = ",") -> Table:
    """A CSV file -> Table (the csv module: pandas is not needed to read labels)."""
    if not path.is_file():
        raise DataError(f"Label file {path} does not exist. Pass csv_labels= relative to the data folder, or a full path.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a readable CSV file ({e}).") from e
    if not rows:
        raise DataError(f"{path} is empty.")
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    names = [c.strip() for c in rows[0]] if header else [str(i) for i in range(width)]
    body = rows[1:] if header else rows
    return Table(names, [[r[j].strip() for r in body] for j in range(width)], str(path), 2 if header else 1)


def frame_table(df) -> Table:
    """A pandas DataFrame -> Table of strings (missing values become '')."""
    names = [str(c) for c in df.columns]
    columns = [["" if _isna(v) else str(v).strip() for v in df[c].tolist()] for c in df.columns]
    return Table(names, columns, "the DataFrame", first_line=0)


def _isna(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f", ""}


def _flags(values: list[str], what: str, table: Table) -> np.ndarray:
    bad = [v for v in values if v.lower() not in _TRUE | _FALSE]
    if bad:
        raise DataError(f"{what} in {table.source} must hold 0/1 or true/false, got {_examples(sorted(set(bad)))}.")
    return np.asarray([v.lower() in _TRUE for v in values], dtype=bool)


def table_labels(
    table: Table,
    folder_dir: Path,
    fn_col: int | str = 0,
    label_col: int | str | Sequence[int | str] = 1,
    suffix: str = "",
    label_delim: str | None = None,
    on_missing: str = "error",
    valid_col: int | str | None = None,
) -> Labelled:
    """Rows of (file name, label) -> Labelled. `label_delim` splits multi-label cells ('haze primary');
    a list of label columns reads one-hot columns (their names are the classes)."""
    if on_missing not in ON_MISSING:
        raise bad_value("on_missing", on_missing, "'error' or 'skip'")
    names = table.column(fn_col, "fn_col")
    rows = range(len(names))
    line = lambda r: r + table.first_line  # noqa: E731
    where = "line" if table.first_line else "row"
    one_hot = isinstance(label_col, (list, tuple))
    if one_hot:
        classes = [table.name_of(c) for c in label_col]
        flags = [_flags(table.column(c, "label_col"), f"label column {table.name_of(c)!r}", table) for c in label_col]
        labels: list = [[c for c, f in zip(classes, flags) if f[r]] for r in rows]
    else:
        cells = table.column(label_col, "label_col")
        if label_delim is not None:
            labels = [[t for t in (x.strip() for x in cell.split(label_delim)) if t] for cell in cells]
        else:
            empty = [f"{where} {line(r)} ({names[r]})" for r in rows if not cells[r]]
            if empty:
                raise DataError(f"{len(empty)} rows of {table.source} have an empty label: {_examples(empty)}. "
                                f"Fill them in or remove those rows.")
            labels = list(cells)
    blank = [f"{where} {line(r)}" for r in rows if not names[r]]
    if blank:
        raise DataError(f"{len(blank)} rows of {table.source} have no file name: {_examples(blank)}.")
    dups = sorted(n for n, k in Counter(names).items() if k > 1)
    if dups:
        raise DataError(f"{table.source} names {len(dups)} files more than once, e.g. {_examples(dups)}. "
                        f"Give each image one row (multi-label: one row with labels separated by label_delim).")
    files = [folder_dir / f"{n}{suffix}" for n in names]
    missing = [r for r in rows if not files[r].is_file()]
    notes: list[str] = []
    keep = np.ones(len(files), dtype=bool)
    if missing:
        if on_missing == "error":
            raise DataError(
                f"{len(missing)} of {len(files)} rows of {table.source} name files that do not exist, e.g. "
                f"{_examples([files[r] for r in missing])}. Check folder= and suffix= (suffix='.jpg' appends an "
                f"extension), or pass on_missing='skip' to leave those rows out."
            )
        keep[missing] = False
        shown = ", ".join(files[r].name for r in missing[:10]) + (" ..." if len(missing) > 10 else "")
        notes.append(f"skipped {len(missing)} rows of {table.source} whose files do not exist: {shown}")
    is_valid = _flags(table.column(valid_col, "valid_col"), "valid_col", table) if valid_col is not None else None
    kept = np.flatnonzero(keep)
    multi = one_hot or label_delim is not None
    y, classes_out = encode([labels[r] for r in kept], multi=multi, classes=classes if one_hot else None)
    return Labelled([files[r] for r in kept], y, classes_out, notes=notes,
                    is_valid=is_valid[kept] if is_valid is not None else None)

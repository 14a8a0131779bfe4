"""Labels kept in a CSV file (`ImageData.from_csv` data): a relabel rewrites the file's label cell instead of
moving the picture. Only the lines of relabelled files change; every other byte stays as it was, and apply keeps
the original beside the journal (`labels.orig.csv`) so undo puts it back byte for byte."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from .._core.errors import ConfigError, DataError


@dataclass(frozen=True)
class CsvLabels:
    """Where from_csv data keeps its labels: pass the same values you gave `ImageData.from_csv`, e.g.
    `CsvLabels("labels.csv", folder="train", suffix=".jpg")`; `path` is relative to the data folder (or
    absolute, inside it). One label column (`label_delim` for multi-label cells); one-hot columns are not
    rewritten."""

    path: str = "labels.csv"
    folder: str = "train"
    fn_col: int | str = 0
    label_col: int | str = 1
    suffix: str = ""
    label_delim: str | None = None
    delimiter: str = ","
    header: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CsvLabels":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def file(self, data: Path) -> Path:
        return Path(self.path) if Path(self.path).is_absolute() else Path(data) / self.path

    def check(self, data: Path) -> "CsvLabels":
        """The CSV must exist inside the data folder (apply rewrites it; nothing outside DATA is changed)."""
        if isinstance(self.label_col, (list, tuple)):
            raise ConfigError("CsvLabels takes one label_col: one-hot label columns cannot be rewritten by apply.")
        path = self.file(data)
        if not path.is_file():
            raise DataError(f"The label file {path} does not exist: pass CsvLabels(path=...) relative to {data}.")
        if not path.resolve().is_relative_to(Path(data).resolve()):
            raise DataError(f"The label file {path} is outside the data folder {data}: apply changes nothing outside "
                            f"it. Put the CSV inside the data folder, or relabel those files by hand.")
        return self


def _column(header: list[str] | None, col: int | str, what: str) -> int:
    if isinstance(col, int):
        return col
    if header is None or col not in header:
        raise DataError(f"{what} {col!r} is not a column of the label file (columns: {', '.join(header or [])}).")
    return header.index(col)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"The label file {path} cannot be read ({e}).") from None


def _parse(line: str, delimiter: str) -> list[str] | None:
    body = line.rstrip("\r\n").lstrip("\ufeff")
    if not body.strip():
        return None
    rows = list(csv.reader([body], delimiter=delimiter))
    return rows[0] if len(rows) == 1 else None


def csv_changes(labels: CsvLabels, data: Path, relabels: dict[str, str | None]
                ) -> tuple[list[tuple[int, str, str, str | None]], list[str]]:
    """For {file relative to DATA: new label text, or None for a deleted file} -> ([(line number, file, old
    cell, new cell or None: the line goes)], files not found in the CSV). Multi-label text is space-separated
    (as the page shows it) and written with `label_delim`."""
    path = labels.file(data)
    lines = _lines(path)
    header = _parse(lines[0], labels.delimiter) if labels.header and lines else None
    fn_i = _column([c.strip() for c in header] if header else None, labels.fn_col, "fn_col")
    lab_i = _column([c.strip() for c in header] if header else None, labels.label_col, "label_col")
    want: dict[str, str] = {}
    for rel in relabels:
        p = PurePosixPath(rel)
        try:
            key = p.relative_to(PurePosixPath(labels.folder)).as_posix() if labels.folder not in ("", ".") else rel
        except ValueError:
            continue
        if labels.suffix and key.endswith(labels.suffix):
            key = key[: -len(labels.suffix)]
        want[key] = rel
    changes, seen = [], set()
    for n, line in enumerate(lines):
        if n == 0 and labels.header:
            continue
        row = _parse(line, labels.delimiter)
        if row is None or len(row) <= max(fn_i, lab_i):
            continue
        key = row[fn_i].strip()
        rel = want.get(key)
        if rel is None or rel in seen:
            continue
        new = relabels[rel]
        if new is not None and labels.label_delim is not None:
            new = labels.label_delim.join(new.split(" "))
        changes.append((n, rel, row[lab_i], new))
        seen.add(rel)
    return changes, [r for r in relabels if r not in seen]


def rewritten(labels: CsvLabels, data: Path, changes: list[tuple[int, str, str, str | None]]) -> bytes:
    """The CSV's bytes with the label cell of each changed line replaced (the line of a deleted file removed,
    so `from_csv` does not miss it); other lines untouched."""
    path = labels.file(data)
    lines = _lines(path)
    header = _parse(lines[0], labels.delimiter) if labels.header and lines else None
    lab_i = _column([c.strip() for c in header] if header else None, labels.label_col, "label_col")
    for n, _, _, new in changes:
        line = lines[n]
        if new is None:
            lines[n] = ""
            continue
        ending = line[len(line.rstrip("\r\n")):]
        bom = "\ufeff" if line.startswith("\ufeff") else ""
        row = _parse(line, labels.delimiter)
        row[lab_i] = new
        buf = io.StringIO()
        csv.writer(buf, delimiter=labels.delimiter, lineterminator="").writerow(row)
        lines[n] = bom + buf.getvalue() + ending
    return "".join(lines).encode("utf-8")


def replace_bytes(path: Path, data: bytes, like: Path | None = None) -> None:
    """Write `data` over `path` atomically (temporary file in the same folder, fsync, rename); with `like`, the
    result gets `like`'s modification time (undo: the original's)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if like is not None:
            st = like.stat()
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

"""The review journal: every decision (keep, delete, relabel, or back to undecided) is one JSON line appended to
`journal.jsonl` in the clean folder and fsynced before the page hears "saved", so a refresh, a crash or a closed
tab loses nothing. The last line for a file wins; a line cut short by a crash is skipped.

Requests are untrusted (the page, a notebook, anything that has the token): a file must be one the clean
folder lists, named by its path relative to the data folder (no absolute path, no `..`), and a new class name
must be a plain folder name.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .._core.errors import VisiontuneError

try:
    import fcntl
except ImportError:  # Windows: one review page per clean folder
    fcntl = None

ACTIONS = ("keep", "delete", "relabel", "undecided")


class ReviewError(VisiontuneError, ValueError):
    """A decision that cannot be recorded or carried out: an unknown file, a path outside the data, a bad name."""


@dataclass
class Decision:
    file: str
    action: str
    label: str | None = None
    index: int | None = None
    time: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_relative(file: Any) -> str:
    """`file` as a clean relative POSIX path, or ReviewError: only paths inside the data folder are accepted."""
    if not isinstance(file, str) or not file or "\0" in file:
        raise ReviewError(f"file must be a path relative to the data folder; got {file!r}.")
    if file.startswith(("/", "\\")) or "\\" in file or (len(file) > 1 and file[1] == ":"):
        raise ReviewError(f"{file!r} is an absolute path: only files inside the data folder, named relative to it, "
                          f"are accepted.")
    parts = PurePosixPath(file).parts
    if any(p in ("..", ".") for p in parts) or file != PurePosixPath(*parts).as_posix():
        raise ReviewError(f"{file!r} is not a plain relative path (no '..', '.' or empty parts): only files inside "
                          f"the data folder are accepted.")
    return file


def check_class_name(name: Any) -> str:
    """A class name that can be a folder name: no separators, not hidden, no surrounding spaces."""
    if not isinstance(name, str) or not name:
        raise ReviewError(f"a class name must be a non-empty string; got {name!r}.")
    bad = [c for c in ("/", "\\", "\0") if c in name]
    if bad or name in (".", "..") or name.startswith(".") or name != name.strip() or len(name.encode()) > 200:
        raise ReviewError(f"{name!r} cannot be a class folder name: use letters, digits, spaces, '-' or '_' "
                          f"(no '/', no leading '.', at most 200 bytes).")
    return name


class Journal:
    """Append and read the decisions of one clean folder; `files` is what the folder lists (relative path ->
    its split and label), `classes` the data's classes."""

    def __init__(self, path: str | os.PathLike, files: dict[str, dict], classes: Iterable[str], multi: bool = False):
        self.path = Path(path)
        self.files, self.classes, self.multi = files, list(classes), multi
        self._lock = threading.Lock()

    def check(self, file: Any, action: Any, label: Any = None) -> tuple[str, str, str | None]:
        """Validate one decision -> (file, action, label); ReviewError says what is wrong."""
        file = check_relative(file)
        if file not in self.files:
            raise ReviewError(f"{file!r} is not one of the files this clean folder lists; only those can be decided on.")
        if action not in ACTIONS:
            raise ReviewError(f"action must be one of {', '.join(ACTIONS)}; got {action!r}.")
        if action != "relabel":
            return file, action, None
        meta = self.files[file]
        if meta.get("split") == "test":
            raise ReviewError(f"{file} is in the unlabelled test set: keep or delete it, there is no label to change.")
        if self.multi:
            names = label.split(" ") if isinstance(label, str) else None
            if not names or any(not n for n in names):
                raise ReviewError(f"a multi-label relabel takes the labels separated by single spaces; got {label!r}.")
            for n in names:
                check_class_name(n)
        else:
            check_class_name(label)
        if label == meta.get("label"):
            return file, "keep", None  # relabel to the label it has: nothing to move
        return file, action, label

    def append(self, file: Any, action: Any, label: Any = None, index: Any = None) -> Decision:
        """Record a decision: validated, written as one line, flushed and fsynced, under a lock (threads of the
        page's server and other processes)."""
        file, action, label = self.check(file, action, label)
        idx = int(index) if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else None
        d = Decision(file, action, label, idx, datetime.now().isoformat(timespec="milliseconds"))
        line = (json.dumps(d.to_dict(), ensure_ascii=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)  # closing releases the lock
        return d

    def read(self) -> tuple[dict[str, Decision], list[Decision], int]:
        """(the current decision per file, the decisions in order, lines skipped as unreadable). Lines naming
        files this folder does not list are skipped too: a hand-edited journal cannot reach other files."""
        current: dict[str, Decision] = {}
        order: list[Decision] = []
        skipped = 0
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return current, order, 0
        for raw in lines:
            try:
                rec = json.loads(raw)
                file, action, label = self.check(rec.get("file"), rec.get("action"), rec.get("label"))
            except (ValueError, AttributeError, ReviewError):
                skipped += 1
                continue
            idx = rec.get("index")
            d = Decision(file, action, label, idx if isinstance(idx, int) else None, str(rec.get("time", "")))
            order.append(d)
            if action == "undecided":
                current.pop(file, None)
            else:
                current[file] = d
        return current, order, skipped

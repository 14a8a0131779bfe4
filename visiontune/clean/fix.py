"""Carry out the review's decisions, and take them back.

`apply_decisions(clean)` moves files: a relabel moves the file to the other class folder of the same split, a
delete moves it into the clean folder's `trash/` at its path relative to the data folder; nothing is ever
unlinked or overwritten. The plan is checked in full before the first move (files that vanished or changed
since `clean` ran are skipped and counted, folders must be writable, a new class folder needs consent), and
`applied.json` is written and fsynced before the first move, so an interrupted apply (a crash, kill -9, a power
cut) can be finished by running apply again, or undone; every move is a rename (or, across file systems, a copy
to a temporary name, fsync, rename, then the source removed), so a file is always whole in one of its places.
`undo_decisions(clean)` moves every file back (byte-identical: the same files, renamed back) and removes the
folders apply created. Both hold a per-data-folder lock: a second apply or undo of the same data refuses.
Afterwards, the image-cache entries and activation caches that covered the moved files are dropped.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Iterator

from .._core.errors import ConfigError, DataError, VisiontuneError
from .._core.failpoints import failpoint
from .._core.paths import cache_home
from ..runs.cleandir import CleanDir
from .csvlabels import CsvLabels, csv_changes, replace_bytes, rewritten
from .journal import Journal, check_relative

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None


class ApplyLockedError(VisiontuneError):
    """Another apply or undo is working on the same data folder."""


@dataclass
class Move:
    action: str  # relabel | delete
    src: str  # relative to the data folder
    dst: str  # relative to the data folder (relabel) or to the clean folder's trash/ (delete)
    label: str | None = None

    def to_dict(self) -> dict:
        return {"action": self.action, "src": self.src, "dst": self.dst, "label": self.label}

    def target(self, data: Path, trash: Path) -> Path:
        """Where the file goes: the other class folder in `data` (relabel) or the clean folder's `trash`."""
        return (data if self.action == "relabel" else trash) / self.dst


@dataclass
class ApplyPlan:
    """What `--apply` does (or did): the moves, the folders it creates, what it skips and why."""

    clean: CleanDir
    data: Path
    moves: list[Move] = field(default_factory=list)
    created_dirs: list[str] = field(default_factory=list)  # relative to the data folder
    new_classes: list[str] = field(default_factory=list)
    kept: int = 0
    vanished: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    not_movable: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    csv: CsvLabels | None = None  # labels kept in a CSV: relabels rewrite it instead of moving files
    csv_changes: list[tuple[int, str, str, str | None]] = field(default_factory=list)  # (line, file, old, new|None)
    applied: bool = False
    invalidated: tuple[int, int] = (0, 0)

    def summary(self, show: int = 10) -> str:
        relabels = [m for m in self.moves if m.action == "relabel"]
        deletes = [m for m in self.moves if m.action == "delete"]
        verb = ("Moved", "moved") if self.applied else ("Will move", "will move")
        lines = [f"{verb[0]} {len(relabels)} files to another class folder and {len(deletes)} to "
                 f"{self.clean.trash} (deleted, recoverable) in {self.data}; {self.kept} kept as they are."]
        if self.csv is not None:
            lines.append(f"{'Rewrote' if self.applied else 'Will rewrite'} {len(self.csv_changes)} labels in "
                         f"{self.csv.file(self.data)} (the original is kept as {self.clean.path / CSV_BACKUP}):")
            lines += [f"  line {n + 1}: {f}: " + (f"{old} -> {new}" if new is not None else "removed (deleted file)")
                      for n, f, old, new in self.csv_changes[:show]]
        for m in self.moves[:show]:
            where = m.dst if m.action == "relabel" else f"trash/{m.dst}"
            lines.append(f"  {m.action:8} {m.src} -> {where}")
        if len(self.moves) > show:
            lines.append(f"  ... and {len(self.moves) - show} more")
        if self.created_dirs:
            lines.append(f"New folders: {', '.join(self.created_dirs)}")
        for old, new in self.renamed:
            lines.append(f"  {old} exists already: the relabelled file {'is' if self.applied else 'will be'} named {new}")
        if self.vanished:
            lines.append(f"Skipped {len(self.vanished)} decisions on files that no longer exist (e.g. {self.vanished[0]}).")
        if self.changed:
            lines.append(f"Skipped {len(self.changed)} decisions on files changed since `visiontune clean` looked at "
                         f"them (e.g. {self.changed[0]}): run it again to review them.")
        if self.not_movable:
            lines.append(f"Skipped {len(self.not_movable)} relabels that moving a file cannot express "
                         f"(e.g. {self.not_movable[0]}): change those labels where they are kept.")
        if self.applied and any(self.invalidated):
            lines.append(f"Dropped {self.invalidated[0]} image-cache entries and {self.invalidated[1]} activation "
                         f"caches of the moved files (rebuilt on the next run).")
        return "\n".join(lines)


CSV_BACKUP = "labels.orig.csv"


# ---------------------------------------------------------------------------------------- the lock
def lock_path(data: Path) -> Path:
    digest = hashlib.sha256(str(Path(data).resolve()).encode()).hexdigest()[:16]
    return cache_home() / "locks" / f"clean-{digest}.lock"


@contextlib.contextmanager
def data_lock(data: Path, clean: CleanDir | None = None) -> Iterator[None]:
    """Hold the data folder's apply/undo lock (under the visiontune cache) and the clean folder's, or refuse at
    once (ApplyLockedError) when another process holds either."""
    with _flock(lock_path(data), data):
        if clean is None:
            yield
        else:
            with _flock(clean.path / ".apply.lock", data):
                yield


@contextlib.contextmanager
def _flock(path: Path, data: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise ApplyLockedError(f"Another `visiontune clean --apply` or `--undo` is working on {data} "
                                       f"({holder}). Wait for it to finish, then run this again.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now().isoformat(timespec='seconds')}".encode(), 0)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- planning
def _record(clean: CleanDir) -> tuple[dict, Path]:
    record = clean.read()
    data = Path(record["data"])
    if not data.is_dir():
        raise DataError(f"The data folder {data} that {clean.path} was made for is not there any more. Put it back "
                        f"(or run `visiontune clean` on its new place) to apply the decisions.")
    return record, data


def _free_name(data: Path, rel: PurePosixPath, taken: set[str]) -> PurePosixPath:
    """`rel`, or `stem-1.ext`, `stem-2.ext`, ... when a file of that name exists or is planned."""
    cand, k = rel, 0
    while os.path.lexists(data / cand) or cand.as_posix() in taken:
        k += 1
        cand = rel.with_name(f"{rel.stem}-{k}{rel.suffix}")
    return cand


def _unchanged(path: Path, meta: dict) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return meta.get("size", -1) in (-1, st.st_size) and meta.get("mtime_ns", -1) in (-1, st.st_mtime_ns)


def plan_apply(clean: str | os.PathLike | CleanDir) -> ApplyPlan:
    """What applying the clean folder's journal would do; nothing on disk changes."""
    clean = clean if isinstance(clean, CleanDir) else CleanDir.open(clean)
    record, data = _record(clean)
    files, classes = record["files"], record["classes"]
    current, _, _ = Journal(clean.journal, files, classes, record.get("multi_label", False)).read()
    plan = ApplyPlan(clean, data)
    layout = record.get("layout") or {}
    if layout.get("labels_csv"):
        plan.csv = CsvLabels.from_dict(layout["labels_csv"])
    csv_relabels: dict[str, str] = {}
    taken: set[str] = set()
    new_dirs: set[str] = set()
    for rel, d in sorted(current.items()):
        if d.action == "keep":
            plan.kept += 1
            continue
        check_relative(rel)
        src = data / rel
        if not os.path.lexists(src):
            plan.vanished.append(rel)
            continue
        meta = files[rel]
        if not _unchanged(src, meta):
            plan.changed.append(rel)
            continue
        if d.action == "delete":
            plan.moves.append(Move("delete", rel, rel))
            if plan.csv is not None:
                csv_relabels[rel] = None  # its line leaves the CSV too (undo restores it)
            continue
        if plan.csv is not None:
            csv_relabels[rel] = d.label
            for name in d.label.split(" ") if record.get("multi_label") else [d.label]:
                if name not in classes and name not in plan.new_classes:
                    plan.new_classes.append(name)
            continue
        parts = PurePosixPath(rel)
        if record.get("multi_label") or parts.parent.name != meta.get("label") or len(parts.parts) < 2:
            plan.not_movable.append(rel)  # the label is not the folder name (CSV, file-name labels)
            continue
        want = parts.parent.parent / d.label / parts.name
        dst = _free_name(data, want, taken)
        if dst != want:
            plan.renamed.append((want.as_posix(), dst.as_posix()))
        taken.add(dst.as_posix())
        plan.moves.append(Move("relabel", rel, dst.as_posix(), d.label))
        if d.label not in classes and d.label not in plan.new_classes:
            plan.new_classes.append(d.label)
        folder = dst.parent
        while folder.as_posix() not in ("", ".") and not (data / folder).is_dir():
            new_dirs.add(folder.as_posix())
            folder = folder.parent
    plan.created_dirs = sorted(new_dirs, key=lambda p: (p.count("/"), p))
    if csv_relabels:
        plan.csv_changes, missing = csv_changes(plan.csv, data, csv_relabels)
        plan.not_movable += [r for r in missing if csv_relabels[r] is not None]
    return plan


def _check_writable(plan: ApplyPlan) -> None:
    """Every folder a move takes a file from or puts one into must be writable: checked for all of them before
    the first move, so an unwritable data folder stops the apply with nothing moved."""
    data, trash = plan.data, plan.clean.trash
    need: set[Path] = {plan.clean.path}
    if plan.csv_changes:
        need.add(plan.csv.file(data).parent)
    for m in plan.moves:
        need.add((data / m.src).parent)
        dst = m.target(data, trash)
        folder = dst.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        need.add(folder)
    blocked = sorted(str(p) for p in need if not os.access(p, os.W_OK | os.X_OK))
    if blocked:
        more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
        raise DataError(f"Cannot apply: {blocked[0]}{more} is not writable, so files cannot be moved out of or into "
                        f"it (or a label file rewritten). Nothing was moved. Make the data folder writable (e.g. "
                        f"chmod -R u+w {data}) or copy it somewhere you can write and run `visiontune clean` there.")


# ---------------------------------------------------------------------------------------- moving
def _move(src: Path, dst: Path) -> None:
    """Move without ever replacing a file: a rename, or across file systems a copy (with metadata) to a
    temporary name, fsync, rename, then the source removed, so a crash leaves the file whole in one place
    (or, just before the last step, identical in both)."""
    if os.path.lexists(dst):
        raise DataError(f"{dst} appeared while moving files; nothing was overwritten. Run `visiontune clean --undo` "
                        f"to put back what moved.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        _copy_whole(src, dst)
        src.unlink()
    failpoint("clean-move")


def _copy_whole(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` (bytes and times) through a temporary file: `dst` never exists half-written."""
    tmp = dst.with_name(f".{dst.name}.partial")
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.rename(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)


def _finish_move(src: Path, dst: Path) -> str:
    """One recorded move of an interrupted apply -> 'moved' (done now), 'done' (done before the interruption) or
    'conflict' (both places hold different files, or neither holds it)."""
    for stale in (dst.with_name(f".{dst.name}.partial"), src.with_name(f".{src.name}.partial")):
        stale.unlink(missing_ok=True)  # a cross-device copy cut short: the source is still whole
    there, here = os.path.lexists(dst), os.path.lexists(src)
    if here and not there:
        _move(src, dst)
        return "moved"
    if there and not here:
        return "done"
    if there and _same_bytes(src, dst):  # copied across file systems, cut before the source was removed
        src.unlink()
        return "done"
    return "conflict"


def _write_record(clean: CleanDir, record: dict) -> None:
    tmp = clean.applied.with_name(clean.applied.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, clean.applied)


def _read_applied(clean: CleanDir) -> dict | None:
    try:
        return json.loads(clean.applied.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DataError(f"{clean.applied} cannot be read ({e}); it records what apply moved. Restore it from "
                        f"a backup, or put the files back by hand from {clean.trash}.") from None


def apply_state(clean: str | os.PathLike | CleanDir) -> str | None:
    """None (never applied), "applying" (an apply was interrupted: apply again finishes it), "applied" or "undone"."""
    clean = clean if isinstance(clean, CleanDir) else CleanDir.open(clean)
    done = _read_applied(clean)
    return None if done is None else done.get("state")


def apply_decisions(clean: str | os.PathLike | CleanDir, create_classes: bool = False, dry_run: bool = False
                    ) -> ApplyPlan:
    """Carry out the clean folder's journal (`dry_run=True`: only plan it) -> the plan, `applied` when done.

    A relabel to a class the data does not have creates its folder only with `create_classes=True` (the CLI
    asks). Undo with `undo_decisions(clean)`."""
    clean = clean if isinstance(clean, CleanDir) else CleanDir.open(clean)
    record, data = _record(clean)
    with data_lock(data, clean):
        done = _read_applied(clean)
        if done is not None and done.get("state") == "applied":
            raise DataError(f"{clean.path} was applied already ({done.get('time', '')}). Run `visiontune clean --undo "
                            f"{clean.path}` first to apply it again, or run `visiontune clean DATA` for a new review.")
        if done is not None and done.get("state") == "applying":
            return _finish_interrupted(clean, record, done, dry_run)
        plan = plan_apply(clean)
        if dry_run:
            return plan
        if plan.new_classes and not create_classes:
            what = f"creates their folders ({', '.join(plan.created_dirs)})" if plan.created_dirs else "adds them"
            raise ConfigError(f"The decisions relabel files to {len(plan.new_classes)} class(es) the data does not have: "
                              f"{', '.join(repr(c) for c in plan.new_classes)}. Applying {what}; confirm with --yes "
                              f"(create_classes=True in Python), or change those decisions in the review page.")
        _check_writable(plan)
        state = {"visiontune": "clean-apply", "version": 1, "state": "applying",
                 "time": datetime.now().isoformat(timespec="seconds"), "data": str(data),
                 "moves": [m.to_dict() for m in plan.moves], "created_dirs": plan.created_dirs}
        if plan.csv_changes:
            state["csv"] = {"labels": plan.csv.to_dict(), "backup": CSV_BACKUP,
                            "changes": [list(c) for c in plan.csv_changes]}
        _write_record(clean, state)  # before the first move: an interrupted apply can be undone
        if plan.csv_changes:
            target = plan.csv.file(data)
            new = rewritten(plan.csv, data, plan.csv_changes)
            _copy_whole(target, clean.path / CSV_BACKUP)  # the original, bytes and time, for undo
            replace_bytes(target, new)
        for d in plan.created_dirs:
            (data / d).mkdir(exist_ok=True)
        for m in plan.moves:
            _move(data / m.src, m.target(data, clean.trash))
        _mark_applied(clean, record, state, plan)
    return plan


def _finish_interrupted(clean: CleanDir, record: dict, state: dict, dry_run: bool) -> ApplyPlan:
    """Carry out the rest of an apply that was interrupted (its applied.json says "applying"): the moves it
    recorded, not a new plan, so the files it had moved already are not counted as vanished."""
    data = Path(record["data"])
    plan = ApplyPlan(clean, data, moves=[Move(m["action"], check_relative(m["src"]), check_relative(m["dst"]),
                                              m.get("label")) for m in state["moves"]],
                     created_dirs=list(state.get("created_dirs", [])))
    if state.get("csv"):
        plan.csv = CsvLabels.from_dict(state["csv"]["labels"])
        plan.csv_changes = [tuple(c) for c in state["csv"]["changes"]]
    if dry_run:
        return plan
    if plan.csv_changes:
        target, backup = plan.csv.file(data), clean.path / state["csv"]["backup"]
        if not backup.is_file():  # interrupted before the (atomic) backup: the label file is the original
            _copy_whole(target, backup)
        if target.read_bytes() == backup.read_bytes():
            replace_bytes(target, rewritten(plan.csv, data, plan.csv_changes))
    for d in plan.created_dirs:
        (data / d).mkdir(parents=True, exist_ok=True)
    outcomes = [_finish_move(data / m.src, m.target(data, clean.trash)) for m in plan.moves]
    bad = [m.src for m, o in zip(plan.moves, outcomes) if o == "conflict"]
    if bad:
        raise DataError(f"An interrupted apply of {clean.path} cannot be finished: {len(bad)} file(s) are in neither "
                        f"place or in both with different bytes (e.g. {bad[0]}). Nothing was overwritten; run "
                        f"`visiontune clean --undo {clean.path}` to put back what moved.")
    _mark_applied(clean, record, state, plan)
    return plan


def _mark_applied(clean: CleanDir, record: dict, state: dict, plan: ApplyPlan) -> None:
    """Record the apply as done, then drop the cache entries of the moved files (old and new paths)."""
    state["state"] = "applied"
    _write_record(clean, state)
    plan.applied = True
    plan.invalidated = invalidate_caches(record, [m.src for m in plan.moves] +
                                         [m.dst for m in plan.moves if m.action == "relabel"])


def undo_decisions(clean: str | os.PathLike | CleanDir) -> int:
    """Put back every file `apply_decisions` moved (also after an interrupted apply) and remove the folders it
    created -> the number of files moved back. A file that cannot go back (both places taken, or gone) is an
    error listing it; everything else is restored and applied.json kept for another try."""
    clean = clean if isinstance(clean, CleanDir) else CleanDir.open(clean)
    record, data = _record(clean)
    with data_lock(data, clean):
        done = _read_applied(clean)
        if done is None or done.get("state") not in ("applying", "applied"):
            what = "was undone already" if done is not None else "was never applied"
            raise DataError(f"{clean.path} {what}: there is nothing to undo.")
        restored, conflicts, lost = 0, [], []
        moved = []
        for m in reversed(done["moves"]):
            src = data / check_relative(m["src"])
            dst = (data / check_relative(m["dst"])) if m["action"] == "relabel" else (clean.trash / check_relative(m["dst"]))
            if os.path.lexists(dst) and not os.path.lexists(src):
                _move(dst, src)
                restored += 1
                moved += [m["src"], m["dst"]] if m["action"] == "relabel" else [m["src"]]
            elif os.path.lexists(dst):
                conflicts.append(m["src"])
            elif not os.path.lexists(src):
                lost.append(m["src"])
        for d in sorted(done.get("created_dirs", []), key=lambda p: p.count("/"), reverse=True):
            with contextlib.suppress(OSError):
                (data / check_relative(d)).rmdir()  # only when empty: files added since stay
        _remove_empty_tree(clean.trash)
        if done.get("csv"):
            backup = clean.path / done["csv"]["backup"]
            if backup.is_file():
                target = CsvLabels.from_dict(done["csv"]["labels"]).file(data)
                replace_bytes(target, backup.read_bytes(), like=backup)
                backup.unlink()
                restored += sum(1 for c in done["csv"]["changes"] if c[3] is not None)  # relabels (deletes: above)
        invalidate_caches(record, moved)
        if conflicts or lost:
            problems = [f"{p} and its moved copy both exist" for p in conflicts[:3]] + [f"{p} is gone" for p in lost[:3]]
            raise DataError(f"Put back {restored} files, but {len(conflicts) + len(lost)} could not be: "
                            f"{'; '.join(problems)}. {clean.applied} is kept for another try.")
        done["state"] = "undone"
        done["undone"] = datetime.now().isoformat(timespec="seconds")
        _write_record(clean, done)
    return restored


def _remove_empty_tree(root: Path) -> None:
    if not root.is_dir():
        return
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


# ---------------------------------------------------------------------------------------- caches
def invalidate_caches(record: dict, rel_paths: list[str]) -> tuple[int, int]:
    """Drop the image-cache entries of these files (old and new paths) and the activation caches of the splits
    they belong to (their keys hash the file lists, so they could never be read again) -> (entries, caches)."""
    from ..data.cache import ImageCache

    cache_dir = Path(record.get("cache_dir", ""))
    if not rel_paths or not cache_dir.is_dir():
        return 0, 0
    base = Path(record.get("data_abspath") or record["data"])
    paths = {os.path.abspath(base / r) for r in rel_paths} | {str(Path(record["data"]) / r) for r in rel_paths}
    splits = {record["files"].get(r, {}).get("split") for r in rel_paths} - {None}
    entries = 0
    for sdir in sorted((cache_dir / "images").glob("s*")):
        if not sdir.name[1:].isdigit():
            continue
        cache = ImageCache(cache_dir / "images", int(sdir.name[1:]))
        try:
            with cache.locked():
                index = cache.read_index()
                drop = [p for p in paths if p in index["entries"]]
                for p in drop:
                    del index["entries"][p]
                if drop:
                    cache.collect_garbage(index)
                    cache.write_index(index)
                entries += len(drop)
        except OSError:
            continue  # a cache we cannot write is keyed by size and mtime: stale entries are never read
    caches = 0
    for meta in sorted((cache_dir / "activations").glob("*.json")):
        try:
            ds = json.loads(meta.read_text()).get("desc", {}).get("ds")
        except (OSError, ValueError):
            continue
        if ds in splits:
            key = meta.name[: -len(".json")]
            for p in (meta, meta.with_name(f"{key}.npy"), meta.with_name(f"{key}.idx.npy")):
                with contextlib.suppress(OSError):
                    p.unlink()
            caches += 1
    return entries, caches

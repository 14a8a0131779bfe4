"""Dataset organisation (course notes, week 2): move a validation sample out of train, and copy a
small mirrored sample of the data set for fast experiments.

Both are careful with the user's files: `split_valid` is a dry run unless `apply=True`, never
overwrites a file, and writes a journal before moving anything so `undo_split_valid` can put every
file back (an interrupted move included); `sample` copies into a fresh folder, completed or absent.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable

import numpy as np

from .._core.errors import ConfigError, DataError, bad_value
from .sources import scan_images

JOURNAL = ".visiontune-split-valid.json"


def allocate(counts: dict[Hashable, int], k: int, keep: int = 0, min_each: int = 0) -> dict[Hashable, int]:
    """Share `k` picks among groups in proportion to their sizes (largest remainder), each group
    giving at most `count - keep` and, where it can, at least `min_each`."""
    caps = {g: max(0, c - keep) for g, c in counts.items()}
    k = min(k, sum(caps.values()))
    total = sum(counts.values()) or 1
    exact = {g: k * c / total for g, c in counts.items()}
    floor = {g: min(min_each, caps[g]) for g in counts}
    if sum(floor.values()) > k:  # too few picks to give every group its minimum
        floor = dict.fromkeys(counts, 0)
    alloc = {g: min(caps[g], max(floor[g], int(exact[g]))) for g in counts}
    while sum(alloc.values()) < k:
        g = max((g for g in counts if alloc[g] < caps[g]), key=lambda g: exact[g] - alloc[g])
        alloc[g] += 1
    while sum(alloc.values()) > k:
        g = min((g for g in counts if alloc[g] > floor[g]), key=lambda g: exact[g] - alloc[g])
        alloc[g] -= 1
    return alloc


def _groups(folder: Path) -> dict[Path, list[Path]]:
    """Images under `folder` grouped by their folder relative to it (the class; '.' when flat)."""
    groups: dict[Path, list[Path]] = {}
    for f in scan_images(folder).files:
        groups.setdefault(f.parent.relative_to(folder), []).append(f)
    return dict(sorted(groups.items()))


def _pick(groups: dict[Path, list[Path]], quota: dict[Path, int], rng: np.random.Generator) -> dict[Path, list[Path]]:
    return {g: [files[j] for j in sorted(rng.choice(len(files), quota[g], replace=False))] for g, files in groups.items()}


def _label(g: Path) -> str:
    return "(no class folder)" if str(g) == "." else g.as_posix()


# ---------------------------------------------------------------------------------------- split-valid


@dataclass
class SplitPlan:
    """The files `split_valid` moves from train to valid, per class; `applied` once they moved."""

    root: Path
    train_dir: Path
    valid_dir: Path
    moves: list[tuple[Path, Path]]
    per_class: dict[str, tuple[int, int]]  # class -> (images in train now, images to move)
    notes: list[str] = field(default_factory=list)
    applied: bool = False

    def summary(self, show: int = 5) -> str:
        """What will move (or moved), per class, with the first few files."""
        verb = "Moved" if self.applied else "Will move"
        lines = [f"{verb} {len(self.moves)} of {sum(n for n, _ in self.per_class.values())} images "
                 f"from {self.train_dir} to {self.valid_dir}:"]
        lines += [f"  {c}: {k} of {n}" for c, (n, k) in self.per_class.items()]
        lines += [f"  {s.relative_to(self.root)} -> {d.relative_to(self.root)}" for s, d in self.moves[:show]]
        if len(self.moves) > show:
            lines.append(f"  ... and {len(self.moves) - show} more")
        return "\n".join(lines + self.notes)


def plan_split_valid(path: str | os.PathLike, n: int | None = None, pct: float | None = None, seed: int = 42,
                     train: str = "train", valid: str = "valid") -> SplitPlan:
    """The stratified random sample of `n` images (or `pct` of them) that would move from train to valid.

    Each class gives in proportion to its size and keeps at least one training image. Nothing on disk
    changes; an existing file at a destination is an error before anything moves.
    """
    root = Path(path).expanduser()
    if (n is None) == (pct is None):
        raise ConfigError("Give the size of the validation sample as n (a number of images) or pct (a fraction), "
                          "not both and not neither, e.g. --n 2000 or --pct 0.2.")
    train_dir, valid_dir = root / train, root / valid
    if not train_dir.is_dir():
        raise DataError(f"{train_dir} does not exist: split-valid moves images from DATA/{train}/<class>/ "
                        f"to DATA/{valid}/<class>/.")
    journal = root / JOURNAL
    if journal.exists():
        raise DataError(f"{root} has a split-valid journal ({journal}) from an earlier split. Run "
                        f"`visiontune split-valid --undo {root}` to put those files back first, or delete the "
                        f"journal to keep that split for good.")
    groups = _groups(train_dir)
    total = sum(len(v) for v in groups.values())
    if total == 0:
        raise DataError(f"{train_dir} has no images.")
    if pct is not None:
        if not 0 < pct < 1:
            raise bad_value("pct", pct, "between 0 and 1")
        n = int(round(total * pct))
    movable = sum(max(0, len(v) - 1) for v in groups.values())
    if n is None or n < 1 or n > movable:
        raise ConfigError(f"n must be between 1 and {movable} (each of the {len(groups)} classes keeps at least one "
                          f"of its training images); got {n}.")
    quota = allocate({g: len(v) for g, v in groups.items()}, n, keep=1)
    picked = _pick(groups, quota, np.random.default_rng(seed))
    moves = [(f, valid_dir / f.relative_to(train_dir)) for g in groups for f in picked[g]]
    taken = [d for _, d in moves if os.path.lexists(d)]
    if taken:
        raise DataError(f"{len(taken)} destination files already exist, e.g. {taken[0]}; split-valid never "
                        f"overwrites. Rename or remove them, or pass another seed.")
    notes = []
    if list(groups) == [Path(".")]:
        notes.append(f"{train_dir} has no class folders: a plain random sample moves to {valid_dir}.")
    existing = len(scan_images(valid_dir).files) if valid_dir.is_dir() else 0
    if existing:
        notes.append(f"{valid_dir} already holds {existing} images; they stay.")
    per_class = {_label(g): (len(groups[g]), quota[g]) for g in groups}
    return SplitPlan(root, train_dir, valid_dir, moves, per_class, notes)


def _write_journal(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _move(src: Path, dst: Path) -> None:
    """Move without ever replacing a file (rename, or copy+delete across file systems)."""
    if os.path.lexists(dst):
        raise DataError(f"{dst} appeared while moving files; nothing was overwritten. "
                        f"Run `split-valid --undo` to put back what moved.")
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.move(src, dst)  # another file system: copy (with metadata), then delete


def apply_split(plan: SplitPlan) -> Path:
    """Move the plan's files, writing the journal first (so an interrupted move can be undone) -> journal path."""
    root = plan.root
    parents = {d.parent for _, d in plan.moves}
    created = sorted({p for d in parents for p in (d, *d.parents) if p.is_relative_to(root) and p != root
                      and not p.exists()}, key=lambda p: len(p.parts))
    journal = root / JOURNAL
    record = {
        "visiontune": "split-valid", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "moves": [[s.relative_to(root).as_posix(), d.relative_to(root).as_posix()] for s, d in plan.moves],
        "created_dirs": [p.relative_to(root).as_posix() for p in created], "complete": False,
    }
    _write_journal(journal, record)
    for d in created:
        d.mkdir(exist_ok=True)
    for src, dst in plan.moves:
        _move(src, dst)
    record["complete"] = True
    _write_journal(journal, record)
    plan.applied = True
    return journal


def split_valid(path: str | os.PathLike, n: int | None = None, pct: float | None = None, seed: int = 42,
                apply: bool = False, train: str = "train", valid: str = "valid") -> SplitPlan:
    """Move a stratified random sample of train images to valid (`apply=True`), or only plan it (the
    default, a dry run). Undo with `undo_split_valid(path)`."""
    plan = plan_split_valid(path, n=n, pct=pct, seed=seed, train=train, valid=valid)
    if apply:
        apply_split(plan)
    return plan


def undo_split_valid(path: str | os.PathLike) -> int:
    """Put back every file the journaled split moved, remove the folders it created, delete the journal
    -> number of files moved back. Files that cannot go back (both places taken) are an error listing
    them; everything else is restored and the journal kept for another try."""
    root = Path(path).expanduser()
    journal = root / JOURNAL
    try:
        record = json.loads(journal.read_text())
        moves = [(root / s, root / d) for s, d in record["moves"]]
    except FileNotFoundError:
        raise DataError(f"{root} has no split-valid journal ({JOURNAL}): there is nothing to undo.") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{journal} is not a readable split-valid journal ({e}).") from None
    restored, conflicts, lost = 0, [], []
    for src, dst in reversed(moves):
        if os.path.lexists(dst) and not os.path.lexists(src):
            _move(dst, src)
            restored += 1
        elif os.path.lexists(dst):
            conflicts.append(src)
        elif not os.path.lexists(src):
            lost.append(src)
    for d in sorted((root / p for p in record.get("created_dirs", [])), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()  # only when empty: files someone added since stay
        except OSError:
            pass
    if conflicts or lost:
        problems = [f"both {p} and its valid copy exist" for p in conflicts[:3]] + [f"{p} is gone" for p in lost[:3]]
        raise DataError(f"Put back {restored} files, but {len(conflicts) + len(lost)} could not be: "
                        f"{'; '.join(problems)}. The journal {journal} is kept.")
    journal.unlink()
    return restored


# ---------------------------------------------------------------------------------------- sample


@dataclass
class SampleReport:
    """What `sample` copied where."""

    out: Path
    n_train: int
    n_valid: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join([f"Copied {self.n_train} train and {self.n_valid} valid images to {self.out}", *self.notes])


def sample(path: str | os.PathLike, out: str | os.PathLike, train: int = 1500, valid: int = 50, seed: int = 42,
           train_name: str = "train", valid_name: str = "valid") -> SampleReport:
    """Copy a small stratified random sample of `path` into `out`, mirroring its train/valid class folders,
    for fast experiments. `out` must not exist yet (or be empty); it appears complete or not at all."""
    root, out = Path(path).expanduser(), Path(out).expanduser()
    train_dir, valid_dir = root / train_name, root / valid_name
    if not train_dir.is_dir():
        raise DataError(f"{train_dir} does not exist: sample copies from DATA/{train_name}/<class>/ "
                        f"(and DATA/{valid_name}/<class>/).")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not empty; sample never overwrites. Pick a new folder.")
    if out.resolve().is_relative_to(root.resolve()):
        raise DataError(f"{out} is inside {root}: the sample would become part of the data. Pick a folder outside it.")
    if train < 1 or valid < 0:
        raise ConfigError(f"train must be at least 1 and valid at least 0, got train={train}, valid={valid}.")
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    tr_groups = _groups(train_dir)
    tr_pick = _pick(tr_groups, allocate({g: len(v) for g, v in tr_groups.items()}, train, min_each=1), rng)
    if valid_dir.is_dir():
        va_groups, va_base = _groups(valid_dir), valid_dir
    else:
        chosen = {f for v in tr_pick.values() for f in v}
        va_groups = {g: [f for f in v if f not in chosen] for g, v in tr_groups.items()}
        va_base = train_dir
        if valid:
            notes.append(f"{valid_dir} does not exist: the valid sample comes from other images of {train_dir}.")
    va_pick = _pick(va_groups, allocate({g: len(v) for g, v in va_groups.items()}, valid, min_each=1), rng)
    n_tr, n_va = sum(map(len, tr_pick.values())), sum(map(len, va_pick.values()))
    for asked, got, what in ((train, n_tr, "train"), (valid, n_va, "valid")):
        if got < asked:
            notes.append(f"asked for {asked} {what} images, only {got} exist: copied them all.")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for picks, base, name in ((tr_pick, train_dir, train_name), (va_pick, va_base, valid_name)):
            for files in picks.values():
                for f in files:
                    dst = tmp / name / f.relative_to(base)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dst)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SampleReport(out, n_tr, n_va, notes)

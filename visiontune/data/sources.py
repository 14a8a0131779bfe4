"""Finding images on disk and reading labels from folder names.

Walks follow symlinks once and never into a folder that contains the walk's start (a loop does not
hang or count images twice), skip hidden files and folders, and count the non-image files they pass over
so the summary can say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._core.errors import DataError
from .decode import is_image_file


@dataclass
class Scan:
    """Images found under a folder (sorted) and how many other files were ignored."""

    files: list[Path] = field(default_factory=list)
    ignored: int = 0


def scan_images(root: Path, recursive: bool = True) -> Scan:
    """All image files under `root` in a stable (sorted) order."""
    out = Scan()
    seen: set[tuple[int, int]] = set()
    real_root = os.path.realpath(root)
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir()  # follows symlinks
            except OSError:
                continue
            if is_dir:
                if recursive and not (e.is_symlink() and _is_ancestor(os.path.realpath(e.path), real_root)):
                    stack.append(Path(e.path))
            elif is_image_file(e.name):
                try:
                    Path(e.path).stat()
                except OSError:  # dangling symlink
                    out.ignored += 1
                    continue
                out.files.append(Path(e.path))
            else:
                out.ignored += 1
    out.files.sort()
    return out


def _is_ancestor(a: str, b: str) -> bool:
    """True when folder `a` contains (or is) folder `b`: a symlink to it would be a loop."""
    return b == a or b.startswith(a.rstrip(os.sep) + os.sep)


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class ClassFolders:
    """Images found in `path/<class>/`: files, label indices into `classes`, and what was passed over."""

    files: list[Path]
    labels: list[int]
    classes: list[str]
    ignored: int = 0  # non-image files
    nested: int = 0  # images in sub-folders of class folders (not read)


def read_class_folders(path: Path, min_classes: int = 2, exclude: tuple[str, ...] = ()) -> ClassFolders:
    """Images under `path/<class>/` (one level) -> ClassFolders.

    Rejects, with a message naming the folder: no class folders, an empty class, fewer than
    `min_classes` classes (a valid folder may hold one), and nested layouts (images only in sub-sub-folders).
    """
    dirs = [d for d in _visible_dirs(path) if d.name not in exclude]
    if not dirs:
        loose = scan_images(path, recursive=False).files
        extra = f" It holds {len(loose)} images directly; put them in one folder per class." if loose else ""
        raise DataError(
            f"{path} has no class folders.{extra} Expected {path}/<class>/*.jpg "
            f"(for example {path}/cats/1.jpg and {path}/dogs/2.jpg)."
        )
    out = ClassFolders([], [], [])
    for d in dirs:
        direct = scan_images(d, recursive=False)
        if not direct.files:
            nested = scan_images(d).files
            if nested:
                sub = nested[0].parent.relative_to(path)
                raise DataError(
                    f"{d} holds no images directly, but {len(nested)} in sub-folders such as {path / sub}. "
                    f"visiontune expects one level of class folders: {path}/<class>/*.jpg. "
                    f"Move the images up, or point DATA at the level whose sub-folders are the classes."
                )
            raise DataError(
                f"Class folder {d} has no images ({direct.ignored} other files). "
                f"Add images (.jpg, .png, .webp, ...) or remove the folder."
            )
        out.nested += len(scan_images(d).files) - len(direct.files)
        out.ignored += direct.ignored
        out.classes.append(d.name)
        out.files += direct.files
        out.labels += [len(out.classes) - 1] * len(direct.files)
    if len(out.classes) < min_classes:
        raise DataError(
            f"{path} has a single class folder ({out.classes[0]}); a classifier needs at least two. "
            f"Add a folder per class under {path}."
        )
    return out


def stratified_split(labels: np.ndarray, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class random split -> (train indices, valid indices), each sorted.

    Every class with at least two items keeps one in each split.
    """
    if not 0 < valid_pct < 1:
        raise DataError(f"valid_pct must be between 0 and 1, got {valid_pct}.")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    keys = labels if labels.ndim == 1 else np.zeros(len(labels), dtype=int)
    valid: list[np.ndarray] = []
    for c in np.unique(keys):
        idx = np.flatnonzero(keys == c)
        idx = idx[rng.permutation(len(idx))]
        n = int(round(len(idx) * valid_pct))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        valid.append(idx[:n])
    v = np.sort(np.concatenate(valid)) if valid else np.array([], dtype=int)
    mask = np.ones(len(labels), dtype=bool)
    mask[v] = False
    return np.flatnonzero(mask), v

"""Layout detection: which folder of a downloaded data set is train, valid and test, and where the labels are
(class folders, the file names, or a CSV), so `visiontune train DATA` works on the layouts people have with
no flag, says what it recognised, and stops with the flag that settles it when it cannot tell.

    DATA/train/<class>/ + DATA/valid|val|validation|dev/<class>/     ImageNet / torchvision / Keras / Ultralytics
    DATA/<class>/                                                    one folder per class (valid split off)
    DATA/train/cat.0.jpg, Abyssinian_12.jpg, n01440764_10026.JPEG    the class in the file name (Kaggle)
    DATA/labels.csv | train.csv + DATA/train/<id>.jpg                a labels CSV (dog breeds, Planet)
    DATA/test|test1|testing/                                         an unlabelled test set, predicted at the end
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .._core.errors import DataError
from .decode import is_image_file
from .labels import _compile
from .sources import scan_images

VALID_NAMES = ("valid", "val", "validation", "dev")
TEST_NAMES = ("test", "test1", "testing")
LABEL_FILES = ("labels.csv", "train.csv")
LABEL_COLUMNS = ("label", "labels", "tags", "tag", "class", "classes", "category", "breed", "target", "y")
FILE_COLUMNS = ("id", "file", "filename", "fname", "image", "image_id", "image_name", "path", "name")
NAME_RE = r"/([^/]+?)[._-]\d+\.[A-Za-z0-9]+$"  # cat.0.jpg, Abyssinian_12.jpg, n01440764_10026.JPEG


@dataclass
class Layout:
    """What `detect_layout` found: the kind of labels, the folders (names relative to DATA), the label source's
    options, and notes for the person (which folder is which, what is not used and why)."""

    root: Path
    kind: str  # "folders" | "name_re" | "csv"
    train: str | None = None  # None: the class folders are DATA's own sub-folders
    valid: str | None = None
    test: str | None = None
    label_re: str | None = None
    labels: str | None = None
    fname_col: str | int | None = None
    label_col: str | int | None = None
    label_delim: str | None = None
    suffix: str | None = None
    folder: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return {"folders": "class folders", "name_re": "labels in the file names", "csv": "a labels CSV"}[self.kind]

    def settings(self) -> dict:
        """The resolved choices as TrainConfig settings, so that config.yaml reruns to the same split."""
        out = {"train": self.train, "valid": self.valid, "test": self.test}
        if self.kind == "name_re":
            out["label_re"] = self.label_re
        if self.kind == "csv":
            out.update(labels=self.labels, fname_col=self.fname_col, label_col=self.label_col,
                       label_delim=self.label_delim, suffix=self.suffix, folder=self.folder)
        return out

    def describe(self, counts: dict[str, str] | None = None) -> list[str]:
        """The lines `train` prints first: the layout, each folder with its image count, what is not used."""
        counts = counts or {}
        train = self.folder if self.kind == "csv" else self.train
        lines = [f"layout: {self.name} in {self.root}"]
        for role, name in (("train", train or "."), ("valid", self.valid), ("test", self.test)):
            if name is None:
                continue
            n = counts.get(role)
            lines.append(f"  {role}: {self.root / name}" + (f" ({n})" if n is not None else ""))
        if self.kind == "name_re":
            lines.append(f"  label = first group of {self.label_re!r} in each file's path")
        if self.kind == "csv":
            multi = f", multi-label split on {self.label_delim!r}" if self.label_delim else ""
            lines.append(f"  labels: {self.labels} (file column {self.fname_col!r}, label column {self.label_col!r}"
                         f"{', suffix ' + repr(self.suffix) if self.suffix else ''}{multi})")
        return lines + [f"  {n}" for n in self.notes]


def _dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _pick(root: Path, given: str | None, names: tuple[str, ...], role: str, flag: str) -> str | None:
    """The folder for `role`: the one given (checked), else the only one of `names` present, else None."""
    if given is not None:
        if not (root / given).is_dir():
            raise DataError(f"{flag} {given}: {root / given} is not a folder. Folders in {root}: "
                            f"{', '.join(_dirs(root)) or 'none'}.")
        return given
    found = [n for n in names if (root / n).is_dir()]
    if len(found) > 1:
        raise DataError(f"{root} has several {role} folders: {', '.join(found)}. Pass {flag} NAME to say which "
                        f"one is the {role} set (e.g. {flag} {found[0]}).")
    return found[0] if found else None


def _has_class_folders(folder: Path) -> bool:
    return any(scan_images(d, recursive=False).files for d in folder.iterdir()
               if d.is_dir() and not d.name.startswith("."))


def _loose_images(folder: Path) -> list[Path]:
    return scan_images(folder, recursive=False).files


def find_test_folder(root: str | os.PathLike) -> Path | None:
    """The test folder of a data folder (test, test1 or testing), or None; several is an error."""
    root = Path(root)
    name = _pick(root, None, TEST_NAMES, "test", "--test") if root.is_dir() else None
    return root / name if name else None


def detect_layout(root: str | os.PathLike, train: str | None = None, valid: str | None = None,
                  test: str | None = None, label_re: str | None = None, labels: str | os.PathLike | None = None,
                  fname_col: str | int | None = None, label_col: str | int | None = None,
                  label_delim: str | None = None, suffix: str | None = None, folder: str | None = None,
                  valid_pct: float | None = None) -> Layout:
    """Work out the layout of `root`; every argument overrides a guess. Raises DataError, naming what was found
    and the flag that settles it, when the layout is ambiguous."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} {'is not a folder' if root.exists() else 'does not exist'}. Pass the folder that "
                        f"holds your images (e.g. DATA/train/<class>/*.jpg).")
    test = _pick(root, test, TEST_NAMES, "test", "--test")
    valid = _pick(root, valid, VALID_NAMES, "validation", "--valid")
    if train is None and (root / "train").is_dir():
        train = "train"
    elif train is not None and not (root / train).is_dir():
        raise DataError(f"--train {train}: {root / train} is not a folder. Folders in {root}: "
                        f"{', '.join(_dirs(root)) or 'none'}.")
    labels_file = _labels_file(root, labels)
    if labels_file is not None and label_re is None:
        folder = folder or train or ("train" if (root / "train").is_dir() else None)
        images = root / folder if folder else root
        if labels is not None or not (images.is_dir() and _has_class_folders(images)):
            layout = _csv_layout(root, labels_file, images, folder, fname_col, label_col, label_delim, suffix)
            layout.test = test
            if valid is not None:
                layout.notes.append(f"not used: {root / valid} (the CSV labels the images; valid = "
                                    f"{_pct(valid_pct)} of its rows)")
                layout.valid = None
            _unused(root, layout)
            return layout
    train_dir = root / train if train else root
    layout: Layout
    if label_re is not None or (train and not _has_class_folders(train_dir) and _loose_images(train_dir)):
        layout = _name_re_layout(root, train_dir, train, valid, label_re)
    else:
        layout = Layout(root, "folders", train=train, valid=valid)
        if train is None:
            layout.valid = None
            if valid is not None:
                layout.notes.append(f"not used: {root / valid} (no train/ folder next to it; pass --train NAME)")
        if labels_file is not None:
            layout.notes.append(f"not used: {labels_file.name} (the class folders label the images; pass --labels "
                                f"{labels_file.name} to use it instead)")
    layout.test = test
    if layout.valid is not None and valid_pct is not None:
        layout.notes.append(f"not used: {root / layout.valid} (valid_pct={valid_pct} splits train instead)")
        layout.valid = None
    if layout.train and layout.valid is None and valid_pct is None:
        layout.notes.append(f"no validation folder ({'/, '.join(VALID_NAMES)}/): valid = 20% of train per class")
    _unused(root, layout)
    return layout


def _pct(valid_pct: float | None) -> str:
    return f"{(0.2 if valid_pct is None else valid_pct):.0%}"


def _unused(root: Path, layout: Layout) -> None:
    """Name the folders of `root` that hold images but play no part, with the reason."""
    used = {layout.train, layout.valid, layout.test, layout.folder} - {None}
    if layout.kind == "folders" and layout.train is None:
        return  # DATA's sub-folders are the classes
    for name in _dirs(root):
        if name in used:
            continue
        if not scan_images(root / name).files:
            continue
        if name in VALID_NAMES and layout.valid is not None:
            layout.notes.append(f"not used: {root / name} (--valid {layout.valid} is the validation set)")
        elif name in TEST_NAMES and layout.test is not None:
            layout.notes.append(f"not used: {root / name} (--test {layout.test} is the test set)")
        elif name not in VALID_NAMES and name not in TEST_NAMES:
            layout.notes.append(f"not used: {root / name} (not a train/valid/test folder name; pass --train, "
                                f"--valid or --test {name} to use it)")


def _labels_file(root: Path, labels: str | os.PathLike | None) -> Path | None:
    if labels is not None:
        path = Path(labels) if Path(labels).is_absolute() else root / labels
        if not path.is_file():
            raise DataError(f"--labels {labels}: {path} does not exist. CSV files in {root}: "
                            f"{', '.join(p.name for p in sorted(root.glob('*.csv'))) or 'none'}.")
        return path
    found = [root / n for n in LABEL_FILES if (root / n).is_file()]
    return found[0] if found else None


# ---------------------------------------------------------------------------- labels in the file names
def propose_label_re(files: list[Path]) -> str:
    """The regular expression whose first group is the class in these file names (visiontune's default
    proposal: the name before a trailing number)."""
    return NAME_RE


def _name_re_layout(root: Path, train_dir: Path, train: str | None, valid: str | None, label_re: str | None) -> Layout:
    files = _loose_images(train_dir)
    if not files:
        raise DataError(f"{train_dir} has no images directly in it, and no class folders with images. Expected "
                        f"{train_dir}/<class>/*.jpg or file names that carry the class ({train_dir}/cat.0.jpg).")
    pat = label_re or propose_label_re(files)
    rx = _compile(pat, "--label-re", DataError, NAME_RE)
    labels, unmatched = [], []
    for f in files:
        m = rx.search(f.as_posix())
        (labels.append(m.group(1)) if m and m.group(1) else unmatched.append(f.name))
    counts = Counter(labels)
    problem = None
    if unmatched:
        problem = f"{len(unmatched)} of {len(files)} file names do not match it (e.g. {', '.join(unmatched[:3])})"
    elif len(counts) < 2:
        problem = f"it gives a single class ({', '.join(counts) or 'none'})"
    elif min(counts.values()) == 1:
        ones = [c for c, k in counts.items() if k == 1]
        problem = f"{len(ones)} classes have a single file (e.g. {', '.join(ones[:3])}): probably not the class"
    if problem:
        shown = f"{train_dir.name}/{files[0].name}" if files else ""
        raise DataError(f"{train_dir} holds {len(files)} images without class folders ({shown}, ...), so the class "
                        f"must come from the file names; the pattern {pat!r} does not settle it: {problem}. Pass "
                        f"the regular expression whose first group is the class, e.g. --label-re "
                        f"'{NAME_RE}', or put the images in one folder per class.")
    layout = Layout(root, "name_re", train=train, valid=valid, label_re=pat)
    layout.notes.append(f"{len(counts)} classes from the file names: " + ", ".join(
        f"{c} ({k})" for c, k in sorted(counts.items())[:8]) + (" ..." if len(counts) > 8 else ""))
    return layout


# ---------------------------------------------------------------------------- a labels CSV
def _read_head(path: Path, n: int = 2000) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = []
        for i, r in enumerate(csv.reader(f)):
            if i > n:
                break
            if r and any(c.strip() for c in r):
                rows.append([c.strip() for c in r])
    if not rows:
        raise DataError(f"{path} is empty.")
    return rows[0], rows[1:]


def _csv_layout(root: Path, path: Path, images: Path, folder: str | None, fname_col, label_col, label_delim,
                suffix) -> Layout:
    header, rows = _read_head(path)
    if not images.is_dir():
        raise DataError(f"{path.name} labels images, but {images} is not a folder. Pass --folder NAME (the folder "
                        f"of {root} that holds the images).")
    on_disk = {p.name for p in images.iterdir() if is_image_file(p.name)}
    stems = {Path(n).stem: Path(n).suffix for n in on_disk}
    lower = [h.lower() for h in header]

    def column(given, preferred: tuple[str, ...], what: str, avoid: int | None = None) -> int:
        if given is not None:
            if isinstance(given, int) or str(given).isdigit():
                return int(given)
            if given not in header:
                raise DataError(f"--{what}-col {given!r} is not a column of {path}. Columns: {', '.join(header)}.")
            return header.index(given)
        for name in preferred:
            if name in lower and lower.index(name) != avoid:
                return lower.index(name)
        return -1

    fi = column(fname_col, FILE_COLUMNS, "fname")
    if fi < 0:  # the column whose values name files on disk
        for j in range(len(header)):
            vals = [r[j] for r in rows if j < len(r)][:200]
            if vals and sum(v in on_disk or v in stems for v in vals) >= 0.8 * len(vals):
                fi = j
                break
    if fi < 0:
        raise DataError(f"No column of {path} names the images in {images} (columns: {', '.join(header)}). Pass "
                        f"--fname-col NAME and, if the names lack the extension, --suffix .jpg.")
    li = column(label_col, LABEL_COLUMNS, "label", avoid=fi)
    if li < 0:
        others = [j for j in range(len(header)) if j != fi]
        if len(others) != 1:
            raise DataError(f"{path} has columns {', '.join(header)}: which one holds the labels? Pass --label-col "
                            f"NAME.")
        li = others[0]
    names = [r[fi] for r in rows if fi < len(r)]
    if suffix is None:
        if names and sum(n in on_disk for n in names[:200]) < 0.5 * min(len(names), 200):
            exts = Counter(stems.get(n) for n in names[:200] if n in stems)
            suffix = exts.most_common(1)[0][0] if exts else None
            if not suffix:
                raise DataError(f"The {header[fi]!r} column of {path} does not match the files in {images} (e.g. "
                                f"{', '.join(names[:3])} vs {', '.join(sorted(on_disk)[:3])}). Check --folder and "
                                f"--suffix (e.g. --suffix .jpg), or pass --fname-col.")
        else:
            suffix = ""
    cells = [r[li] for r in rows if li < len(r)]
    if label_delim is None and cells and sum(" " in c.strip() for c in cells) >= 0.05 * len(cells):
        label_delim = " "  # Planet's 'haze primary water'
    layout = Layout(root, "csv", labels=str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
                    fname_col=header[fi], label_col=header[li], label_delim=label_delim, suffix=suffix or "",
                    folder=folder)
    guessed = "" if fname_col is not None and label_col is not None else " (guessed: --fname-col/--label-col to change)"
    layout.notes.append(f"file column {header[fi]!r}, label column {header[li]!r}{guessed}")
    return layout

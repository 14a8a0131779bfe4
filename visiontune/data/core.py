"""ImageData: labelled train/valid (and optional test) image sets, and the loaders built from them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .._core.allocator import worker_init
from .._core.distributed import make_sampler
from .._core.errors import ConfigError, DataError, bad_value
from .._core.paths import cache_home
from .balance import (
    FEW,
    IMBALANCED,
    BalancedSampler,
    counts,
    imbalance_ratio,
    item_weights,
)
from .cache import CachedPixels, ImageCache, resolve_cache
from .dataset import BadFiles, FilePixels, ImageDataset, OffsetPixels
from .labels import (
    DEFAULT_PAT,
    Labelled,
    check_classes,
    folder_labels,
    name_re_labels,
    read_csv,
    split,
    table_labels,
)
from .loader import EpochSampler, ImageLoader, collate_skip_none
from .sources import scan_images
from .transforms import AugmentConfig, presize, train_transform, valid_transform

Split = tuple[list[Path], np.ndarray]


def _root(path: str | os.PathLike, expected: str) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root} does not exist. Pass the folder that holds {expected}.")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder. Pass the folder that holds {expected}.")
    return root


def _test_files(root: Path, test: str | os.PathLike | None) -> tuple[list[Path] | None, int]:
    """Images of the unlabelled `root/test` folder in file (sorted path) order, and ignored files."""
    if test is None:
        return None, 0
    test_dir = root / test
    if not test_dir.is_dir():
        raise DataError(f"Test folder {test_dir} does not exist.")
    scan = scan_images(test_dir)
    if not scan.files:
        raise DataError(f"Test folder {test_dir} has no images.")
    return scan.files, scan.ignored


def loader_workers(device: torch.device | str = "cpu") -> int:
    """Decoding processes for a device: none on a small CPU machine (the model needs every core), a few on a
    larger one, up to 8 feeding a GPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.device(device).type == "cpu":
        return 0 if cores <= 4 else min(4, cores // 4)
    return max(0, min(8, cores - 1))


class ImageData:
    """Train/valid/test image sets with their classes, image size, batch size and augmentation.

    Build it with a `from_*` constructor, e.g. ``ImageData.from_folder("data/dogscats", size=224)``.
    `cache` ('auto' | 'on' | 'off' | a folder) keeps decoded, pre-sized pixels on disk so epochs after
    the first skip decoding; 'auto' caches under the visiontune cache unless the disk is short of space.
    `sampler` ('auto' | 'balanced' | None): 'balanced' draws every class equally often (an epoch keeps the
    data's length); 'auto' does so when single-label training classes are lopsided (> 5:1), the default.
    """

    def __init__(
        self,
        path: Path,
        train: Split,
        valid: Split,
        classes: Sequence[str],
        test: list[Path] | None = None,
        size: int = 224,
        bs: int = 64,
        augment: str | None = None,
        num_workers: int | None = None,
        seed: int = 42,
        ignored: int = 0,
        notes: Sequence[str] = (),
        cache: str | os.PathLike | bool | None = "auto",
        sampler: str | None = "auto",
        **aug_kwargs,
    ):
        if size < 8:
            raise bad_value("size", size, "at least 8 pixels")
        if bs < 1:
            raise bad_value("bs", bs, "a positive batch size")
        self.sampler = sampler
        self.path = Path(path)
        self.classes = list(classes)
        self.size, self.bs, self.seed = int(size), int(bs), int(seed)
        self.num_workers = num_workers
        self.aug = AugmentConfig(augment=augment, **aug_kwargs)
        self.ignored = ignored
        self.notes = list(notes)
        self.bad = BadFiles()
        self.presize = presize(self.size)
        self.cache = cache
        tr_files, tr_y = train
        va_files, va_y = valid
        self._all_files = list(tr_files) + list(va_files) + list(test or [])
        self.pixels = self._make_pixels(self._all_files)
        n_tr, n_va = len(tr_files), len(va_files)

        def make(files, y, transform, offset):
            return ImageDataset(files, y, self.classes, transform, OffsetPixels(self.pixels, offset), self.bad, self.seed)

        self.train_ds = make(tr_files, tr_y, train_transform(self.size, self.aug), 0)
        self.valid_ds = make(va_files, va_y, valid_transform(self.size), n_tr)
        self.test_ds = make(test, None, valid_transform(self.size), n_tr + n_va) if test is not None else None

    def _make_pixels(self, files: list[Path]) -> Callable[[int], torch.Tensor]:
        """The pixel source for every file: the image cache, or decoding each time when it is off."""
        root, auto = resolve_cache(self.cache, self.cache_dir / "images")
        if root is None:
            return FilePixels(files, self.presize)
        return CachedPixels(files, self.presize, ImageCache(root, self.presize), self.bad, auto=auto)

    @classmethod
    def _from_labelled(cls, root: Path, lab: Labelled, source: str, valid_pct: float | None, seed: int,
                       test: str | os.PathLike | None, **kwargs) -> "ImageData":
        """Split a label source's files into train/valid, add the test folder, build the ImageData."""
        check_classes(lab, source)
        tr, va, note = split(lab, valid_pct, seed)
        test_files, test_ignored = _test_files(root, test)
        notes = lab.notes + ([note] if note else [])
        return cls(root, tr, va, lab.classes, test=test_files, seed=seed, ignored=lab.ignored + test_ignored,
                   notes=notes, **kwargs)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        train: str = "train",
        valid: str = "valid",
        test: str | None = None,
        valid_pct: float | None = None,
        seed: int = 42,
        size: int = 224,
        bs: int = 64,
        augment: str | None = None,
        num_workers: int | None = None,
        exclude: tuple[str, ...] = (),
        **kwargs,
    ) -> "ImageData":
        """ImageNet-style folders: `path/train/<class>/*.jpg` and `path/valid/<class>/*.jpg`.

        Without a valid folder (or with `valid_pct` given), `valid_pct` (default 0.2) of train is
        split off per class, deterministically by `seed`. A folder of class folders without a
        `train` level works too. `test="test1"` adds an unlabelled set (`data.test_ds`) in file order.
        """
        root = _root(path, f"{train}/<class>/ image folders")
        lab = folder_labels(root, train, valid, valid_pct, exclude=exclude)
        return cls._from_labelled(root, lab, str(root), valid_pct, seed, test, size=size, bs=bs, augment=augment,
                                  num_workers=num_workers, **kwargs)

    @classmethod
    def from_name_re(
        cls,
        path: str | os.PathLike,
        fnames: Sequence[str | os.PathLike] | None = None,
        pat: str = DEFAULT_PAT,
        valid_pct: float = 0.2,
        seed: int = 42,
        test: str | None = None,
        size: int = 224,
        bs: int = 64,
        augment: str | None = None,
        **kwargs,
    ) -> "ImageData":
        """Labels from file names: the first group of the regular expression `pat`, searched in each
        file's path (Oxford-IIIT Pets: `images/great_pyrenees_173.jpg` -> 'great_pyrenees').

        `fnames` defaults to every image under `path` (but the `test` folder). A file the pattern does
        not match is an error listing the first few such files and the pattern.
        """
        root = _root(path, "the images")
        lab = name_re_labels(root, fnames, pat, exclude=root / test if test is not None else None)
        return cls._from_labelled(root, lab, f"{root} with pat {pat!r}", valid_pct, seed, test, size=size, bs=bs,
                                  augment=augment, **kwargs)

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike,
        csv_labels: str | os.PathLike = "labels.csv",
        folder: str = "train",
        fn_col: int | str = 0,
        label_col: int | str | Sequence[int | str] = 1,
        suffix: str = "",
        label_delim: str | None = None,
        valid_pct: float | None = None,
        seed: int = 42,
        test: str | None = None,
        header: bool = True,
        delimiter: str = ",",
        valid_col: int | str | None = None,
        on_missing: str = "error",
        size: int = 224,
        bs: int = 64,
        augment: str | None = None,
        **kwargs,
    ) -> "ImageData":
        """Labels from a CSV file: `path/csv_labels` has a file-name column and a label column; images
        are `path/folder/<name><suffix>`.

        `label_delim=" "` makes the data multi-label (Planet: 'haze primary water'): targets are
        multi-hot, the learner uses sigmoid + BCE, and `predict` returns the labels above `learn.thresh`.
        A list of `label_col`s reads one-hot columns. `valid_col` marks validation rows (else `valid_pct`,
        default 0.2, is split off). Rows naming missing files are an error, or dropped and counted with
        `on_missing="skip"`. Pandas is not needed.
        """
        root = _root(path, f"{csv_labels} and the {folder}/ image folder")
        csv_path = Path(csv_labels) if Path(csv_labels).is_absolute() else root / csv_labels
        table = read_csv(csv_path, header=header, delimiter=delimiter)
        lab = table_labels(table, root / folder, fn_col, label_col, suffix, label_delim, on_missing, valid_col)
        return cls._from_labelled(root, lab, str(csv_path), valid_pct, seed, test, size=size, bs=bs,
                                  augment=augment, **kwargs)

    @classmethod
    def from_df(
        cls,
        path: str | os.PathLike,
        df,
        folder: str = "train",
        fn_col: int | str = 0,
        label_col: int | str | Sequence[int | str] = 1,
        suffix: str = "",
        label_delim: str | None = None,
        valid_pct: float | None = None,
        seed: int = 42,
        test: str | None = None,
        valid_col: int | str | None = None,
        on_missing: str = "error",
        size: int = 224,
        bs: int = 64,
        augment: str | None = None,
        **kwargs,
    ) -> "ImageData":
        """Labels from a pandas DataFrame, with the same columns and options as `from_csv`."""
        from .labels import frame_table

        if not (hasattr(df, "columns") and hasattr(df, "__getitem__")):
            raise ConfigError(f"df must be a pandas DataFrame, got {type(df).__name__}. For a CSV file use from_csv.")
        root = _root(path, f"the {folder}/ image folder")
        lab = table_labels(frame_table(df), root / folder, fn_col, label_col, suffix, label_delim, on_missing,
                           valid_col)
        return cls._from_labelled(root, lab, "the DataFrame", valid_pct, seed, test, size=size, bs=bs,
                                  augment=augment, **kwargs)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike,
        train: str | None = None,
        valid: str | None = None,
        test: str | None = None,
        label_re: str | None = None,
        labels: str | os.PathLike | None = None,
        fname_col: int | str | None = None,
        label_col: int | str | None = None,
        label_delim: str | None = None,
        suffix: str | None = None,
        folder: str | None = None,
        valid_pct: float | None = None,
        seed: int = 42,
        size: int = 224,
        bs: int = 64,
        augment: str | None = None,
        **kwargs,
    ) -> "ImageData":
        """The one entry point for a downloaded data set: detects the layout (class folders with `valid/`, `val/`,
        `validation/` or `dev/`; class names in the file names, Kaggle style; a `labels.csv`/`train.csv`; a `test/`,
        `test1/` or `testing/` folder) and dispatches to from_folder, from_name_re or from_csv. Every argument
        overrides a guess; `data.layout` says what was recognised (`visiontune train` prints it)."""
        from .layout import detect_layout

        lay = detect_layout(path, train=train, valid=valid, test=test, label_re=label_re, labels=labels,
                            fname_col=fname_col, label_col=label_col, label_delim=label_delim, suffix=suffix,
                            folder=folder, valid_pct=valid_pct)
        on_missing = kwargs.pop("on_missing", "skip")  # a CSV row whose file is gone: counted, listed, left out
        common = dict(seed=seed, size=size, bs=bs, augment=augment, test=lay.test, **kwargs)
        if lay.kind == "csv":
            data = cls.from_csv(lay.root, lay.labels, folder=lay.folder or ".", fn_col=lay.fname_col,
                                label_col=lay.label_col, suffix=lay.suffix or "", label_delim=lay.label_delim,
                                valid_pct=valid_pct, on_missing=on_missing, **common)
        elif lay.kind == "name_re":
            data = cls._from_name_re_folders(lay, valid_pct, **common)
        else:
            exclude = tuple(n for n in (lay.test, valid) if n)
            data = cls.from_folder(lay.root, train=lay.train or "train", valid=lay.valid or "valid",
                                   valid_pct=valid_pct,
                                   exclude=exclude, **common)
        data.layout = lay
        return data

    @classmethod
    def _from_name_re_folders(cls, lay, valid_pct: float | None, **kwargs) -> "ImageData":
        """Labels from the file names of the train folder (and of the valid folder, marked valid)."""
        import numpy as np

        root = lay.root
        train_files = scan_images(root / lay.train, recursive=False).files
        valid_files = scan_images(root / lay.valid, recursive=False).files if lay.valid else []
        lab = name_re_labels(root, train_files + valid_files, lay.label_re)
        if valid_files and valid_pct is None:
            lab.is_valid = np.asarray([False] * len(train_files) + [True] * len(valid_files))
            only_valid = sorted(set(lab.targets[lab.is_valid].tolist()) - set(lab.targets[~lab.is_valid].tolist()))
            if only_valid:
                names = ", ".join(lab.classes[i] for i in only_valid)
                raise DataError(f"{root / lay.valid} has classes that {root / lay.train} lacks: {names}. Every valid "
                                f"class needs training images.")
        test = kwargs.pop("test")
        seed = kwargs.pop("seed")
        return cls._from_labelled(root, lab, f"{root / lay.train} with label_re {lay.label_re!r}", valid_pct, seed,
                                  test, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def c(self) -> int:
        """Number of classes (outputs of the model)."""
        return len(self.classes)

    @property
    def is_multi_label(self) -> bool:
        return self.train_ds.targets is not None and self.train_ds.targets.ndim == 2

    @property
    def valid_labels(self) -> np.ndarray:
        """Targets of the valid set in file order: class indices (multi-hot rows when multi-label)."""
        return self.valid_ds.targets

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def cache_dir(self) -> Path:
        """This data's folder under the visiontune cache (image cache, precomputed activations)."""
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:10]
        return cache_home() / "data" / f"{self.path.name or 'data'}-{digest}"

    def dataset(self, ds: str) -> ImageDataset:
        """'train' | 'valid' | 'test' -> that dataset."""
        table = {"train": self.train_ds, "valid": self.valid_ds, "test": self.test_ds}
        if ds not in table:
            raise bad_value("ds", ds, "'train', 'valid' or 'test'")
        if table[ds] is None:
            raise ConfigError("This data has no test set: pass test='<folder>' to ImageData.from_folder.")
        return table[ds]

    def default_workers(self, device: torch.device | str = "cpu") -> int:
        """Loader worker processes: `num_workers` if given, else sized to the machine (`loader_workers`)."""
        return loader_workers(device) if self.num_workers is None else self.num_workers

    def loader(
        self,
        ds: str | ImageDataset = "train",
        bs: int | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        augment: bool = True,
        device: torch.device | str = "cpu",
        sampler=None,
    ) -> ImageLoader:
        """A DataLoader of uint8 batches. Train shuffles (seeded per epoch) and drops the last partial
        batch; `augment=False` gives train images the valid transform (precompute, TTA baselines).

        Fills the image cache for the dataset first (decoding only new or changed files). Each
        iteration draws new augmentations; `loader.sampler.set_epoch(e)` makes epoch e's repeatable."""
        name = ds if isinstance(ds, str) else None
        dset = self.dataset(ds) if isinstance(ds, str) else ds
        dset.prepare()
        is_train = name == "train"
        if is_train and not augment:
            dset = dset.with_transform(valid_transform(self.size))
        bs = bs or self.bs
        shuffle = is_train and augment if shuffle is None else shuffle
        if drop_last is None:
            drop_last = bool(is_train and augment and len(dset) > bs)
        workers = self.default_workers(device)
        if workers > 0:
            dset.aug_state.share_memory_()
        if sampler is None and is_train and shuffle and self.sampler == "balanced":
            sampler = self.balanced_sampler(dset, dset.targets)
        return ImageLoader(
            dset,
            batch_size=bs,
            sampler=sampler if sampler is not None else (
                make_sampler(len(dset), shuffle, self.seed, drop_last, dset)
                or EpochSampler(len(dset), shuffle, self.seed, dataset=dset)),
            drop_last=drop_last,
            num_workers=workers,
            collate_fn=collate_skip_none,
            pin_memory=torch.device(device).type == "cuda",
            persistent_workers=workers > 0,
            worker_init_fn=worker_init if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.seed),  # worker seeds, without touching torch's global RNG
        )

    def balanced_sampler(self, dataset, targets) -> BalancedSampler:
        """The `sampler="balanced"` sampler over `targets` (images or cached features), sharded under torchrun."""
        from .._core.distributed import rank, world_size

        return BalancedSampler(item_weights(targets, self.c), self.seed, dataset, rank(), world_size())

    # ------------------------------------------------------------------ balance
    @property
    def sampler(self) -> str | None:
        """'balanced' or None: what the training loader does ('auto' resolved from the train counts)."""
        if self._sampler == "auto":
            return "balanced" if self.balances_automatically else None
        return self._sampler

    @sampler.setter
    def sampler(self, value: str | None) -> None:
        if value not in (None, "auto", "balanced"):
            raise bad_value("sampler", value, "'auto', 'balanced' or None")
        self._sampler = value

    @property
    def balances_automatically(self) -> bool:
        """True when `sampler='auto'` turns balanced sampling on: single-label classes lopsided past 5:1."""
        return self._sampler == "auto" and not self.is_multi_label and self.is_imbalanced

    def class_counts(self, ds: str = "train") -> dict[str, int]:
        """Images per class in `ds` (multi-label: images carrying each label)."""
        d = self.dataset(ds)
        return dict(zip(self.classes, counts(d.targets, self.c).tolist())) if d.targets is not None else {}

    @property
    def imbalance_ratio(self) -> float:
        """Largest training class over the smallest (1.0 when balanced; above 5 is lopsided)."""
        return imbalance_ratio(np.asarray(list(self.class_counts().values())))

    @property
    def is_imbalanced(self) -> bool:
        return self.imbalance_ratio > IMBALANCED

    def balance_lines(self) -> list[str]:
        """Counts per class and the imbalance ratio, with a warning and the fix when the data is lopsided or a
        class is tiny (what `visiontune train` prints)."""
        per = self.class_counts()
        if not per:
            return []
        shown = ", ".join(f"{c} {n}" for c, n in sorted(per.items(), key=lambda kv: -kv[1])[:12])
        ratio = self.imbalance_ratio
        lines = [f"train images per class: {shown}{' ...' if len(per) > 12 else ''} (imbalance {ratio:.1f}:1)"]
        if ratio > IMBALANCED:
            fix = ("visiontune samples every class equally often in training (balanced sampling: --no-balanced "
                   "turns it off, --class-weights auto weights the loss instead)" if self.sampler == "balanced" else
                   "visiontune weights the loss by inverse class frequency (class_weights='auto'; --class-weights "
                   "none turns it off)")
            lines.append(f"warning: lopsided data ({ratio:.1f}:1 > {IMBALANCED:.0f}:1): accuracy hides the rare classes. "
                         f"{fix}; balanced_accuracy joins the metrics.")
        few = [c for c, n in per.items() if n < FEW]
        if few:
            lines.append(f"warning: {len(few)} classes have fewer than {FEW} training images ({', '.join(few[:5])}): "
                         "add pictures of them, or expect them to be learned poorly.")
        return lines

    # ------------------------------------------------------------------ reporting

    def fingerprint(self) -> str:
        """Hash of the ordered file lists with sizes and mtimes, classes and size: changes when the data does."""
        h = hashlib.sha256()
        h.update(repr((self.classes, self.size)).encode())
        for name, d in (("train", self.train_ds), ("valid", self.valid_ds), ("test", self.test_ds)):
            if d is None:
                continue
            h.update(name.encode())
            for f, t in zip(d.files, d.targets if d.targets is not None else [None] * len(d.files)):
                try:
                    st = f.stat()
                    h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{t}\n".encode())
                except OSError:
                    h.update(f"{f}\0missing\n".encode())
        return h.hexdigest()[:16]

    def layout_lines(self) -> list[str]:
        """What `from_path` recognised: the layout, the train/valid/test folders with their image counts, the
        folders not used and why ([] for data built by the other constructors)."""
        if getattr(self, "layout", None) is None:
            return []
        n_tr, n_va = len(self.train_ds), len(self.valid_ds)
        held = self.layout.valid is None
        counts = {"train": f"{n_tr + n_va} images: {n_tr} train, {n_va} held out as valid" if held else
                  f"{n_tr} images", "valid": f"{n_va} images"}
        if self.test_ds is not None:
            counts["test"] = f"{len(self.test_ds)} images, unlabelled"
        return self.layout.describe(counts)

    def summary(self) -> str:
        """One paragraph a person reads before training: counts, classes, notes, skipped files."""
        n_tr, n_va = len(self.train_ds), len(self.valid_ds)
        cls = ", ".join(self.classes[:10]) + (f", ... ({self.c} in all)" if self.c > 10 else "")
        lines = [f"{self.path}: {n_tr} train / {n_va} valid images, {self.c} classes ({cls})"]
        if self.test_ds is not None:
            lines.append(f"test: {len(self.test_ds)} unlabelled images")
        if self.is_multi_label:
            lines.append(f"multi-label: {float(self.train_ds.targets.sum(1).mean()):.1f} labels per image on average")
        lines.append(f"size {self.size}, batch size {self.bs}, augment {self.aug.augment}"
                     + (", balanced sampling" if self.sampler == "balanced" else ""))
        lines += self.balance_lines()
        lines.append(self.cache_summary())
        lines += self.notes
        if self.ignored:
            lines.append(f"ignored {self.ignored} non-image files")
        if len(self.bad):
            lines.append(f"skipped {len(self.bad)} images that could not be decoded")
        return "\n".join(lines)

    def cache_summary(self) -> str:
        """Where decoded images are cached, or why they are not."""
        if isinstance(self.pixels, CachedPixels):
            return self.pixels.disabled or f"image cache: {self.pixels.cache.dir}"
        return "image cache: off"

    def show_batch(self, path: str | os.PathLike | None = None, ds: str = "train", n: int = 9,
                   augment: bool = True, ncols: int | None = None):
        """A grid of `n` images of `ds` with their labels (train images augmented unless `augment=False`)
        -> matplotlib Figure, also written as PNG to `path` when given. Look before you train."""
        from .show import show_batch

        return show_batch(self, path, ds, n, augment, ncols)

    def __repr__(self) -> str:
        return f"ImageData({self.summary().splitlines()[0]})"

"""ImageData: labelled train/valid (and optional test) image sets, and the loaders built from them."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..distributed import make_sampler
from ..errors import ConfigError, DataError
from .decode import ImageDecodeError, open_image
from .loader import EpochSampler, collate_skip_none
from .sources import read_class_folders, scan_images, stratified_split
from .transforms import AugmentConfig, pil_to_uint8, presize, train_transform, valid_transform

log = logging.getLogger("visiontune")


class BadFiles:
    """Files that failed to decode: each is warned about once and counted for the summary."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, path: Path, reason: str) -> None:
        with self._lock:
            if str(path) in self.paths:
                return
            self.paths[str(path)] = reason
        warnings.warn(f"Skipping {reason}", stacklevel=3)

    def __len__(self) -> int:
        return len(self.paths)


class FilePixels:
    """Decodes file i into a uint8 (3, H, W) tensor whose short side is `short_side`."""

    def __init__(self, files: Sequence[Path], short_side: int):
        self.files, self.short_side = list(files), short_side

    def __call__(self, i: int) -> torch.Tensor:
        return pil_to_uint8(open_image(self.files[i], min_size=self.short_side), self.short_side)


class OffsetPixels:
    """Item i of a dataset is item `offset + i` of a pixel source shared by train, valid and test."""

    def __init__(self, source: Callable[[int], torch.Tensor], offset: int):
        self.source, self.offset = source, offset

    def __call__(self, i: int) -> torch.Tensor:
        return self.source(self.offset + i)


class ImageDataset(Dataset):
    """Images (files) with targets (int class indices, multi-hot rows, or None for unlabelled sets).

    `item i` -> (uint8 image tensor after `transform`, target, i); None when the file cannot be
    decoded (the loader's collate leaves it out and the file is reported once).
    """

    def __init__(
        self,
        files: Sequence[Path],
        targets: np.ndarray | None,
        classes: Sequence[str],
        transform: Callable[[torch.Tensor], torch.Tensor],
        pixels: Callable[[int], torch.Tensor],
        bad: BadFiles,
    ):
        self.files = list(files)
        self.targets = targets
        self.classes = list(classes)
        self.transform, self.pixels, self.bad = transform, pixels, bad

    @property
    def is_labelled(self) -> bool:
        return self.targets is not None

    def __len__(self) -> int:
        return len(self.files)

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> "ImageDataset":
        """The same items under another transform (e.g. train images without augmentation)."""
        return ImageDataset(self.files, self.targets, self.classes, transform, self.pixels, self.bad)

    def target(self, i: int):
        if self.targets is None:
            return -1
        t = self.targets[i]
        return torch.as_tensor(t, dtype=torch.float32) if self.targets.ndim == 2 else int(t)

    def __getitem__(self, i: int):
        try:
            x = self.pixels(i)
        except ImageDecodeError as e:
            self.bad.add(self.files[i], str(e))
            return None
        return self.transform(x), self.target(i), i


class ImageData:
    """Train/valid/test image sets with their classes, image size, batch size and augmentation.

    Build it with a `from_*` constructor, e.g. ``ImageData.from_folder("data/dogscats", size=224)``.
    """

    def __init__(
        self,
        path: Path,
        train: tuple[list[Path], np.ndarray],
        valid: tuple[list[Path], np.ndarray],
        classes: Sequence[str],
        test: list[Path] | None = None,
        size: int = 224,
        bs: int = 64,
        augment: str | None = None,
        num_workers: int | None = None,
        seed: int = 42,
        ignored: int = 0,
        notes: Sequence[str] = (),
        **aug_kwargs,
    ):
        if size < 8:
            raise ConfigError(f"size must be at least 8 pixels, got {size}.")
        if bs < 1:
            raise ConfigError(f"bs must be a positive batch size, got {bs}.")
        self.path = Path(path)
        self.classes = list(classes)
        self.size, self.bs, self.seed = int(size), int(bs), int(seed)
        self.num_workers = num_workers
        self.aug = AugmentConfig(augment=augment, **aug_kwargs)
        self.ignored = ignored
        self.notes = list(notes)
        self.bad = BadFiles()
        self.mean: tuple[float, ...] = (0.485, 0.456, 0.406)
        self.std: tuple[float, ...] = (0.229, 0.224, 0.225)
        self.presize = presize(self.size)
        tr_files, tr_y = train
        va_files, va_y = valid
        self._all_files = list(tr_files) + list(va_files) + list(test or [])
        pixels = self._make_pixels(self._all_files)
        n_tr, n_va = len(tr_files), len(va_files)
        view = lambda offset: OffsetPixels(pixels, offset)  # noqa: E731
        self.train_ds = ImageDataset(tr_files, tr_y, self.classes, train_transform(self.size, self.aug), view(0), self.bad)
        self.valid_ds = ImageDataset(va_files, va_y, self.classes, valid_transform(self.size), view(n_tr), self.bad)
        self.test_ds = (
            ImageDataset(test, None, self.classes, valid_transform(self.size), view(n_tr + n_va), self.bad)
            if test is not None
            else None
        )

    def _make_pixels(self, files: list[Path]) -> Callable[[int], torch.Tensor]:
        return FilePixels(files, self.presize)

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
        **kwargs,
    ) -> "ImageData":
        """ImageNet-style folders: `path/train/<class>/*.jpg` and `path/valid/<class>/*.jpg`.

        Without a valid folder (or with `valid_pct` given), `valid_pct` (default 0.2) of train is
        split off per class, deterministically by `seed`. A folder of class folders without a
        `train` level works too. `test="test1"` adds an unlabelled set in file order.
        """
        root = Path(path).expanduser()
        if not root.exists():
            raise DataError(f"{root} does not exist. Pass the folder that holds {train}/<class>/ image folders.")
        if not root.is_dir():
            raise DataError(f"{root} is not a folder. Pass the folder that holds {train}/<class>/ image folders.")
        notes: list[str] = []
        train_dir = root / train
        if not train_dir.is_dir():
            if (root / valid).is_dir():
                raise DataError(f"{root} has {valid}/ but no {train}/ folder. Expected {root}/{train}/<class>/*.jpg.")
            train_dir = root
            notes.append(f"no {train}/ folder: using the class folders of {root} directly")
        files, labels, classes, ignored = read_class_folders(train_dir)
        y = np.asarray(labels, dtype=np.int64)
        valid_dir = root / valid
        if valid_pct is None and valid_dir.is_dir() and train_dir != root:
            va_files, va_labels, va_classes, va_ignored = read_class_folders_lenient(valid_dir)
            unknown = sorted(set(va_classes) - set(classes))
            if unknown:
                raise DataError(
                    f"{valid_dir} has class folders that {train_dir} lacks: {', '.join(unknown[:5])}. "
                    f"Every valid class needs training images."
                )
            index = {c: i for i, c in enumerate(classes)}
            va_y = np.asarray([index[va_classes[j]] for j in va_labels], dtype=np.int64)
            tr = (files, y)
            va = (va_files, va_y)
            ignored += va_ignored
        else:
            pct = 0.2 if valid_pct is None else float(valid_pct)
            tr_idx, va_idx = stratified_split(y, pct, seed)
            tr = ([files[i] for i in tr_idx], y[tr_idx])
            va = ([files[i] for i in va_idx], y[va_idx])
            notes.append(f"valid = {pct:.0%} of the training images per class (seed {seed})")
        test_files = None
        if test is not None:
            test_dir = root / test
            if not test_dir.is_dir():
                raise DataError(f"Test folder {test_dir} does not exist.")
            scan = scan_images(test_dir)
            if not scan.files:
                raise DataError(f"Test folder {test_dir} has no images.")
            test_files, ignored = scan.files, ignored + scan.ignored
        return cls(
            root, tr, va, classes, test=test_files, size=size, bs=bs, augment=augment,
            num_workers=num_workers, seed=seed, ignored=ignored, notes=notes, **kwargs,
        )

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
        from ..models.weights import cache_home

        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:10]
        return cache_home() / "data" / f"{self.path.name or 'data'}-{digest}"

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Use the backbone's statistics (the learner calls this)."""
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def dataset(self, ds: str) -> ImageDataset:
        """'train' | 'valid' | 'test' -> that dataset."""
        table = {"train": self.train_ds, "valid": self.valid_ds, "test": self.test_ds}
        if ds not in table:
            raise ConfigError(f"ds must be 'train', 'valid' or 'test', got {ds!r}.")
        if table[ds] is None:
            raise ConfigError("This data has no test set: pass test='<folder>' to ImageData.from_folder.")
        return table[ds]

    def default_workers(self, device: torch.device | str = "cpu") -> int:
        """Loader worker processes: none on a small CPU machine (the model needs every core), else up to 8."""
        if self.num_workers is not None:
            return self.num_workers
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if torch.device(device).type == "cpu":
            return 0 if cores <= 4 else min(4, cores // 4)
        return max(0, min(8, cores - 1))

    def loader(
        self,
        ds: str | ImageDataset = "train",
        bs: int | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
        augment: bool = True,
        device: torch.device | str = "cpu",
        sampler=None,
    ) -> DataLoader:
        """A DataLoader of uint8 batches. Train shuffles (seeded per epoch) and drops the last partial
        batch; `augment=False` gives train images the valid transform (precompute, TTA baselines)."""
        name = ds if isinstance(ds, str) else None
        dset = self.dataset(ds) if isinstance(ds, str) else ds
        is_train = name == "train"
        if is_train and not augment:
            dset = dset.with_transform(valid_transform(self.size))
        bs = bs or self.bs
        shuffle = is_train and augment if shuffle is None else shuffle
        if drop_last is None:
            drop_last = bool(is_train and augment and len(dset) > bs)
        workers = self.default_workers(device)
        if sampler is None:
            sampler = make_sampler(len(dset), shuffle, self.seed, drop_last, dset) or EpochSampler(len(dset), shuffle, self.seed)
        return DataLoader(
            dset,
            batch_size=bs,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            collate_fn=collate_skip_none,
            pin_memory=torch.device(device).type == "cuda",
            persistent_workers=workers > 0,
        )

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

    def summary(self) -> str:
        """One paragraph a person reads before training: counts, classes, notes, skipped files."""
        n_tr, n_va = len(self.train_ds), len(self.valid_ds)
        cls = ", ".join(self.classes[:10]) + (f", ... ({self.c} in all)" if self.c > 10 else "")
        lines = [f"{self.path}: {n_tr} train / {n_va} valid images, {self.c} classes ({cls})"]
        if self.test_ds is not None:
            lines.append(f"test: {len(self.test_ds)} unlabelled images")
        lines.append(f"size {self.size}, batch size {self.bs}, augment {self.aug.augment}")
        lines += self.notes
        if self.ignored:
            lines.append(f"ignored {self.ignored} non-image files")
        if len(self.bad):
            lines.append(f"skipped {len(self.bad)} images that could not be decoded")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"ImageData({self.summary().splitlines()[0]})"


def read_class_folders_lenient(path: Path) -> tuple[list[Path], list[int], list[str], int]:
    """Like read_class_folders, but a valid folder may hold a single class."""
    try:
        return read_class_folders(path)
    except DataError as e:
        if "single class" not in str(e):
            raise
        d = next(p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith("."))
        scan = scan_images(d, recursive=False)
        return scan.files, [0] * len(scan.files), [d.name], scan.ignored

"""Data for inference: what a loaded model knows about its images (`InferenceData`), and new files to
predict on (`image_files`, `files_dataset`)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch.utils.data import DataLoader

from .._core.allocator import worker_init
from .._core.errors import ConfigError, DataError
from ..data.core import BadFiles, FilePixels, ImageDataset, loader_workers
from ..data.decode import ImageDecodeError, is_image_file
from ..data.loader import EpochSampler, collate_skip_none
from ..data.sources import scan_images
from ..data.transforms import AugmentConfig, valid_transform
from ..data.transforms import (
    presize as presize_for,  # the name `presize` is an attribute here
)

_GLOB_CHARS = set("*?[")


class InferenceData:
    """The data stand-in of a learner rebuilt by `load_learner`: classes, image size and the training
    augmentation (for TTA), but no images (the normalization is the model's own). Predict on new files with `files_dataset`."""

    def __init__(
        self,
        classes: Sequence[str],
        size: int,
        is_multi_label: bool = False,
        presize: int | None = None,
        aug: AugmentConfig | None = None,
        path: str | os.PathLike = ".",
        bs: int = 64,
        num_workers: int | None = None,
    ):
        self.classes = list(classes)
        self.size = int(size)
        self.is_multi_label = bool(is_multi_label)
        self.presize = int(presize) if presize is not None else presize_for(self.size)
        self.aug = aug or AugmentConfig()
        self.path = Path(path)
        self.bs, self.num_workers, self.seed = int(bs), num_workers, 42
        self.bad = BadFiles()

    @classmethod
    def from_data(cls, data) -> "InferenceData":
        """The inference facts of a training `ImageData` (what `learn.export` stores)."""
        return cls(data.classes, data.size, bool(getattr(data, "is_multi_label", False)),
                   presize=getattr(data, "presize", None), aug=getattr(data, "aug", None),
                   path=getattr(data, "path", "."), bs=getattr(data, "bs", 64))

    def to_dict(self) -> dict:
        return {"classes": self.classes, "size": self.size, "presize": self.presize,
                "is_multi_label": self.is_multi_label, "augment": self.aug.to_dict()}

    @classmethod
    def from_dict(cls, d: dict, path: str | os.PathLike = ".") -> "InferenceData":
        known = set(AugmentConfig.__dataclass_fields__)
        aug = AugmentConfig(**{k: v for k, v in (d.get("augment") or {}).items() if k in known})
        return cls(d["classes"], d["size"], d.get("is_multi_label", False),
                   presize=d.get("presize"), aug=aug, path=path)

    @property
    def c(self) -> int:
        return len(self.classes)

    @property
    def name(self) -> str:
        return self.path.name

    def dataset(self, ds: str) -> ImageDataset:
        raise ConfigError(
            f"This learner was loaded from an exported model, so it has no {ds!r} set. Predict on images "
            f"instead: learn.get_preds(ds=[paths or folders]), learn.tta(ds='photos/'), learn.predict('cat.jpg')."
        )

    def default_workers(self, device: torch.device | str = "cpu") -> int:
        """Decoding processes: `num_workers` if given, else sized to the machine (`loader_workers`)."""
        return loader_workers(device) if self.num_workers is None else self.num_workers

    def loader(self, ds, bs: int | None = None, shuffle: bool | None = None, drop_last: bool | None = None,
               augment: bool = True, device: torch.device | str = "cpu", sampler=None) -> DataLoader:
        """A DataLoader of uint8 batches over an ImageDataset, in order (the contract of ImageData.loader)."""
        if isinstance(ds, str):
            self.dataset(ds)
        workers = self.default_workers(device)
        return DataLoader(
            ds, batch_size=bs or self.bs,
            sampler=sampler if sampler is not None else EpochSampler(len(ds), bool(shuffle), self.seed),
            drop_last=bool(drop_last), num_workers=workers, collate_fn=collate_skip_none,
            pin_memory=torch.device(device).type == "cuda", persistent_workers=False,
            worker_init_fn=worker_init if workers > 0 else None,
        )

    def summary(self) -> str:
        kind = "multi-label" if self.is_multi_label else "single-label"
        cls = ", ".join(self.classes[:10]) + (f", ... ({self.c} in all)" if self.c > 10 else "")
        return f"{self.c} classes ({cls}), {kind}, size {self.size}"

    def __repr__(self) -> str:
        return f"InferenceData({self.summary()})"


@dataclass
class FileEntry:
    """One input of a prediction run: a file to decode, or an input that named nothing (`error` set)."""

    path: Path
    error: str | None = None


def image_files(inputs: Iterable[str | os.PathLike]) -> list[FileEntry]:
    """Files, folders (searched recursively) and glob patterns -> image files in a stable order.

    Order: inputs in the order given, each folder or glob sorted; duplicates are kept once. An input
    that names nothing (a missing path, a glob without matches, a folder without images) becomes an
    entry with an error, so callers can report it next to the predictions."""
    out: list[FileEntry] = []
    seen: set[str] = set()

    def add(p: Path, error: str | None = None) -> None:
        key = os.path.abspath(p) if error is None else f"\0{p}"
        if key not in seen:
            seen.add(key)
            out.append(FileEntry(p, error))

    for item in inputs:
        text = os.fspath(item)
        p = Path(text).expanduser()
        if p.is_dir():
            files = scan_images(p).files
            if not files:
                add(p, f"no images in folder {p}")
            for f in files:
                add(f)
        elif p.exists():
            add(p)
        elif _GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            files = [f for m in matches
                     for f in (scan_images(m).files if m.is_dir() else [m] if is_image_file(m) else [])]
            if not files:
                add(p, f"no images match {text}")
            for f in files:
                add(f)
        else:
            add(p, f"no such file or folder: {p}")
    return out


class FileImages(ImageDataset):
    """Unlabelled images from files, fetched a batch at a time: each batch is decoded, then transformed as one
    tensor per image shape (the same numbers as image by image, without the per-image overhead that, for small
    images, costs as much as the model). Items are (image, -1, position), as in any ImageDataset."""

    def __init__(self, files: Sequence[Path], classes: Sequence[str], size: int, short_side: int):
        super().__init__(files, None, classes, valid_transform(size), FilePixels(files, short_side), BadFiles())
        self.size = size

    def __getitems__(self, indices: list[int]):
        pixels, kept = [], []
        for i in indices:
            try:
                pixels.append(self.pixels(i))
                kept.append(i)
            except ImageDecodeError as e:
                self.bad.add(self.files[i], str(e))
        if not kept:
            return [None]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for j, p in enumerate(pixels):
            by_shape.setdefault(tuple(p.shape), []).append(j)
        out = torch.empty(len(kept), 3, self.size, self.size, dtype=torch.uint8)
        for js in by_shape.values():
            out[js] = self.transform(torch.stack([pixels[j] for j in js]))
        return [(out, torch.full((len(kept),), -1), torch.as_tensor(kept))]

    def loader(self, bs: int, device: torch.device | str, num_workers: int = 0) -> DataLoader:
        """In-order batches of (uint8 images, targets, positions); None for a batch without a readable image."""
        return DataLoader(self, batch_size=bs, sampler=EpochSampler(len(self), False), collate_fn=_first,
                          num_workers=num_workers, pin_memory=torch.device(device).type == "cuda",
                          worker_init_fn=worker_init if num_workers > 0 else None)


def _first(batch):
    return batch[0]


def files_dataset(data, files: Sequence[str | os.PathLike]) -> FileImages:
    """An unlabelled dataset over `files` (in that order) with `data`'s valid transform: what get_preds,
    tta and the predict command run on. Files that cannot be decoded are skipped and recorded in `.bad`."""
    paths = [Path(f) for f in files]
    if not paths:
        raise DataError("No images to predict on: pass image files, folders of images, or a glob like 'test/*.jpg'.")
    short = getattr(data, "presize", None) or presize_for(data.size)
    return FileImages(paths, data.classes, data.size, short)


def as_dataset(data, ds) -> ImageDataset:
    """`ds` as a dataset: an ImageDataset as is; a folder, file, glob or list of them -> `files_dataset`."""
    if isinstance(ds, ImageDataset):
        return ds
    if isinstance(ds, str) and not Path(ds).expanduser().exists() and not (_GLOB_CHARS | {"/", "."}) & set(ds):
        raise ConfigError(f"ds must be 'train', 'valid' or 'test', or images: a folder, file, glob or list of them; "
                          f"got {ds!r}.")
    items = [ds] if isinstance(ds, (str, os.PathLike)) else list(ds)
    entries = image_files(items)
    missing = [e.error for e in entries if e.error]
    if missing:
        raise DataError(f"{missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") +
                        ". Pass image files, folders of images, or a glob like 'test/*.jpg'.")
    return files_dataset(data, [e.path for e in entries])

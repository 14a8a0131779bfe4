"""ImageDataset: files with targets, read through a pixel source and a transform, with seeded augmentation.

Random transforms draw from a generator seeded by (seed, epoch, pass, item), so an epoch's augmented
images are the same on every rerun and resume, whatever the number of loader workers, and nothing
else in the program (model init, dropout) shifts them.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .decode import ImageDecodeError, open_image
from .transforms import pil_to_uint8


class BadFiles:
    """Files that failed to decode: each is warned about once and counted for the summary."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, path: Path | str, reason: str) -> None:
        with self._lock:
            if str(path) in self.paths:
                return
            self.paths[str(path)] = reason
        warnings.warn(f"Skipping {reason}", stacklevel=3)

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:  # loader workers started with spawn get a copy without the lock
        return {"paths": dict(self.paths)}

    def __setstate__(self, state: dict) -> None:
        self.paths, self._lock = state["paths"], threading.Lock()


class BadItem(NamedTuple):
    """What a loader worker returns for an undecodable file; the collate passes it to the main process,
    which warns once and counts it (a worker's own count would be lost with the worker)."""

    index: int
    path: str
    reason: str


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

    def prepare(self, n: int) -> None:
        """Fill the source's image cache for items [0, n), if it has one."""
        if hasattr(self.source, "prepare"):
            self.source.prepare(self.offset, self.offset + n)


def item_seed(seed: int, epoch: int, pass_: int, i: int) -> int:
    """A 63-bit seed for one item's random transform (tuple hashes of ints are stable across runs)."""
    return hash((seed, epoch, pass_, i)) & 0x7FFF_FFFF_FFFF_FFFF


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
        seed: int = 42,
    ):
        self.files = list(files)
        self.targets = targets
        self.classes = list(classes)
        self.transform, self.pixels, self.bad, self.seed = transform, pixels, bad, int(seed)
        # [epoch, pass]; `ImageData.loader` moves it to shared memory before starting workers, so that
        # workers (persistent ones too) see set_epoch and next_pass
        self.aug_state = torch.zeros(2, dtype=torch.int64)

    @property
    def is_labelled(self) -> bool:
        return self.targets is not None

    def __len__(self) -> int:
        return len(self.files)

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> "ImageDataset":
        """The same items under another transform (e.g. train images without augmentation)."""
        return ImageDataset(self.files, self.targets, self.classes, transform, self.pixels, self.bad, self.seed)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation for `epoch` (pass 0); the loader's sampler calls `next_pass` on each iteration."""
        self.aug_state[0], self.aug_state[1] = int(epoch), 0

    def next_pass(self) -> None:
        """A new iteration over the data in the same epoch (TTA, lr_find) draws new augmentations."""
        self.aug_state[1] += 1

    def prepare(self) -> None:
        """Fill the image cache for these items (a no-op without one). Call in the main process."""
        if hasattr(self.pixels, "prepare"):
            self.pixels.prepare(len(self))

    def target(self, i: int):
        if self.targets is None:
            return -1
        t = self.targets[i]
        return torch.as_tensor(t, dtype=torch.float32) if self.targets.ndim == 2 else int(t)

    def apply_transform(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """`transform(x)` with torch's CPU generator seeded for item i, restored afterwards."""
        epoch, pass_ = (int(v) for v in self.aug_state.tolist())
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed(self.seed, epoch, pass_, i))
            return self.transform(x)

    def __getitem__(self, i: int):
        with single_thread():
            try:
                x = self.pixels(i)
            except ImageDecodeError as e:
                if get_worker_info() is not None:
                    return BadItem(i, str(self.files[i]), str(e))
                self.bad.add(self.files[i], str(e))
                return None
            return self.apply_transform(x, i), self.target(i), i


@contextlib.contextmanager
def single_thread():
    """Run torch ops on one thread: per-image ops are too small to split, and on a busy CPU torch's
    thread pool makes them up to 100x slower (loader workers already run single-threaded)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)

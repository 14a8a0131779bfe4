"""Batches: a per-epoch seeded sampler, a collate that drops undecodable items, and a device loader
that moves uint8 batches to the device and normalizes them there (one fused op per batch)."""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data._utils.collate import default_collate

log = logging.getLogger("visiontune")


class EpochSampler(Sampler[int]):
    """Shuffles with a generator seeded by seed + epoch: the same order for an epoch on every rerun or
    resume. It is DistributedSampler's permutation, so N torchrun processes with batch size b see, step
    by step, exactly the items one process sees with batch size N*b. With a `dataset` that has them, also
    forwards `set_epoch` and starts a new augmentation pass on each iteration (see ImageDataset)."""

    def __init__(self, n: int, shuffle: bool, seed: int = 42, dataset=None):
        self.n, self.shuffle, self.seed, self.epoch, self.start = n, shuffle, seed, 0, 0
        self.dataset = dataset

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Order of `epoch`; `start` skips that many items of it (a run resumed in the middle of an epoch)."""
        self.epoch, self.start = epoch, start
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _next_pass(self) -> None:
        """Each iteration over the data draws new augmentations (TTA, lr_find cycling the loader)."""
        if hasattr(self.dataset, "next_pass"):
            self.dataset.next_pass()

    def __iter__(self) -> Iterator[int]:
        self._next_pass()
        if not self.shuffle:
            return iter(range(self.start, self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist()[self.start :])

    def __len__(self) -> int:
        return self.n


class Batch(list):
    """A collated batch [images, targets, positions]; `bad` lists the items left out as undecodable
    (BadItem), so the main process can report files that failed inside a loader worker."""

    bad: list = []


def collate_skip_none(batch: Sequence) -> Batch:
    """Collate, leaving out items that failed to decode (None, or a BadItem from a worker)."""
    from .dataset import BadItem, single_thread

    good = [b for b in batch if b is not None and not isinstance(b, BadItem)]
    with single_thread():  # a memory copy: torch's thread pool only adds contention (8x slower on a busy CPU)
        out = Batch(default_collate(good) if good else [])
    out.bad = [b for b in batch if isinstance(b, BadItem)]
    return out


def record_bad(dataset, batch) -> None:
    """Report (warn once, count) the undecodable files a worker left out of `batch`."""
    bad = getattr(dataset, "bad", None)
    for item in getattr(batch, "bad", ()):
        if bad is not None:
            bad.add(item.path, item.reason)


class ImageLoader(DataLoader):
    """A DataLoader that reports, in the main process, the files its workers could not decode."""

    def __iter__(self):
        for batch in super().__iter__():
            record_bad(self.dataset, batch)
            yield batch


class Normalize:
    """uint8 image batch -> float batch on `device`: x/255, minus mean, over std (one fused op), optionally
    channels_last. Float batches (cached features) are only moved."""

    def __init__(self, device: torch.device | str, mean: Sequence[float] | None, std: Sequence[float] | None,
                 channels_last: bool = False):
        self.device, self.channels_last = torch.device(device), channels_last
        self.enabled = mean is not None
        if self.enabled:
            m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
            self.scale = (1.0 / (255.0 * s)).to(self.device)
            self.shift = (-m / s).to(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=self.device.type == "cuda")
        if self.enabled and x.dtype == torch.uint8:
            x = torch.addcmul(self.shift, x.to(torch.float32), self.scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x


class DeviceLoader:
    """Iterates a DataLoader of (uint8 images, targets, positions), yielding normalized float batches on
    `device` (see Normalize)."""

    def __init__(self, dl: DataLoader, device: torch.device | str, mean: Sequence[float] | None,
                 std: Sequence[float] | None, channels_last: bool = False):
        self.dl, self.device = dl, torch.device(device)
        self.normalize = Normalize(device, mean, std, channels_last)
        self._skip = 0
        if dl.generator is None:
            # The loader draws its workers' base seed from this generator instead of torch's global one, so
            # starting an epoch does not move the global RNG: a run resumed mid-epoch draws the same
            # dropout and augmentation numbers as the uninterrupted run.
            dl.generator = torch.Generator().manual_seed(getattr(dl.sampler, "seed", 0))

    @property
    def dataset(self):
        return self.dl.dataset

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Use the order and augmentation of `epoch`, leaving out its first `skip_batches` batches (resuming
        mid-epoch). Datasets are told the epoch also behind samplers that do not forward it."""
        sampler = self.dl.sampler
        if hasattr(sampler, "set_epoch"):
            if hasattr(sampler, "start"):
                sampler.set_epoch(epoch, start=skip_batches * (self.dl.batch_size or 1))
                skip_batches = 0
            else:
                sampler.set_epoch(epoch)
        if hasattr(self.dl.dataset, "set_epoch") and not isinstance(sampler, EpochSampler):
            self.dl.dataset.set_epoch(epoch)
        self._skip = skip_batches
        self.dl.generator = torch.Generator().manual_seed(getattr(sampler, "seed", 0) * 100_003 + epoch + 500_009)

    def __len__(self) -> int:
        return len(self.dl)

    def iter_with_index(self):
        """Yields (x, y, idx): idx are the dataset positions of the items in the batch, so callers know
        which items were left out as undecodable."""
        non_blocking = self.device.type == "cuda"
        skip, self._skip = self._skip, 0
        for batch in self.dl:
            if not batch:
                continue
            if skip:
                skip -= 1
                continue
            x, y, idx = batch
            yield self.normalize(x), y.to(self.device, non_blocking=non_blocking), idx

    def __iter__(self):
        for x, y, _ in self.iter_with_index():
            yield x, y

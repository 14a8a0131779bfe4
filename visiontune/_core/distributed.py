"""Device selection and the few distributed (torchrun / DDP) facts the rest of the code asks about."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError

__all__ = ["ShardSampler", "all_reduce_sum", "barrier", "broadcast_object", "cleanup", "default_device",
           "gather_cat", "is_distributed", "is_main_process", "launched_by_torchrun", "make_sampler", "rank",
           "setup_from_env", "world_size"]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given (checked), else CUDA, then Apple MPS, then CPU. Under torchrun, this rank's GPU."""
    if device is not None:
        d = torch.device(device)
        if d.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} was asked for but CUDA is not available here; use device='cpu'.")
        if d.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"device={device!r} was asked for but Apple MPS is not available here; use device='cpu'.")
        if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here.")
        return d
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local % torch.cuda.device_count())
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (or without distributed training): the only process that writes files."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup_from_env(backend: str | None = None) -> bool:
    """Join the process group when launched by torchrun (nccl on GPUs, gloo on CPUs); True if distributed.

    Safe to call twice; a plain `python` launch returns False and changes nothing."""
    if is_distributed():
        return True
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) < 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    torch.distributed.init_process_group(backend=backend)
    return True


def cleanup() -> None:
    """Leave the process group (end of a torchrun job)."""
    if is_distributed():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        torch.distributed.barrier()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. the run folder name, a cache decision)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum of `values` over all ranks."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(device))
    torch.distributed.all_reduce(t)
    return t.tolist()


def _comm_device(device) -> torch.device:
    device = torch.device(device)
    if torch.distributed.get_backend() == "nccl" and device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate tensor `t` (any length along dim 0) from every rank, in rank order."""
    if not is_distributed():
        return t
    dev = _comm_device(t.device)
    local = t.to(dev)
    n = torch.tensor([local.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    torch.distributed.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    pad = torch.zeros((longest - local.shape[0], *local.shape[1:]), dtype=local.dtype, device=dev)
    buf = [torch.empty((longest, *local.shape[1:]), dtype=local.dtype, device=dev) for _ in range(world_size())]
    torch.distributed.all_gather(buf, torch.cat([local, pad]))
    return torch.cat([b[: int(s.item())] for b, s in zip(buf, sizes)]).to(t.device)


class ShardSampler(torch.utils.data.Sampler):
    """Every `world`-th item starting at `rank`, in order, without padding: each item is seen by exactly one
    rank, so gathered predictions and metrics are exact (DistributedSampler pads with repeats)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _DatasetEpochs:
    """Forwards set_epoch and a new augmentation pass per iteration to datasets that have them (ImageDataset)."""

    dataset = None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        if hasattr(self.dataset, "next_pass"):
            self.dataset.next_pass()
        return super().__iter__()


def make_sampler(n: int, shuffle: bool, seed: int, drop_last: bool, dataset=None):
    """A DistributedSampler for training (shuffled per epoch with the seed), a ShardSampler otherwise;
    None when not distributed."""
    if not is_distributed():
        return None
    from torch.utils.data.distributed import DistributedSampler

    if shuffle:
        cls = type("EpochDistributedSampler", (_DatasetEpochs, DistributedSampler), {})
        sampler = cls(dataset if dataset is not None else range(n), num_replicas=world_size(), rank=rank(),
                      shuffle=True, seed=seed, drop_last=drop_last)
    else:
        sampler = type("EpochShardSampler", (_DatasetEpochs, ShardSampler), {})(n, rank(), world_size())
    sampler.dataset = dataset
    return sampler

"""Device selection and the few distributed (torchrun / DDP) facts the rest of the code asks about."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError


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

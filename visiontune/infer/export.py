"""Saving and loading weights as safetensors (no pickle), written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError


def atomic_write(path: Path, write) -> Path:
    """Call `write(tmp_path)`, fsync, then rename over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: Path, classes: Sequence[str] = ()) -> Path:
    """Model weights -> one safetensors file, with class names and architecture in its metadata."""
    meta = {"format": "visiontune-weights", "classes": json.dumps(list(classes))}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        meta["model"] = json.dumps(config.to_dict())
    state = _plain_state(model)
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def load_weights(model: torch.nn.Module, path: Path, strict: bool = True) -> None:
    """Load a safetensors weights file written by `save_weights` (or any matching state dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No saved model at {path}. Saved models: "
                              f"{', '.join(p.stem for p in sorted(path.parent.glob('*.safetensors'))) or 'none'}.")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}).") from e
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this model: {str(e)[:400]}") from e

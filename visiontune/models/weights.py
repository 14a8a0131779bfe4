"""Where pretrained weights come from: an explicit file, the local cache, or a download when online.

Every path that yields weights goes through here, so the failure message is the same everywhere:
it names the architecture, where we looked, and the two ways out.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from urllib.parse import urlparse

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .._core.errors import CheckpointError, WeightsError
from .._core.io import atomic_write
from .._core.paths import cache_home

StateDict = Mapping[str, torch.Tensor]


def weights_cache_dir() -> Path:
    """Folder where visiontune looks for `<arch>.safetensors` / `<arch>.pth` before going online."""
    return cache_home() / "weights"


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a plain tensor checkpoint, never unpickling code.

    `.pth/.pt/.bin` files are read with ``torch.load(weights_only=True)``; a file that holds
    anything but tensors (pickled objects) is refused.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise WeightsError(
            f"Could not read weights from {path}: {type(e).__name__}: {str(e)[:300]}. "
            "Expected a .safetensors file or a plain PyTorch state dict (tensors only)."
        ) from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(model: nn.Module, state: StateDict, ignore_prefixes: Iterable[str] = (), source: str = "") -> None:
    """Load `state` into `model` strictly, except for keys under `ignore_prefixes` (the old classifier).

    Missing or mis-shaped tensors raise a WeightsError listing a few of them: a half-loaded
    backbone would silently train from partly random weights.
    """
    ignore = tuple(ignore_prefixes)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(ignore)}
    given = {k: v for k, v in state.items() if not k.startswith(ignore)}
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    bad_shape = [k for k in own if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise WeightsError(
            f"Weights{f' from {source}' if source else ''} do not fit {type(model).__name__}: "
            + "; ".join(parts)
            + ". Check that the file was saved from the same architecture."
        )
    model.load_state_dict(given, strict=False)


def is_online(url: str, timeout: float = 2.0) -> bool:
    """True when the host of `url` resolves and accepts a TCP connection within `timeout` seconds.

    Checked before any hub download so that an offline machine fails in seconds, not after
    a minute of retries.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("VISIONTUNE_OFFLINE") == "1":
        return False
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def weights_unavailable(arch: str, looked: list[str], reason: str = "") -> WeightsError:
    """The one error for 'no pretrained weights': where we looked and the two ways out."""
    where = "\n".join(f"  - {p}" for p in looked)
    return WeightsError(
        f"No pretrained weights for '{arch}'{f' ({reason})' if reason else ''}. Looked in:\n{where}\n"
        f"Ways out: pass a weights file (--weights FILE / weights='file.safetensors'), or connect "
        f"to the internet once so the download fills the cache. For the offline default use "
        f"arch='efficientnet_lite0'; pretrained=False trains from random weights on purpose."
    )


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

"""Checkpoints: the whole training state in one pickle-free file, written atomically, read back with a
fallback to the previous checkpoint when the newest is damaged.

A checkpoint is a safetensors file: tensors (weights, optimizer moments, RNG states as uint8) plus a JSON
header entry with everything else (optimizer hyper-parameters, callback states such as the recorder's
epoch table, the position in training) and a SHA-256 of all tensor bytes, so a truncated or bit-flipped
file is detected instead of silently resumed. Files go to a temporary name, are fsynced, then renamed.
"""

from __future__ import annotations

import json
import os
import random
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .._core.checksum import tensor_digest, text_digest  # noqa: F401  (tensor_digest re-exported)
from .._core.errors import CheckpointError, DiskFullError
from .._core.io import atomic_write, remove_partial_files  # noqa: F401  (re-exported for runs)
from .._core.version import __version__

if TYPE_CHECKING:
    from ..train.learner import Learner

FORMAT = "visiontune-checkpoint"
VERSION = 1
PATTERN = re.compile(r"^checkpoint-(\d+)\.safetensors$")


@dataclass
class Position:
    """Where training stands. `fit_index` counts fits (phases) from 0; `epoch` is the next epoch to run in
    it and `iter` the training batches of that epoch already done. `inside_fit` is False for the checkpoint
    written when a fit ends: the next fit then starts afresh. `n_epoch` and `base_lrs` let a resume check
    that it replays the same schedule."""

    fit_index: int
    epoch: int = 0
    iter: int = 0
    inside_fit: bool = True
    n_epoch: int | None = None
    base_lrs: list[float] | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        if not self.inside_fit:
            return f"start of phase {self.fit_index}"
        where = f"phase {self.fit_index}, epoch {self.epoch}"
        return where + (f" after batch {self.iter}" if self.iter else " (start)")


# ---------------------------------------------------------------------------- RNG states
def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Python, NumPy, torch (and CUDA) generator states: uint8 tensors plus the small JSON remainder."""
    py_version, py_keys, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    tensors = {
        "rng/python": torch.from_numpy(np.asarray(py_keys, dtype=np.uint32).view(np.uint8).copy()),
        "rng/numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.uint32).view(np.uint8).copy()),
        "rng/torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    meta = {"python": [py_version, py_gauss], "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Undo `rng_state`: every generator continues exactly where the checkpoint left it."""
    py_version, py_gauss = meta["python"]
    py_keys = tuple(int(x) for x in tensors["rng/python"].numpy().view(np.uint32))
    random.setstate((py_version, py_keys, py_gauss))
    np_name, np_pos, np_has_gauss, np_gauss = meta["numpy"]
    np.random.set_state((np_name, tensors["rng/numpy"].numpy().view(np.uint32).copy(), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])


# ---------------------------------------------------------------------------- flatten / unflatten
def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def flatten(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Learner.state_dict() -> (tensors by key, JSON-able rest)."""
    tensors = {f"model/{k}": _cpu(v) for k, v in state["model"].items()}
    meta: dict[str, Any] = {"callbacks": state.get("callbacks", {}), "scaler": state.get("scaler")}
    opt = state.get("opt")
    if opt is not None:
        extra: dict[str, dict] = {}
        for pid, s in opt["state"].items():
            for name, v in s.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"opt/{pid}/{name}"] = _cpu(v)
                else:
                    extra.setdefault(str(pid), {})[name] = v
        meta["opt"] = {"param_groups": opt["param_groups"], "extra": extra}
    return tensors, meta


def unflatten(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of `flatten`."""
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    opt = None
    if meta.get("opt") is not None:
        st: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, pid, name = k.split("/", 2)
                st.setdefault(int(pid), {})[name] = v
        for pid, d in meta["opt"]["extra"].items():
            st.setdefault(int(pid), {}).update(d)
        opt = {"state": st, "param_groups": meta["opt"]["param_groups"]}
    return {"model": model, "opt": opt, "scaler": meta.get("scaler"), "callbacks": meta.get("callbacks", {})}


# ---------------------------------------------------------------------------- files
def _jsonable(o: Any) -> Any:
    """Tensors and numpy scalars that end up in optimizer hyper-parameters -> plain numbers/lists."""
    if isinstance(o, (torch.Tensor, np.ndarray, np.generic)):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} cannot go into a checkpoint header")


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Temporary file + fsync + rename (+ fsync of the folder): a reader sees the old file or the new one."""
    path = Path(path)
    state = json.dumps(meta, default=_jsonable)
    header = {"format": FORMAT, "version": str(VERSION), "visiontune": __version__,
              "state": state, "sha256": tensor_digest(tensors), "state_sha256": text_digest(state)}
    need = sum(t.numel() * t.element_size() for t in tensors.values()) + len(state) + 4096
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header), failpoints="checkpoint",
                     durable=True, size_hint=need)
    except DiskFullError as e:
        raise CheckpointError(f"Could not write the checkpoint: {e} The previous checkpoints in {path.parent} are "
                              f"kept; `visiontune resume {path.parent.parent}` continues from the newest.") from e
    except OSError as e:
        raise CheckpointError(f"Could not write the checkpoint {path}: {e}. Free some disk space or pick another "
                              f"run folder.") from e
    return path


@dataclass
class Checkpoint:
    """A checkpoint read from disk (and verified): the learner state, RNG states and the position."""

    path: Path
    position: Position
    state: dict
    rng: tuple[dict[str, torch.Tensor], dict]
    meta: dict

    @property
    def fit_index(self) -> int:
        return self.position.fit_index

    def enter(self, learn: "Learner") -> tuple[int, int, bool]:
        """Called by the Learner when it reaches the fit this checkpoint is in: restores everything and
        returns (start epoch, batches of it already done, whether this fit continues an interrupted one)."""
        pos = self.position
        if pos.inside_fit and pos.n_epoch is not None and pos.n_epoch != learn.n_epoch:
            raise CheckpointError(
                f"{self.path} was written in phase {pos.fit_index} of {pos.n_epoch} epochs, but the resumed run's "
                f"phase {pos.fit_index} has {learn.n_epoch}. Resume with the same config (or script) as the "
                f"interrupted run; to change it, start a new run with `visiontune rerun ... --set`.")
        if pos.inside_fit and pos.base_lrs is not None and not np.allclose(pos.base_lrs, learn.base_lrs, rtol=1e-9):
            raise CheckpointError(
                f"{self.path}: phase {pos.fit_index} used learning rates {pos.base_lrs}, the resumed run has "
                f"{learn.base_lrs}. Resume with the same config (or script) as the interrupted run.")
        self.restore(learn)
        return (pos.epoch, pos.iter, True) if pos.inside_fit else (0, 0, False)

    def restore(self, learn: "Learner", rng: bool = True) -> None:
        """Load the learner state and (with `rng`) the RNG states, without touching the position."""
        learn.load_state_dict(self.state)
        if rng:
            set_rng_state(*self.rng)


def checkpoint_state(learn: "Learner", position: Position) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) for the learner as it is now, at `position`."""
    tensors, meta = flatten(learn.state_dict())
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    meta["rng"] = rng_meta
    meta["position"] = asdict(position)
    return tensors, meta


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint file; CheckpointError says what is wrong with it."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} cannot be read ({str(e)[:200]})") from e
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a visiontune checkpoint")
    if int(header.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} was written by a newer visiontune ({header.get('visiontune')}); upgrade")
    if tensor_digest(tensors) != header.get("sha256"):
        raise CheckpointError(f"{path} is damaged (its contents do not match its checksum)")
    if "state_sha256" in header and text_digest(header.get("state", "")) != header["state_sha256"]:
        raise CheckpointError(f"{path} is damaged (its header does not match its checksum)")
    try:
        meta = json.loads(header["state"])
        position = Position(**meta["position"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} has a damaged header ({e})") from e
    rng_t = {k: v for k, v in tensors.items() if k.startswith("rng/")}
    return Checkpoint(path, position, unflatten(tensors, meta), (rng_t, meta["rng"]), meta)


def checkpoint_paths(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, newest first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("checkpoint-*.safetensors") if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def next_checkpoint_path(folder: Path) -> Path:
    paths = checkpoint_paths(folder)
    n = int(PATTERN.match(paths[0].name).group(1)) + 1 if paths else 1
    return Path(folder) / f"checkpoint-{n:05d}.safetensors"


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints."""
    for p in checkpoint_paths(folder)[max(keep, 1):]:
        p.unlink(missing_ok=True)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest readable checkpoint in `folder` (None if there is none). A damaged newer one is renamed
    to `*.damaged` (kept for inspection, never read again) with a warning, and the previous one is used."""
    paths = checkpoint_paths(folder)
    problems = []
    for p in paths:
        try:
            return read_checkpoint(p)
        except CheckpointError as e:
            problems.append(str(e))
            damaged = p.with_name(p.name + ".damaged")
            os.replace(p, damaged)
            warnings.warn(f"{e}; moved it to {damaged.name} and falling back to the previous checkpoint.",
                          stacklevel=2)
    if problems:
        raise CheckpointError(f"No readable checkpoint in {folder}: {'; '.join(problems)}. Start the run again "
                              f"with `visiontune rerun <run>/config.yaml`.")
    return None

"""The model file being served (`ModelFile`) and the two ways to run it: PyTorch, or its ONNX export in
onnxruntime. A backend takes uint8 images (N, 3, size, size) and returns probabilities (N, classes)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from .._core.errors import ExportError
from .._core.paths import cache_home
from .._core.version import __version__
from ..data.loader import Normalize
from ..infer.data import InferenceData
from ..infer.export import load_learner, read_model_header
from ..infer.predict import eval_mode, inference_model

ONNX_STARTUP_TOLERANCE = 1e-3  # onnxruntime vs PyTorch at start-up; above it the export is wrong, not rounding


@dataclass
class ModelFile:
    """A checked .vt file: where it is, the SHA-256 of its bytes, and what its header says (classes, size...)."""

    path: Path
    sha256: str
    header: dict
    data: InferenceData

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ModelFile":
        """Check `path` is a complete visiontune model (a run folder means its model.vt) and hash it; reads the
        header only, so a wrong file is refused in milliseconds with the loader's own message."""
        path = Path(path).expanduser()
        if path.is_dir() and (path / "model.vt").is_file():
            path = path / "model.vt"
        header = read_model_header(path)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return cls(path.resolve(), digest.hexdigest(), header, InferenceData.from_dict(header, path=path.parent))

    @property
    def arch(self) -> str:
        return str(self.header["model"].get("arch", "?"))

    @property
    def thresh(self) -> float:
        return float(self.header.get("thresh", 0.5))

    @property
    def is_multi_label(self) -> bool:
        return bool(self.header.get("is_multi_label", False))

    def describe(self) -> dict:
        """What /info says about the model: never a path beyond the file's name."""
        return {
            "model_file": self.path.name,
            "sha256": self.sha256,
            "arch": self.arch,
            "size": self.data.size,
            "resize_short_side": self.data.presize,
            "classes": list(self.data.classes),
            "is_multi_label": self.is_multi_label,
            "threshold": self.thresh,
            "activation": self.header.get("activation", "softmax"),
            "mean": self.header.get("mean"),
            "std": self.header.get("std"),
            "metrics": self.header.get("metrics", {}),
            "created": self.header.get("created"),
            "exported_by": self.header.get("visiontune"),
        }


class Backend(Protocol):
    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, size, size) -> float32 probabilities (N, classes) on the CPU."""


class TorchBackend:
    """The loaded learner's model, fed as `learn.predict` feeds it (same normalization, eval mode, autocast)."""

    name = "torch"

    def __init__(self, learn):
        self.learn = learn
        self.normalize = Normalize(learn.device, *learn.norm_stats(), learn.channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.learn):
            x = self.normalize(images)
            return self.learn.activation(inference_model(self.learn, x)(x).float()).cpu()


class OnnxBackend:
    """The ONNX export (normalization and activation inside the graph) in an onnxruntime CPU session."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per physical core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.session.run(["probs"], {"images": images.contiguous().numpy()})[0]
        return torch.from_numpy(out)


def onnx_cache_path(model: ModelFile) -> Path:
    """Where the ONNX export of `model` is kept: keyed by the file's hash and the versions that export it."""
    key = f"{model.sha256[:24]}-vt{__version__}-torch{torch.__version__.split('+')[0]}"
    return cache_home() / "serve" / f"{key}.onnx"


def build_backend(model: ModelFile, backend: str, device: str | None = None,
                  threads: int | None = None) -> tuple[Backend, dict]:
    """Load `model` the safe way (load_learner: safetensors + JSON) and wrap it in the chosen backend.

    For 'onnx', the export is made once into the visiontune cache (or reused), then checked against PyTorch
    on random images: a difference over ONNX_STARTUP_TOLERANCE refuses to serve. Returns the backend and
    facts for /info."""
    learn = load_learner(model.path, device=device if backend == "torch" else "cpu")
    torch_backend = TorchBackend(learn)
    facts: dict = {"backend": backend, "device": str(learn.device)}
    if backend == "torch":
        return torch_backend, facts
    path = onnx_cache_path(model)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        learn.export_onnx(path)
    onnx = OnnxBackend(path, threads)
    images = torch.randint(0, 256, (4, 3, model.data.size, model.data.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    diff = float((onnx(images) - torch_backend(images)).abs().max())
    if not diff <= ONNX_STARTUP_TOLERANCE:
        raise ExportError(f"The ONNX export of {model.path.name} ({path}) differs from PyTorch by {diff:.2g} on test "
                          f"images (over {ONNX_STARTUP_TOLERANCE}). Delete that file to export it again, or "
                          f"serve with --backend torch.")
    facts["onnx_max_abs_diff"] = diff
    return onnx, facts

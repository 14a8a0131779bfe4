"""Prediction through onnxruntime (`predict --backend onnx`): the learner's model exported once to ONNX (with
its preprocessing and activation inside the graph, see onnx_export.py), cached by the weights' digest, and
run on uint8 batches by onnxruntime's CPU kernels, which fuse what eager PyTorch runs op by op."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import torch

from .._core.errors import ConfigError
from .._core.paths import cache_home

if TYPE_CHECKING:
    from ..train.learner import Learner

BACKENDS = ("torch", "onnx")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    return backend


def model_digest(learn: "Learner") -> str:
    """SHA-256 of what the exported graph depends on: every weight and buffer, classes, size, preprocessing."""
    h = hashlib.sha256()
    h.update(json.dumps([list(learn.data.classes), learn.data.size, learn.preprocess.to_dict(),
                         type(learn.loss_func).__name__, getattr(learn.model.config, "arch", "")]).encode())
    for name, t in learn.model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


class OnnxSession:
    """An onnxruntime session over the learner's exported graph: uint8 (N, 3, size, size) -> probabilities."""

    def __init__(self, learn: "Learner", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ConfigError("--backend onnx needs onnxruntime (and onnx, onnxscript to export): "
                              "pip install 'visiontune[onnx]'; or predict with the default --backend torch.") from e
        from .onnx_export import export_onnx

        folder = cache_home() / "onnx"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{model_digest(learn)}.onnx"
        if not self.path.is_file():
            export_onnx(learn, self.path)  # atomic: a reader never sees half a graph
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to("cpu", memory_format=torch.contiguous_format).numpy()
        return torch.from_numpy(self.session.run(["probs"], {"images": x})[0])


def onnx_preds(learn: "Learner", dset, bs: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, dataset positions) of every decodable item of a FileImages dataset, through onnxruntime."""
    session = OnnxSession(learn)
    probs, index = [], []
    for batch in dset.loader(bs or learn.data.bs, "cpu", learn.data.default_workers("cpu")):
        if batch is None:
            continue
        x, _, idx = batch
        probs.append(session(x))
        index.append(torch.as_tensor(idx))
    if not probs:
        return torch.empty(0, learn.data.c), torch.empty(0, dtype=torch.long)
    return torch.cat(probs), torch.cat(index)

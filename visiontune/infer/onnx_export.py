"""ONNX export: the model with visiontune's preprocessing and activation inside the graph, so a deployment
feeds resized uint8 pixels and reads probabilities (onnxruntime, browsers, phones)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .._core.errors import ExportError
from .._core.io import atomic_write

if TYPE_CHECKING:
    from ..train.learner import Learner


class DeployModel(nn.Module):
    """uint8 RGB images (N, 3, size, size) -> probabilities (N, classes): x/255, normalize, model, activation."""

    def __init__(self, model: nn.Module, mean, std, sigmoid: bool):
        super().__init__()
        self.model, self.sigmoid = model, sigmoid
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s))
        self.register_buffer("shift", -m / s)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images.to(torch.float32) * self.scale + self.shift)
        return torch.sigmoid(out) if self.sigmoid else torch.softmax(out, 1)


def deploy_model(learn: "Learner") -> DeployModel:
    """A CPU, eval-mode copy of the learner's model wrapped with its preprocessing and activation."""
    model = copy.deepcopy(learn.model).to("cpu", memory_format=torch.contiguous_format).eval()
    sigmoid = isinstance(learn.loss_func, nn.BCEWithLogitsLoss)
    mean, std = learn.norm_stats()
    return DeployModel(model, mean, std, sigmoid).eval()


def export_onnx(learn: "Learner", path: str | os.PathLike, opset: int | None = None,
                dynamic_batch: bool = True) -> Path:
    """Write the model as ONNX: input `images` uint8 (N, 3, size, size) RGB, resized and center-cropped
    like visiontune's valid images; output `probs`. Classes and preprocessing go in the metadata.
    `dynamic_batch=False` fixes the batch size at 1."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx extra: pip install 'visiontune[onnx]' "
                          f"({e.name} is missing).") from e
    from .._core.version import __version__

    net = deploy_model(learn)
    size = learn.data.size
    example = torch.zeros(2 if dynamic_batch else 1, 3, size, size, dtype=torch.uint8)  # 2: no 0/1 specialising
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {"images": {0: torch.export.Dim("batch", min=1)}}
    info = {
        "classes": json.dumps(list(learn.data.classes)),
        "image_size": str(size),
        "resize_short_side": str(getattr(learn.data, "presize", size)),
        "mean": json.dumps(list(learn.preprocess.mean)),
        "std": json.dumps(list(learn.preprocess.std)),
        "activation": "sigmoid" if net.sigmoid else "softmax",
        "threshold": json.dumps(learn.thresh),
        "decision": json.dumps(getattr(learn, "decision", None)),
        "input": f"uint8 RGB NCHW (N, 3, {size}, {size}); normalization is inside the graph",
        "visiontune": __version__,
    }

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                program = torch.onnx.export(net, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                                            output_names=["probs"], external_data=False, verbose=False, **kwargs)
            except Exception as e:  # noqa: BLE001 - exporter failures come in many types
                raise ExportError(f"ONNX export of {learn.model.config.arch} failed: {type(e).__name__}: "
                                  f"{str(e)[:400]}") from e
        for k, v in info.items():
            program.model.metadata_props[k] = v
        program.save(str(tmp), external_data=False)

    return atomic_write(Path(path), write)

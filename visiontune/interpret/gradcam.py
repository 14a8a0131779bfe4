"""Grad-CAM and feature maps with plain torch hooks: where in the picture the model found its evidence.

Grad-CAM (Selvaraju et al., 2017) weights each channel of the body's last feature maps by the mean gradient
of a class score with respect to it, sums the weighted maps and keeps the positive part: bright where
evidence for that class was found.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core.errors import ConfigError


def cam_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM looks at: the body, whose output is its last conv layer's feature maps (after that
    layer's normalization and activation), i.e. exactly what the pooling and the head see."""
    body = getattr(model, "body", None)
    if body is not None:
        return body
    convs = conv_layers(model)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM; pass layer= explicitly.")
    return convs[-1][1]


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """(name, module) of every Conv2d in `model` (its body when it has one), in forward order."""
    root = getattr(model, "body", model)
    return [(n, m) for n, m in root.named_modules() if isinstance(m, nn.Conv2d)]


@contextlib.contextmanager
def hook_outputs(modules: Sequence[nn.Module]) -> Iterator[list]:
    """Collects the forward output of each module into the yielded list (one slot per module)."""
    store: list = [None] * len(modules)

    def make(i: int):
        def hook(_m, _inp, out):
            store[i] = out

        return hook

    handles = [m.register_forward_hook(make(i)) for i, m in enumerate(modules)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def grad_cam(model: nn.Module, x: torch.Tensor, classes: Sequence[int] | torch.Tensor,
             layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input's size for normalized images `x` (N, 3, H, W), one per
    image for the class in `classes`. Runs in eval mode and float32; the model is left as it was."""
    layer = layer if layer is not None else cam_layer(model)
    classes = torch.as_tensor(classes, dtype=torch.long, device=x.device).view(-1)
    if len(classes) != len(x):
        raise ConfigError(f"grad_cam needs one class per image: {len(x)} images, {len(classes)} classes.")
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), hook_outputs([layer]) as acts:
            inp = x.detach().float().requires_grad_(True)  # a graph even when every weight is frozen
            logits = model(inp).float()
            score = logits.gather(1, classes[:, None]).sum()
            act = acts[0]
            (grad,) = torch.autograd.grad(score, act)
    finally:
        model.train(was_training)
    act, grad = act.detach().float(), grad.float()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).cpu()


def feature_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None,
                 n_layers: int = 3) -> list[tuple[str, torch.Tensor]]:
    """(layer name, output (C, h, w)) of a few conv layers of the body for one normalized image `x` (1, 3, H, W).
    Default layers: the first conv, one in the middle and the last, from edges to parts of objects."""
    convs = conv_layers(model)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d layers to show.")
    by_name = dict(convs)
    if layers is None:
        picks = np.unique(np.linspace(0, len(convs) - 1, max(n_layers, 1)).round().astype(int))
        names = [convs[i][0] for i in picks]
    else:
        missing = [n for n in layers if n not in by_name]
        if missing:
            raise ConfigError(f"No conv layer named {missing[0]!r}. Conv layers: {', '.join(list(by_name)[:12])}, ... "
                              f"({len(by_name)} in all; see visiontune.interpret.gradcam.conv_layers(model)).")
        names = list(layers)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), hook_outputs([by_name[n] for n in names]) as outs:
            model(x)
    finally:
        model.train(was_training)
    return [(n, o[0].float().cpu()) for n, o in zip(names, outs)]

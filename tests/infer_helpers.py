"""Helpers for the inference tests: a small untrained learner whose head is not at its initial state."""

from __future__ import annotations

from pathlib import Path

import torch

import visiontune as vt
from conftest import make_image_folder

CLASSES = ("red", "green", "blue")


def tiny_learner(root: Path, augment: str | None = "side_on", **kwargs) -> vt.Learner:
    """Lite0 (embedded weights) on 3 colour classes at size 32. The head's BatchNorm statistics are set to
    random values, so an export that dropped buffers or rebuilt a fresh head would predict differently."""
    folder = make_image_folder(root, classes=CLASSES, n_train=6, n_valid=4)
    data = vt.ImageData.from_folder(folder, size=32, bs=8, augment=augment)
    learn = vt.vision_learner(data, **kwargs)
    g = torch.Generator().manual_seed(0)
    for m in learn.model.head.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return learn

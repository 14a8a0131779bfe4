"""Normalization belongs to the model: two learners on one data object (the notebook comparison of two
architectures) each predict, export and ONNX-export with their own statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import visiontune as vt


def _learner(data, arch: str):
    torch.manual_seed(0)
    return vt.vision_learner(data, arch, pretrained=arch == "efficientnet_lite0")


@pytest.mark.parametrize("first", ["efficientnet_lite0", "resnet18"])
def test_each_learner_keeps_its_own_normalization(image_folder, tmp_path, first):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    second = "resnet18" if first == "efficientnet_lite0" else "efficientnet_lite0"
    alone_data = vt.ImageData.from_folder(image_folder, size=32, bs=8)
    alone = _learner(alone_data, first)
    expected, _ = alone.get_preds()

    shared = vt.ImageData.from_folder(image_folder, size=32, bs=8)
    learn = _learner(shared, first)
    other = _learner(shared, second)  # built after: it must not change how `learn` feeds its model
    assert learn.preprocess != other.preprocess  # (0.5, 0.5, 0.5) for Lite0, ImageNet's for resnet18
    assert not hasattr(shared, "mean")  # nothing written onto the shared data object

    probs, _ = learn.get_preds()
    assert torch.allclose(probs, expected, atol=1e-6)
    other_probs, _ = other.get_preds()
    assert not torch.allclose(other_probs, probs, atol=1e-3)

    path = learn.export(tmp_path / "first.vt")
    loaded = vt.load_learner(path, device="cpu")
    assert loaded.preprocess == learn.preprocess
    reloaded, _ = loaded.get_preds(shared.valid_ds.files)
    assert torch.allclose(reloaded, expected, atol=1e-5)

    onnx_path = learn.export_onnx(tmp_path / "first.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pixels = torch.stack([shared.valid_ds[i][0] for i in range(len(shared.valid_ds))]).numpy()
    onnx_probs = session.run(None, {"images": pixels.astype(np.uint8)})[0]
    assert np.abs(onnx_probs - expected.numpy()).max() < 1e-4

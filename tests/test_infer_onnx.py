"""ONNX export: onnxruntime gives the learner's probabilities from uint8 images, for any batch size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infer_helpers import tiny_learner
from visiontune.infer.predict import item_to_tensor, prepare_batch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.mark.slow
def test_onnx_matches_pytorch(tmp_path):
    learn = tiny_learner(tmp_path / "colors")
    path = learn.export_onnx(tmp_path / "model.onnx")
    files = learn.data.valid_ds.files
    images = torch.stack([item_to_tensor(f, 32) for f in files])  # uint8, as a deployment would feed
    with torch.inference_mode():
        expected = learn.activation(learn.model.eval()(prepare_batch(learn, list(images)))).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for batch in (1, 5, len(files)):  # dynamic batch dimension
        got = session.run(["probs"], {"images": images[:batch].numpy()})[0]
        assert got.shape == (batch, 3)
        assert np.abs(got - expected[:batch]).max() < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(meta["classes"]) == learn.data.classes
    assert meta["image_size"] == "32" and json.loads(meta["mean"]) == [0.5] * 3
    assert list(tmp_path.glob("model.onnx*")) == [path]  # one file, no external data


@pytest.mark.slow
def test_onnx_fixed_batch_and_opset(tmp_path):
    learn = tiny_learner(tmp_path / "colors", augment=None)
    path = learn.export_onnx(tmp_path / "fixed.onnx", opset=18, dynamic_batch=False)
    model = onnx.load(str(path))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1

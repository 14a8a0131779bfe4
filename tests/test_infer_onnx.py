"""ONNX export: onnxruntime gives the learner's probabilities from uint8 images, for any batch size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import visiontune as vt

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


@pytest.mark.slow
def test_predict_backend_onnx_matches_torch_with_bad_files_and_from_the_shell(tmp_path, monkeypatch):
    """`predict --backend onnx`: the exported graph, cached by the weights' digest, gives the torch path's
    probabilities (< 1e-4) in the same rows, a corrupt file still gets its error row, and --tta is refused."""
    import subprocess
    import sys

    from visiontune.infer import predict_files
    from visiontune.infer.onnx_runtime import model_digest

    monkeypatch.setenv("VISIONTUNE_HOME", str(tmp_path / "home"))
    learn = tiny_learner(tmp_path / "colors")
    folder = tmp_path / "new"
    folder.mkdir()
    for f in learn.data.valid_ds.files[:7]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    eager = predict_files(learn, [folder], bs=3)
    fast = predict_files(learn, [folder], bs=3, backend="onnx")
    assert fast.files == eager.files and fast.errors == eager.errors and fast.n_ok == 7
    ok = [i for i, e in enumerate(eager.errors) if e is None]
    assert (fast.probs[ok] - eager.probs[ok]).abs().max() < 1e-4
    assert fast.labels() == eager.labels()
    cached = list((tmp_path / "home" / "onnx").glob("*.onnx"))
    assert [p.stem for p in cached] == [model_digest(learn)]
    with torch.no_grad():
        next(learn.model.head.parameters()).add_(1.0)  # other weights: another graph, never the stale one
    assert model_digest(learn) != cached[0].stem
    with pytest.raises(vt.ConfigError, match="--tta runs on the torch backend"):
        predict_files(learn, [folder], tta=True, backend="onnx")
    with pytest.raises(vt.ConfigError, match="backend must be one of torch, onnx"):
        predict_files(learn, [folder], backend="tensorrt")
    learn.export(tmp_path / "model.vt")
    r = subprocess.run([sys.executable, "-m", "visiontune", "predict", str(tmp_path / "model.vt"), str(folder),
                        "--backend", "onnx", "--csv", str(tmp_path / "p.csv")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "predicted 7 of 8 images" in r.stderr and "broken.jpg" in (tmp_path / "p.csv").read_text()

"""The exported model file: one safe file that rebuilds an inference learner without data, network or pickle."""

from __future__ import annotations

import json
import pickle
import shutil
import socket
import struct

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import visiontune as vt
from infer_helpers import CLASSES, tiny_learner
from visiontune.infer import InferenceData
from visiontune.infer.export import MODEL_FORMAT_VERSION, read_model_header


@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    return tiny_learner(tmp_path_factory.mktemp("export") / "colors")


@pytest.fixture(scope="module")
def exported(learn, tmp_path_factory):
    return learn.export(tmp_path_factory.mktemp("vt") / "model.vt")


class Payload:
    """Unpickling this creates the file `marker`: proof that a loader executed code from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_export_load_predictions_identical(learn, exported, tmp_path):
    valid = learn.data.path / "valid"
    probs, targets = learn.get_preds("valid")
    # The training data is gone: the loaded learner needs only the file (and the images to predict).
    moved = shutil.copy(exported, tmp_path / "copy.vt")
    loaded = vt.load_learner(moved, device="cpu")
    assert isinstance(loaded.data, InferenceData)
    assert loaded.data.classes == learn.data.classes and loaded.data.size == 32
    assert loaded.preprocess.mean == learn.preprocess.mean == (0.5, 0.5, 0.5)  # the model carries it
    new_probs, new_targets = loaded.get_preds(valid)
    assert new_targets is None
    assert torch.equal(new_probs, probs)
    item = sorted((valid / "green").iterdir())[0]
    label, idx, p = loaded.predict(item)
    expected = learn.predict(item)
    assert (label, idx) == expected[:2] and label in CLASSES
    assert torch.equal(p, expected[2])


def test_exported_file_holds_what_a_deployment_needs(learn, exported):
    cfg = read_model_header(exported)
    assert cfg["model"] == learn.model.config.to_dict()
    assert cfg["classes"] == list(learn.data.classes)
    assert cfg["size"] == 32 and cfg["presize"] == learn.data.presize
    assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.5] * 3
    assert cfg["is_multi_label"] is False and cfg["thresh"] == 0.5
    assert cfg["augment"]["augment"] == "side_on"
    assert cfg["visiontune"] == vt.__version__
    with open(exported, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    assert header["__metadata__"]["format"] == "visiontune-model"
    assert header["__metadata__"]["format_version"] == str(MODEL_FORMAT_VERSION)
    assert set(header) - {"__metadata__"} == set(learn.model.state_dict())


def test_load_learner_never_unpickles_and_needs_no_network(exported, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("load_learner must not unpickle or connect")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    loaded = vt.load_learner(exported, device="cpu")
    assert loaded.predict(torch.zeros(3, 40, 40))[0] in CLASSES


@pytest.mark.parametrize("kind", ["pickle", "torch_save", "in_header"])
def test_pickle_payload_is_refused_without_executing(tmp_path, kind):
    marker = tmp_path / "executed"
    bad = tmp_path / "model.vt"
    if kind == "pickle":  # what fastai's export.pkl is
        bad.write_bytes(pickle.dumps({"model": Payload(marker)}))
    elif kind == "torch_save":  # a zip whose data.pkl holds the payload
        torch.save({"model": Payload(marker)}, bad)
    else:  # a well-formed visiontune header whose strings and tensor bytes carry a pickle
        blob = pickle.dumps(Payload(marker))
        meta = {"format": "visiontune-model", "format_version": "1", "config": blob.hex(),
                "payload": blob.decode("latin1")}
        save_file({"payload": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}, str(bad), metadata=meta)
    with pytest.raises(vt.ExportError) as e:
        vt.load_learner(bad)
    assert not marker.exists(), "a pickle payload was executed"
    assert str(bad) in str(e.value)
    if kind != "in_header":
        assert "never unpickles" in str(e.value)


@pytest.mark.parametrize("cut", [4, 100, 0.5, -1])
def test_truncated_file_is_refused(exported, tmp_path, cut):
    raw = exported.read_bytes()
    n = cut if isinstance(cut, int) and cut > 0 else int(len(raw) * cut) if cut > 0 else len(raw) - 1
    bad = tmp_path / "cut.vt"
    bad.write_bytes(raw[:n])
    with pytest.raises(vt.ExportError, match="truncated|too short") as e:
        vt.load_learner(bad)
    assert str(bad) in str(e.value)


def test_newer_format_version_is_refused(learn, tmp_path, monkeypatch):
    import visiontune.infer.export as ex

    monkeypatch.setattr(ex, "MODEL_FORMAT_VERSION", MODEL_FORMAT_VERSION + 1)
    newer = learn.export(tmp_path / "newer.vt")
    monkeypatch.setattr(ex, "MODEL_FORMAT_VERSION", MODEL_FORMAT_VERSION)
    with pytest.raises(vt.ExportError, match=f"format {MODEL_FORMAT_VERSION + 1}.*pip install -U visiontune"):
        vt.load_learner(newer)


def test_wrong_kinds_of_file_get_clear_errors(learn, tmp_path):
    img = tmp_path / "cat.png"
    Image.new("RGB", (8, 8)).save(img)
    with pytest.raises(vt.ExportError, match="it is an image"):
        vt.load_learner(img)
    weights = learn.save(tmp_path / "weights")
    with pytest.raises(vt.ExportError, match=r"learn\.save\(\).*visiontune export"):
        vt.load_learner(weights)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(vt.ExportError, match="not a visiontune model"):
        vt.load_learner(other)
    (tmp_path / "empty.vt").write_bytes(b"")
    with pytest.raises(vt.ExportError, match="empty"):
        vt.load_learner(tmp_path / "empty.vt")
    with pytest.raises(vt.ExportError, match="No model file"):
        vt.load_learner(tmp_path / "missing.vt")
    with pytest.raises(vt.ExportError, match="is a folder"):
        vt.load_learner(tmp_path)


def test_weights_that_do_not_fit_the_described_model(learn, exported, tmp_path):
    from safetensors import safe_open

    with safe_open(str(exported), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    state.pop(next(k for k in state if k.startswith("head.")))
    save_file(state, str(tmp_path / "partial.vt"), metadata=meta)
    with pytest.raises(vt.ExportError, match="do not match their checksum"):  # the digest notices first
        vt.load_learner(tmp_path / "partial.vt")
    meta.pop("sha256")  # a file from before the digests: the shapes still say what is wrong
    save_file(state, str(tmp_path / "partial.vt"), metadata=meta)
    with pytest.raises(vt.ExportError, match="do not fit"):
        vt.load_learner(tmp_path / "partial.vt")


def test_loaded_learner_explains_it_has_no_training_data(exported):
    loaded = vt.load_learner(exported, device="cpu")
    with pytest.raises(vt.ConfigError, match="loaded from an exported model"):
        loaded.get_preds("valid")


def test_export_default_path_is_in_learner_path(learn):
    path = learn.export()
    assert path == learn.path / "model.vt" and path.is_file()
    path.unlink()

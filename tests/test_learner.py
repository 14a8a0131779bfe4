"""The Learner end to end on tiny generated images: it learns, saves, loads, predicts; freezing is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import visiontune as vt


@pytest.fixture
def learn(image_folder):
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(image_folder, size=32, bs=8)
    return vt.vision_learner(data, metrics=("accuracy", "error_rate"))


def test_train_one_epoch_save_load_same_predictions(learn, tmp_path):
    learn.fit_one_cycle(1)
    row = learn.recorder.last
    assert set(row) >= {"epoch", "train_loss", "valid_loss", "accuracy", "error_rate", "time"}
    assert row["accuracy"] >= 0.9  # two colours: chance is 0.5
    assert row["error_rate"] == pytest.approx(1 - row["accuracy"])
    probs, targets = learn.get_preds()
    assert probs.shape == (12, 2) and torch.allclose(probs.sum(1), torch.ones(12))
    assert (probs.argmax(1) == targets).float().mean().item() == pytest.approx(row["accuracy"])
    path = learn.save(tmp_path / "m")
    assert path.suffix == ".safetensors" and path.exists()

    torch.manual_seed(123)
    other = vt.vision_learner(learn.data)
    other.load(tmp_path / "m")
    probs2, _ = other.get_preds()
    assert torch.allclose(probs, probs2, atol=1e-6)


def test_predict_accepts_path_pil_numpy_tensor(learn):
    learn.fit_one_cycle(1)
    f = learn.data.valid_ds.files[0]
    label, idx, probs = learn.predict(f)
    assert label == learn.data.classes[idx] and probs.shape == (2,)
    img = Image.open(f)
    arr = np.asarray(img.convert("RGB"))
    for item in (img, arr, torch.from_numpy(arr.copy()).permute(2, 0, 1)):
        l2, i2, p2 = learn.predict(item)
        assert i2 == idx and torch.allclose(p2, probs, atol=1e-5)
    p_batch, _ = learn.get_preds()
    assert torch.allclose(p_batch[0], probs, atol=1e-5)


@pytest.mark.parametrize("freeze_bn_stats", [True, False])
def test_freeze_keeps_body_weights_but_bn_updates(image_folder, freeze_bn_stats):
    data = vt.ImageData.from_folder(image_folder, size=32, bs=8)
    learn = vt.vision_learner(data, freeze_bn_stats=freeze_bn_stats)
    body_convs = {n: p.detach().clone() for n, p in learn.model.body.named_parameters() if p.ndim == 4}
    bn = next(m for m in learn.model.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn_before = (bn.weight.detach().clone(), bn.running_mean.clone())
    head_before = [p.detach().clone() for p in learn.model.head.parameters()]
    learn.fit(3e-3, 1)
    for n, p in learn.model.body.named_parameters():
        if n in body_convs:
            assert torch.equal(p, body_convs[n]), n
    assert not torch.equal(bn.weight, bn_before[0])  # BatchNorm affine weights train (train_bn)
    # running statistics stay put in frozen groups unless freeze_bn_stats=False (fastai's behaviour)
    assert torch.equal(bn.running_mean, bn_before[1]) == freeze_bn_stats
    assert any(not torch.equal(a, b) for a, b in zip(head_before, learn.model.head.parameters()))


def test_trainable_parameter_sets(learn):
    m = learn.model
    conv_body = [p for mod in m.body.modules() if isinstance(mod, torch.nn.Conv2d) for p in mod.parameters()]
    assert not any(p.requires_grad for p in conv_body)
    assert all(p.requires_grad for p in m.head.parameters())
    learn.freeze_to(1)  # late body + head train
    g0 = [p for mod in m.layer_groups[0] for p in mod.parameters() if p.ndim == 4]
    g1 = [p for mod in m.layer_groups[1] for p in mod.parameters() if p.ndim == 4]
    assert not any(p.requires_grad for p in g0) and all(p.requires_grad for p in g1)
    learn.unfreeze()
    assert all(p.requires_grad for p in m.parameters())


def test_epoch_table_is_printed(image_folder, capsys, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_QUIET", "0")
    data = vt.ImageData.from_folder(image_folder, size=32, bs=8)
    learn = vt.vision_learner(data, metrics=("accuracy",))
    learn.fit_one_cycle(2)
    out = capsys.readouterr().out
    lines = [l.split() for l in out.splitlines() if l.strip()]
    assert lines[0] == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert [l[0] for l in lines[1:3]] == ["0", "1"]


def test_multi_label_metric_names_map(image_folder):
    from visiontune.train.metrics import get_metrics

    assert [m.name for m in get_metrics(["accuracy"], multi_label=True)] == ["accuracy_multi"]
    with pytest.raises(vt.ConfigError, match="Valid:"):
        get_metrics(["acuracy"])

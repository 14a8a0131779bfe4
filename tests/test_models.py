"""Backbones: the embedded Lite0 weights are real, heads have the right shapes, freezing is exact,
and missing weights fail loudly instead of training from random weights."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from visiontune.errors import WeightsError
from visiontune.models import HeadConfig, create_body, create_model
from visiontune.models import registry, weights as W
from visiontune.models.registry import lite0_state_from_lukemelas

skimage_data = pytest.importorskip("skimage.data")


def _classify(model: torch.nn.Module, arr: np.ndarray) -> int:
    img = Image.fromarray(arr).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    x = (x - 0.5) / 0.5
    with torch.inference_mode():
        return int(model.eval()(x).argmax(1))


def test_embedded_lite0_weights_classify_real_photos():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = W.load_state_file(registry._embedded_lite0_path())
    model.load_state_dict(lite0_state_from_lukemelas(state, model))
    # ImageNet classes 281-285 are domestic cats; 967 is espresso.
    assert _classify(model, skimage_data.chelsea()) in {281, 282, 283, 284, 285}
    assert _classify(model, skimage_data.coffee()) == 967


def test_lite0_body_matches_mapped_weights_exactly():
    body = create_body("efficientnet_lite0")
    assert body.weights_source == "embedded"
    assert body.mean == body.std == (0.5, 0.5, 0.5)
    state = W.load_state_file(registry._embedded_lite0_path())
    assert torch.equal(body.body.model.conv_stem.weight, state["_conv_stem.weight"])
    assert len(body.groups) == 2 and all(body.groups)


def test_head_shapes_and_layer_groups():
    model = create_model("efficientnet_lite0", 7)
    assert model.n_features == 2 * 1280
    x = torch.randn(3, 3, 64, 64)
    assert model.features(x).shape == (3, 2560)
    assert model(x).shape == (3, 7)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2560, 512), (512, 7)]
    assert len(model.layer_groups) == 3
    lin = create_model("efficientnet_lite0", 4, head=HeadConfig(kind="linear"))
    assert [type(m) for m in lin.head] == [torch.nn.Linear]


def test_explicit_weights_file_is_used(tmp_path):
    src = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(src.conv1.weight, 0.125)
    f = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(f))
    body = create_body("resnet18.a1_in1k", weights=f)
    assert body.weights_source == str(f)
    assert torch.all(body.body.model.conv1.weight == 0.125)


def test_wrong_weights_file_names_the_problem(tmp_path):
    f = tmp_path / "lite0.safetensors"
    save_file({"foo": torch.zeros(3)}, str(f))
    with pytest.raises(WeightsError, match="missing"):
        create_body("resnet18.a1_in1k", weights=f)


def test_pickled_weights_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    f = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, f)
    with pytest.raises(WeightsError, match="Could not read"):
        W.load_state_file(f)


@pytest.mark.parametrize("arch", ["resnet34", "convnext_tiny"])
def test_missing_weights_offline_is_one_clear_error(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(W, "is_online", lambda url, timeout=2.0: False)
    monkeypatch.setattr(registry, "is_online", lambda url, timeout=2.0: False)
    with pytest.raises(WeightsError) as e:
        create_body(arch)
    msg = str(e.value)
    assert arch in msg and "--weights" in msg and "Looked in" in msg and str(tmp_path) in msg


def test_pretrained_false_is_explicit_and_random():
    a = create_body("resnet18", pretrained=False)
    assert a.weights_source == "random"
    with pytest.raises(Exception, match="pretrained=False"):
        create_body("resnet18", pretrained=False, weights="x.pth")


def test_unknown_architecture_suggests_names():
    from visiontune.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown architecture 'resnet35'"):
        create_body("resnet35")

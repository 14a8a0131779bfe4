"""Precomputed activations: reused while the key holds, rebuilt when anything in it changes, never read
half-written, and numerically the same as running the body on the images."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import visiontune as vt
from visiontune.train.precompute import ActivationCache, cache_key


class BodyCounter:
    """Counts images that go through the body (a forward hook, not a mock)."""

    def __init__(self, learn):
        self.n = 0
        learn.model.body.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.n += inputs[0].shape[0]


def make(folder, **kw):
    data = vt.ImageData.from_folder(folder, size=kw.pop("size", 32), bs=8)
    return vt.vision_learner(data, precompute=True, **kw)


def test_cache_is_built_once_then_reused(image_folder):
    learn = make(image_folder)
    count = BodyCounter(learn)
    learn.fit_one_cycle(2, 1e-2)
    assert count.n == 32 + 12  # train and valid, once each, whatever the number of epochs
    assert learn.recorder.last["accuracy"] >= 0.9

    again = make(image_folder)  # a new learner, same key: the files on disk are used
    count2 = BodyCounter(again)
    again.fit_one_cycle(1, 1e-2)
    again.get_preds()
    assert count2.n == 0
    assert again.activation_cache.n_computed == 0


@pytest.mark.parametrize("change", ["touch", "size", "arch", "weights"])
def test_cache_rebuilt_when_key_changes(image_folder, change):
    make(image_folder).fit(1e-2, 1)
    kw = {}
    if change == "touch":
        f = sorted((image_folder / "train" / "red").iterdir())[0]
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    elif change == "size":
        kw["size"] = 40
    elif change == "arch":
        kw.update(arch="resnet18", pretrained=False)
    learn = make(image_folder, **kw)
    if change == "weights":
        with torch.no_grad():
            next(learn.model.body.parameters()).mul_(1.01)
    count = BodyCounter(learn)
    learn.fit(1e-2, 1)
    # touching a train file invalidates the train features only
    assert count.n == (32 if change == "touch" else 44)


def test_truncated_cache_is_rebuilt_not_read(image_folder):
    learn = make(image_folder)
    learn.fit(1e-2, 1)
    key, _ = cache_key(learn, "train")
    feats_path = learn.activation_cache.paths(key)[0]
    data = feats_path.read_bytes()
    feats_path.write_bytes(data[: len(data) // 2])
    again = make(image_folder)
    count = BodyCounter(again)
    again.fit(1e-2, 1)
    assert count.n == 32  # train rebuilt; valid still good
    feats, idx = again.activation_cache.get(again, "train")
    assert feats.shape == (32, again.model.n_features)


def test_meta_written_last(image_folder, tmp_path):
    learn = make(image_folder)
    cache = ActivationCache(tmp_path)
    key, desc = cache_key(learn, "valid")
    assert cache.read(key, desc) is None
    feats, idx = cache.get(learn, "valid")
    assert cache.paths(key)[2].exists()
    cache.paths(key)[2].unlink()  # as if the process died before the meta was written
    assert cache.read(key, desc) is None


def test_precomputed_predictions_equal_image_path(image_folder):
    learn = make(image_folder)
    learn.fit_one_cycle(1, 1e-2)
    p_feat, t_feat = learn.get_preds()
    learn.precompute = False
    p_img, t_img = learn.get_preds()
    assert torch.equal(t_feat, t_img)
    assert torch.allclose(p_feat, p_img, atol=1e-4)


def test_precompute_needs_frozen_body_and_unfreeze_turns_it_off(image_folder):
    learn = make(image_folder)
    learn.unfreeze()
    assert learn.precompute is False
    with pytest.raises(vt.ConfigError, match="frozen body"):
        learn.precompute = True


def test_linear_model_on_features(image_folder):
    learn = make(image_folder, head="linear")
    assert [type(m) for m in learn.model.head] == [torch.nn.Linear]
    learn.fit(1e-2, 3)
    assert learn.recorder.last["accuracy"] >= 0.9


def test_features_are_float32_rows_per_image(image_folder):
    learn = make(image_folder)
    feats, idx = ActivationCache(learn.data.cache_dir / "activations").get(learn, "valid")
    assert feats.dtype == np.float32 and feats.shape == (12, 2560) and list(idx) == list(range(12))

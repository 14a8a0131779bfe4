"""get_preds, predict and tta on a learner and on a loaded model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import visiontune as vt
from infer_helpers import CLASSES, tiny_learner
from visiontune.data.transforms import AugmentConfig
from visiontune.infer.tta import TTAViews, symmetries, view_plan


@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    return tiny_learner(tmp_path_factory.mktemp("predict") / "colors")


def valid_files(learn):
    return learn.data.valid_ds.files


# ----------------------------------------------------------------------------- get_preds


def test_get_preds_is_in_file_order_with_targets(learn):
    probs, targets = learn.get_preds("valid")
    assert probs.shape == (12, 3) and torch.allclose(probs.sum(1), torch.ones(12))
    assert targets.tolist() == list(learn.data.valid_ds.targets)
    # One image at a time through predict gives the same rows: batching and order change nothing.
    for i in (0, 5, 11):
        assert torch.allclose(learn.predict(valid_files(learn)[i])[2], probs[i], atol=1e-6)


def test_get_preds_with_loss_matches_cross_entropy(learn):
    probs, targets, losses = learn.get_preds("valid", with_loss=True)
    expected = -torch.log(probs[torch.arange(len(targets)), targets])
    assert torch.allclose(losses, expected, atol=1e-5)


def test_get_preds_on_new_files_folders_and_globs(learn):
    probs, _ = learn.get_preds("valid")
    files = valid_files(learn)
    root = learn.data.path / "valid"
    p_list, t = learn.get_preds([files[4], files[0]])
    assert t is None and torch.allclose(p_list, probs[[4, 0]], atol=1e-6)
    p_folder, _ = learn.get_preds(root)
    assert torch.equal(p_folder, probs)  # new files are decoded and resized exactly as the valid set is
    p_glob, _ = learn.get_preds(str(root / "red" / "*.png"))
    assert torch.allclose(p_glob, probs[-4:], atol=1e-6)
    with pytest.raises(vt.DataError, match="no such file"):
        learn.get_preds([root / "nope.png"])
    with pytest.raises(vt.ConfigError, match="labelled"):
        learn.get_preds(root, with_loss=True)
    with pytest.raises(vt.ConfigError, match="'train', 'valid' or 'test'"):
        learn.get_preds("valdi")


def test_get_preds_leaves_out_undecodable_files_with_their_positions(learn, tmp_path):
    from visiontune.infer import get_preds

    good = valid_files(learn)[:3]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.warns(UserWarning, match="broken.png"):
        probs, _, index = get_preds(learn, [good[0], bad, good[1], good[2]], with_index=True)
    assert index.tolist() == [0, 2, 3] and probs.shape == (3, 3)
    other = tmp_path / "also_broken.png"
    other.write_bytes(b"")
    with pytest.warns(UserWarning):
        probs, _, index = get_preds(learn, [bad, other], with_index=True, bs=1)
    assert probs.shape == (0, 3) and index.tolist() == []


def test_get_preds_with_precompute_matches_images(learn):
    probs, _ = learn.get_preds("valid")
    learn.precompute = True
    try:
        cached, _ = learn.get_preds("valid")
    finally:
        learn.precompute = False
    assert torch.allclose(cached, probs, atol=1e-5)


# ----------------------------------------------------------------------------- predict


def test_predict_accepts_path_pil_numpy_and_tensor_alike(learn):
    path = valid_files(learn)[0]
    label, idx, probs = learn.predict(path)
    assert learn.data.classes[idx] == label and probs.shape == (3,)
    im = Image.open(path).convert("RGB")
    arr = np.array(im)
    chw = torch.from_numpy(arr).permute(2, 0, 1)
    for item in (str(path), im, arr, arr.astype(np.float32) / 255, np.moveaxis(arr, -1, 0), chw, chw.float() / 255,
                 chw[None]):
        assert torch.allclose(learn.predict(item)[2], probs, atol=1e-5), type(item)


def test_predict_grayscale_and_rgba_inputs(learn):
    gray = np.full((30, 30), 128, np.uint8)
    rgba = np.zeros((30, 30, 4), np.uint8)
    rgba[..., 3] = 255
    for item in (gray, rgba, torch.zeros(1, 30, 30), np.zeros((30, 30), bool)):
        label, _, probs = learn.predict(item)
        assert label in CLASSES and torch.isfinite(probs).all()


def test_predict_bad_items_name_the_problem(learn, tmp_path):
    with pytest.raises(vt.DataError, match="No image file"):
        learn.predict(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(vt.DataError, match="bad.jpg"):
        learn.predict(tmp_path / "bad.jpg")
    with pytest.raises(vt.ConfigError, match="Cannot predict on a list"):
        learn.predict([1, 2, 3])
    with pytest.raises(vt.ConfigError, match="shape"):
        learn.predict(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(vt.ConfigError, match="NaN"):
        learn.predict(np.full((8, 8, 3), np.nan, np.float32))


def test_predict_restores_training_mode(learn):
    learn.model.train()
    learn.predict(valid_files(learn)[0])
    assert learn.model.training
    learn.model.eval()


def test_multi_label_predict_returns_labels_above_threshold(learn, tmp_path):
    exported = learn.export(tmp_path / "m.vt")
    loaded = vt.load_learner(exported, device="cpu")
    loaded.loss_func = torch.nn.BCEWithLogitsLoss()
    loaded.data.is_multi_label = True
    loaded.thresh = 0.0
    labels, idx, probs = loaded.predict(valid_files(learn)[0])
    assert labels == learn.data.classes and idx == [0, 1, 2] and (probs > 0).all() and probs.sum() != pytest.approx(1)
    loaded.thresh = 1.0
    assert loaded.predict(valid_files(learn)[0])[0] == []


# ----------------------------------------------------------------------------- tta


def test_tta_shapes_and_n0_is_get_preds(learn):
    probs, targets = learn.get_preds("valid")
    p0, t0 = learn.tta(n=0)
    assert torch.equal(p0, probs) and torch.equal(t0, targets)
    p4, t4 = learn.tta(n=4)
    assert p4.shape == probs.shape and torch.equal(t4, targets)
    assert torch.allclose(p4.sum(1), torch.ones(len(p4)), atol=1e-5)
    assert not torch.allclose(p4, probs, atol=1e-4)  # the augmented views changed something
    assert torch.equal(p4, learn.tta(n=4)[0])  # deterministic views: same numbers every call


def test_tta_mixes_plain_and_augmented_with_beta(learn):
    probs, _ = learn.get_preds("valid")
    plain, _ = learn.tta(n=3, beta=1.0)
    assert torch.allclose(plain, probs, atol=1e-5)
    aug, _ = learn.tta(n=3, beta=0.0)
    mixed, _ = learn.tta(n=3, beta=0.25)
    assert torch.allclose(mixed, 0.25 * probs + 0.75 * aug, atol=1e-5)


def test_tta_on_a_folder_with_a_loaded_model(learn, tmp_path):
    loaded = vt.load_learner(learn.export(tmp_path / "m.vt"), device="cpu")
    p, t = loaded.tta(learn.data.path / "valid")
    expected, _ = learn.tta("valid")
    assert t is None and torch.allclose(p, expected, atol=1e-5)


def test_tta_with_precompute_runs_on_images(learn):
    expected, _ = learn.tta(n=2)
    learn.precompute = True
    try:
        p, _ = learn.tta(n=2)
    finally:
        learn.precompute = False
    assert torch.allclose(p, expected, atol=1e-5)


def test_tta_views_follow_the_training_augmentation():
    assert symmetries(AugmentConfig(None)) == 1
    assert symmetries(AugmentConfig("side_on")) == 2
    assert symmetries(AugmentConfig("side_on", flip=False)) == 1
    assert symmetries(AugmentConfig("top_down")) == 8
    assert [s for s, _ in view_plan(4, 2)] == [4, 0, 4, 0]  # 4 = horizontal flip
    assert [s for s, _ in view_plan(4, 1)] == [0, 0, 0, 0]
    assert len({s for s, _ in view_plan(8, 8)}) == 8
    x = torch.arange(3 * 36 * 40, dtype=torch.float32).reshape(3, 36, 40).to(torch.uint8)
    views = TTAViews(32, 2, 1.0, AugmentConfig("side_on"))(x)
    assert views.shape == (3, 3, 32, 32)
    assert torch.equal(views[1], views[0].flip(-1))  # scale 1: center crop, flipped
    zoom = TTAViews(32, 1, 1.25, AugmentConfig(None))(x)
    assert not torch.equal(zoom[1], zoom[0])


def test_tta_rejects_bad_arguments(learn):
    for kwargs, msg in (({"n": -1}, "negative"), ({"beta": 2}, "beta"), ({"scale": 0.9}, "scale")):
        with pytest.raises(vt.ConfigError, match=msg):
            learn.tta(**kwargs)

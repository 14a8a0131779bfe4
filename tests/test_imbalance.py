"""Lopsided and small data: counts and the imbalance ratio, class weights from train counts only, the
balanced sampler, per-class metrics equal to scikit-learn's, and tuned thresholds that survive export."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import COLORS, color_image
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)

import visiontune as vt
from visiontune.data.balance import BalancedSampler, item_weights


def lopsided_folder(root, n_train=(40, 4), n_valid=(6, 6), classes=("red", "blue"), seed=0):
    rng = np.random.default_rng(seed)
    for split, ns in (("train", n_train), ("valid", n_valid)):
        for c, n in zip(classes, ns):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                color_image(rng, COLORS[c]).save(d / f"{c}_{i}.png")
    return root


def test_counts_ratio_and_the_warning_with_its_fix(tmp_path):
    data = vt.ImageData.from_folder(lopsided_folder(tmp_path / "d"), size=32)
    assert data.class_counts() == {"blue": 4, "red": 40}
    assert data.imbalance_ratio == pytest.approx(10.0) and data.is_imbalanced
    text = data.summary()
    assert "imbalance 10.0:1" in text and "fewer than 10 training images (blue)" in text
    assert "samples every class equally often" in text and "--no-balanced" in text  # what it does, and the way out
    plain = vt.ImageData.from_folder(lopsided_folder(tmp_path / "d"), size=32, sampler=None).summary()
    assert "class_weights='auto'" in plain and "--class-weights none" in plain


def test_lopsided_data_is_sampled_balanced_by_default_and_weights_replace_it_when_asked(tmp_path, capsys,
                                                                                       monkeypatch):
    monkeypatch.delenv("VISIONTUNE_QUIET", raising=False)
    data = vt.ImageData.from_folder(lopsided_folder(tmp_path / "d"), size=32, bs=8)
    assert data.sampler == "balanced" and data.balances_automatically
    learn = vt.vision_learner(data)
    assert isinstance(learn.train_dl.dl.sampler, BalancedSampler)
    assert learn.class_weights is None and learn.loss_func.weight is None  # one correction, not two
    assert "sampled equally often" in capsys.readouterr().err
    weighted = vt.vision_learner(data, class_weights="auto")
    assert data.sampler is None and not isinstance(weighted.train_dl.dl.sampler, BalancedSampler)
    assert weighted.class_weights is not None and weighted.loss_func.weight is not None
    multi_free = vt.ImageData.from_folder(lopsided_folder(tmp_path / "e", n_train=(8, 8)), size=32)
    assert multi_free.sampler is None and not multi_free.balances_automatically  # balanced data: plain sampling


def test_class_weights_none_from_the_shell_turns_the_weighting_off(tmp_path):
    """`--class-weights none` used to be read as unset (None: the default, auto weights on lopsided data), so
    it changed nothing; the imbalance bench's "plain" rows came out equal to its "weights" rows."""
    from visiontune.runs.build import build_data, build_learner
    from visiontune.runs.config import TrainConfig

    folder = lopsided_folder(tmp_path / "d")
    base = {"data": str(folder), "size": 32, "bs": 8, "balanced": "false"}
    off = TrainConfig.from_dict({**base, "class_weights": "none"})
    assert off.class_weights == "none" and TrainConfig.from_dict({**base, "class_weights": "null"}).class_weights is None
    learn = build_learner(off, build_data(off))
    assert learn.class_weights is None and learn.loss_func.weight is None
    on = TrainConfig.from_dict({**base, "class_weights": "auto"})
    assert build_learner(on, build_data(on)).loss_func.weight is not None
    unset = TrainConfig.from_dict(base)
    assert build_learner(unset, build_data(unset)).loss_func.weight is not None  # the default on lopsided data


def test_auto_class_weights_come_from_train_counts_only(tmp_path):
    a = vt.ImageData.from_folder(lopsided_folder(tmp_path / "a", n_valid=(6, 6)), size=32, sampler=None)
    b = vt.ImageData.from_folder(lopsided_folder(tmp_path / "b", n_valid=(2, 9)), size=32, sampler=None)
    wa = vt.vision_learner(a).class_weights
    wb = vt.vision_learner(b).class_weights
    assert wa == wb  # the valid counts differ, the weights do not
    expected = np.array([1 / 4, 1 / 40]) / np.mean([1 / 4, 1 / 40])  # inverse frequency, mean 1
    assert [wa["blue"], wa["red"]] == pytest.approx(expected.tolist(), rel=1e-5)
    learn = vt.vision_learner(a)
    assert torch.allclose(learn.loss_func.weight.cpu(), torch.tensor(expected, dtype=torch.float32))
    assert "balanced_accuracy" in [m.name for m in learn.metrics]  # the default metrics see the rare class
    plain = vt.vision_learner(a, class_weights=False)
    assert plain.class_weights is None and plain.loss_func.weight is None
    mine = vt.vision_learner(a, class_weights={"blue": 5.0})
    assert mine.class_weights == {"blue": 5.0, "red": 1.0}
    with pytest.raises(vt.ConfigError, match="green"):
        vt.vision_learner(a, class_weights={"green": 2.0})


def test_balanced_data_is_left_alone(image_folder):
    learn = vt.vision_learner(vt.ImageData.from_folder(image_folder, size=32))
    assert learn.class_weights is None and [m.name for m in learn.metrics] == ["accuracy"]


def test_balanced_sampler_draws_classes_uniformly_with_the_data_length():
    targets = np.array([0] * 90 + [1] * 10)
    sampler = BalancedSampler(item_weights(targets, 2), seed=1)
    seen = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(targets)
        seen += drawn
    share = np.mean(targets[seen] == 1)
    assert 0.45 < share < 0.55  # uniform over classes, not the 10% of the data
    sampler.set_epoch(3)
    again = list(sampler)
    sampler.set_epoch(3, start=10)
    assert list(sampler) == again[10:]  # an epoch repeats, and a resume mid-epoch continues it
    ranks = [BalancedSampler(item_weights(targets, 2), seed=1, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(3)
    shards = [list(r) for r in ranks]
    assert sorted(shards[0] + shards[1]) == sorted(again)  # DDP: the same draws, sharded


def test_balanced_sampler_in_training_and_on_precomputed_features(tmp_path):
    data = vt.ImageData.from_folder(lopsided_folder(tmp_path / "d"), size=32, bs=8, sampler="balanced")
    learn = vt.vision_learner(data, class_weights=False)
    assert isinstance(learn.train_dl.dl.sampler, BalancedSampler)
    learn.fit(1e-3, 1)
    learn = vt.vision_learner(data, class_weights=False, precompute=True)
    assert isinstance(learn.train_dl.dl.sampler, BalancedSampler)
    learn.fit(1e-2, 1)


def test_multi_label_gets_positive_weights(tmp_path):
    root = tmp_path / "ml"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        c = "red" if i % 6 else "blue"
        color_image(rng, COLORS[c]).save(root / "train" / f"{i}.png")
        rows.append((f"{i}.png", c + (" dark" if i % 2 else "")))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("name", "tags"), *rows])
    data = vt.ImageData.from_csv(root, "labels.csv", label_delim=" ", size=32, valid_pct=0.25)
    learn = vt.vision_learner(data, class_weights="auto")
    pos = data.class_counts()
    n = len(data.train_ds)
    # negatives / positives per label, never below 1 (a frequent label is not down-weighted)
    assert learn.loss_func.pos_weight.tolist() == pytest.approx([max(1.0, (n - pos[c]) / pos[c]) for c in data.classes])


def test_per_class_metrics_equal_scikit_learn(tmp_path):
    data = vt.ImageData.from_folder(lopsided_folder(tmp_path / "d", classes=("red", "green", "blue"),
                                                    n_train=(20, 8, 4), n_valid=(5, 5, 5)), size=32, bs=8)
    learn = vt.vision_learner(data, metrics=("accuracy", "balanced_accuracy", "f1_macro"))
    learn.fit(1e-3, 1)
    interp = learn.interpret()
    y, pred = interp.targets.numpy(), interp.probs.argmax(1).numpy()
    p, r, f1, s = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    rows = {row["class"]: row for row in interp.per_class()}
    for i, c in enumerate(data.classes):
        assert (rows[c]["precision"], rows[c]["recall"], rows[c]["f1"], rows[c]["support"]) == pytest.approx(
            (p[i], r[i], f1[i], s[i]))
    worst_first = [row["f1"] for row in interp.per_class(sort_by="f1")]
    assert worst_first == sorted(worst_first)
    metrics = learn.validate()
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert metrics["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))


def test_tuned_thresholds_survive_export_load_and_onnx(tmp_path):
    pytest.importorskip("onnx")
    root = tmp_path / "ml"
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        c = ("red", "green", "blue")[i % 3]
        color_image(rng, COLORS[c]).save(root / "train" / f"{i}.png")
        rows.append((f"{i}.png", c + (" noisy" if i % 4 == 0 else "")))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("name", "tags"), *rows])
    data = vt.ImageData.from_csv(root, "labels.csv", label_delim=" ", size=32, bs=8, valid_pct=0.3)
    learn = vt.vision_learner(data)
    learn.fit_one_cycle(2)
    chosen = learn.tune_thresholds(beta=2)
    assert set(chosen) == set(data.classes) and learn.thresh == [chosen[c] for c in data.classes]
    loaded = vt.load_learner(learn.export(tmp_path / "m.vt"), device="cpu")
    assert loaded.thresh == learn.thresh
    f = data.valid_ds.files[0]
    labels, idx, probs = loaded.predict(f)
    assert idx == [j for j, (p, t) in enumerate(zip(probs.tolist(), learn.thresh)) if p > t]
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(learn.export_onnx(tmp_path / "m.onnx"))).metadata_props}
    assert json.loads(meta["threshold"]) == learn.thresh


def test_two_class_decision_threshold_for_a_target_recall(tmp_path):
    data = vt.ImageData.from_folder(lopsided_folder(tmp_path / "d"), size=32, bs=8)
    learn = vt.vision_learner(data)
    learn.fit(1e-3, 1)
    decision = learn.tune_thresholds(target_recall=1.0)
    assert decision["positive"] == "blue" and decision["recall"] == 1.0  # the rarer class by default
    probs, targets = learn.get_preds()
    k = data.classes.index("blue")
    assert ((probs[:, k] >= decision["threshold"]) | (targets != k)).all()  # every blue one is caught
    loaded = vt.load_learner(learn.export(tmp_path / "m.vt"), device="cpu")
    assert loaded.decision["threshold"] == decision["threshold"]
    for f, t in zip(data.valid_ds.files, targets.tolist()):
        if t == k:
            assert loaded.predict(f)[0] == "blue"


@pytest.mark.slow
def test_cli_on_lopsided_data_samples_balanced_and_shows_balanced_accuracy(tmp_path):
    data = lopsided_folder(tmp_path / "d")
    env = {**os.environ, "VISIONTUNE_QUIET": "0", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "visiontune", "train", str(data), "--size", "32", "--bs", "8",
                        "--epochs", "1", "--out", str(tmp_path / "runs")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "imbalance 10.0:1" in r.stdout and "balanced_accuracy" in r.stdout
    assert "sampled equally often" in r.stderr and "balanced sampling" in r.stdout
    assert "small data" in r.stdout and "augment side_on" in r.stdout
    (cfg_path,) = list((tmp_path / "runs").rglob("config.yaml"))
    assert "balanced: null" in cfg_path.read_text()  # recorded as the default: a rerun decides the same way
    log = list(csv.DictReader(open(cfg_path.parent / "log.csv")))
    assert "balanced_accuracy" in log[0]

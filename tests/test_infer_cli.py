"""`visiontune predict` and `visiontune export` from the shell."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml

import visiontune as vt
from infer_helpers import tiny_learner
from test_cli import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A learner, its exported model, and a run-like folder (config.yaml + models/final.safetensors)."""
    root = tmp_path_factory.mktemp("cli")
    learn = tiny_learner(root / "colors")
    run = root / "runs" / "colors" / "run1"
    learn.save(run / "models" / "final")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": str(learn.data.path), "size": 32, "augment": "side_on"}))
    return learn, learn.export(root / "model.vt"), run


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_predict_folder_with_a_corrupt_file(trained, tmp_path):
    learn, model, _ = trained
    folder = tmp_path / "test"
    folder.mkdir()
    files = learn.data.valid_ds.files
    for i, f in enumerate(files[:5]):
        (folder / f"{i}.png").write_bytes(f.read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "7.png").write_bytes(files[6].read_bytes())
    (folder / "2b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (folder / "readme.txt").write_text("not an image")
    out = tmp_path / "preds.csv"
    r = run_cli("predict", model, folder, tmp_path / "missing.png", "--csv", out, "--top-k", "2",
                "--submission", tmp_path / "sub.csv", "--clip", "0.05")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    rows = read_csv(out)
    names = [row["file"].split("/test/")[-1] if "/test/" in row["file"] else row["file"] for row in rows]
    assert names == ["0.png", "1.png", "2.png", "2b.jpg", "3.png", "4.png", "sub/7.png", str(tmp_path / "missing.png")]
    assert "cannot decode" in rows[3]["error"] and rows[3]["label"] == ""
    assert "no such file" in rows[7]["error"]
    probs, _ = learn.get_preds("valid")
    for row, i in zip(rows[:3] + rows[4:6], [0, 1, 2, 3, 4]):
        assert row["error"] == "" and row["label"] == learn.data.classes[int(probs[i].argmax())]
        assert float(row["confidence"]) == pytest.approx(float(probs[i].max()), abs=1e-4)
        assert row["label_2"] in learn.data.classes and row["label_2"] != row["label"]
        for c in learn.data.classes:
            assert 0.05 <= float(row[c]) <= 0.95
    assert "2b.jpg" in r.stdout and "predicted 6 of 8 images" in r.stderr
    sub = read_csv(tmp_path / "sub.csv")
    assert [s["id"] for s in sub] == ["0", "1", "2", "3", "4", "7"]


@pytest.mark.slow
def test_predict_fails_only_when_nothing_could_be_predicted(trained, tmp_path):
    _, model, _ = trained
    (tmp_path / "bad.png").write_bytes(b"garbage")
    r = run_cli("predict", model, tmp_path / "bad.png", tmp_path / "none.png")
    assert r.returncode == 1 and "no image could be predicted" in r.stderr
    assert "Traceback" not in r.stderr
    cut = tmp_path / "cut.vt"
    cut.write_bytes(model.read_bytes()[:1000])
    r = run_cli("predict", cut, tmp_path / "bad.png")
    assert r.returncode == 1 and "truncated" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_export_a_run_folder_then_predict_from_it(trained, tmp_path):
    learn, _, run = trained
    r = run_cli("export", run)
    assert r.returncode == 0, r.stderr
    loaded = vt.load_learner(run / "model.vt", device="cpu")
    assert loaded.data.size == 32 and loaded.data.aug.augment == "side_on"
    probs, _ = learn.get_preds("valid")
    assert torch.allclose(loaded.get_preds(learn.data.path / "valid")[0], probs, atol=1e-6)
    weights = run / "models" / "final.safetensors"
    r = run_cli("predict", weights, learn.data.valid_ds.files[0], "--column", "zebra")
    assert r.returncode == 1 and "not a class" in r.stderr

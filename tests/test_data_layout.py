"""The layouts people download, recognised with no flag (through the CLI), and the ambiguous ones refused with
the flag that settles them. Built from a few dozen real photos of ../shared/data/dogscats."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import visiontune as vt
from visiontune.data.layout import detect_layout
from visiontune.runs.build import build_data
from visiontune.runs.config import TrainConfig

DOGSCATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogscats"
if not DOGSCATS.is_dir():
    DOGSCATS = Path(os.environ.get("VISIONTUNE_DOGSCATS", "/work/shared/data/dogscats"))
pytestmark = pytest.mark.skipif(not DOGSCATS.is_dir(), reason="needs ../shared/data/dogscats")


def photos(kind: str, ids) -> list[Path]:
    return [DOGSCATS / "train" / f"{kind}.{i}.jpg" for i in ids]


def kaggle(root: Path, n: int = 8, test: int = 4) -> Path:
    """train/cat.0.jpg ... + test1/1.jpg ...: the course's lesson-1 download."""
    (root / "train").mkdir(parents=True)
    (root / "test1").mkdir()
    for kind in ("cat", "dog"):
        for p in photos(kind, range(n)):
            shutil.copy(p, root / "train" / p.name)
    for i in range(1, test + 1):
        shutil.copy(DOGSCATS / "test1" / f"{i}.jpg", root / "test1" / f"{i}.jpg")
    return root


def class_folders(root: Path, valid: str = "val", n_train: int = 8, n_valid: int = 3) -> Path:
    """train/<class>/ + val/<class>/: the PyTorch transfer-learning tutorial's layout."""
    for kind, cls in (("cat", "cats"), ("dog", "dogs")):
        for split, ids in (("train", range(n_train)), (valid, range(100, 100 + n_valid))):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for p in photos(kind, ids):
                shutil.copy(p, d / p.name)
    return root


def csv_labelled(root: Path, n: int = 8, multi: bool = False) -> Path:
    """labels.csv (id without extension, label) + train/<id>.jpg: the dog-breeds layout; multi: Planet's tags."""
    (root / "train").mkdir(parents=True)
    rows = []
    for kind in ("cat", "dog"):
        for j, p in enumerate(photos(kind, range(n))):
            ident = f"{kind[0]}{j:03d}"
            shutil.copy(p, root / "train" / f"{ident}.jpg")
            tags = f"{kind} {'indoor' if j % 2 else 'outdoor'}" if multi else kind
            rows.append((ident, tags))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "tags" if multi else "breed"])
        w.writerows(rows)
    return root


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "VISIONTUNE_QUIET": "0", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "visiontune", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


TRAIN = ("--size", "32", "--bs", "8", "--epochs", "1")


def run_folder(out: Path) -> Path:
    (run,) = [p for p in out.rglob("config.yaml")]
    return run.parent


@pytest.mark.slow
def test_kaggle_flat_names_train_with_no_flag_and_write_a_submission(tmp_path):
    data = kaggle(tmp_path / "kag")
    r = cli("train", data, *TRAIN, "--out", tmp_path / "runs", "--clip", "0.05")
    assert r.returncode == 0, r.stderr
    assert "layout: labels in the file names" in r.stdout
    assert f"train: {data / 'train'} (16 images: 13 train, 3 held out as valid)" in r.stdout or \
           f"train: {data / 'train'} (16 images: 12 train, 4 held out as valid)" in r.stdout, r.stdout
    assert f"test: {data / 'test1'} (4 images, unlabelled)" in r.stdout
    assert "cat (8), dog (8)" in r.stdout
    run = run_folder(tmp_path / "runs")
    rows = list(csv.reader(open(run / "submission.csv")))
    assert rows[0] == ["id", "label"] and sorted(r[0] for r in rows[1:]) == ["1", "2", "3", "4"]
    assert all(0.05 <= float(r[1]) <= 0.95 for r in rows[1:])  # --clip, the course's log-loss trick
    assert len(list(csv.reader(open(run / "predictions.csv")))) == 5
    # config.yaml records the resolved layout: it rebuilds the same split
    cfg = TrainConfig.load(run)
    assert cfg.label_re and cfg.train == "train" and cfg.test == "test1"
    again = build_data(cfg)
    first = vt.ImageData.from_path(data, size=32, bs=8)
    assert again.valid_ds.files == first.valid_ds.files and again.classes == ["cat", "dog"]


@pytest.mark.slow
def test_train_val_folders_use_val_as_the_validation_set(tmp_path):
    data = class_folders(tmp_path / "tv")
    (tmp_path / "tv" / "extra").mkdir()
    shutil.copy(photos("cat", [50])[0], tmp_path / "tv" / "extra" / "x.jpg")
    r = cli("train", data, *TRAIN, "--out", tmp_path / "runs")
    assert r.returncode == 0, r.stderr
    assert "layout: class folders" in r.stdout
    assert f"valid: {data / 'val'} (6 images)" in r.stdout
    assert f"train: {data / 'train'} (16 images)" in r.stdout
    assert "held out" not in r.stdout and "20%" not in r.stdout
    assert f"not used: {data / 'extra'}" in r.stdout  # a folder that exists and is not used is named
    assert TrainConfig.load(run_folder(tmp_path / "runs")).valid == "val"


@pytest.mark.slow
def test_a_labels_csv_is_used_with_its_columns_guessed(tmp_path):
    data = csv_labelled(tmp_path / "breeds")
    r = cli("train", data, *TRAIN, "--out", tmp_path / "runs")
    assert r.returncode == 0, r.stderr
    assert "layout: a labels CSV" in r.stdout
    assert "file column 'id', label column 'breed' (guessed" in r.stdout
    cfg = TrainConfig.load(run_folder(tmp_path / "runs"))
    assert (cfg.labels, cfg.fname_col, cfg.label_col, cfg.suffix) == ("labels.csv", "id", "breed", ".jpg")


def test_csv_rows_naming_missing_files_are_counted_and_listed(tmp_path):
    data = csv_labelled(tmp_path / "breeds")
    with open(data / "labels.csv", "a") as f:
        f.write("gone1,cat\ngone2,dog\n")
    d = vt.ImageData.from_path(data, size=32)
    assert len(d.train_ds) + len(d.valid_ds) == 16
    assert any("skipped 2 rows" in n and "gone1.jpg, gone2.jpg" in n for n in d.notes), d.notes


def test_a_multi_label_csv_is_detected(tmp_path):
    data = vt.ImageData.from_path(csv_labelled(tmp_path / "planet", multi=True), size=32)
    assert data.is_multi_label and data.layout.label_delim == " "
    assert data.classes == ["cat", "dog", "indoor", "outdoor"]


def test_folder_names_and_flags_override_every_guess(tmp_path):
    data = class_folders(tmp_path / "d", valid="validation")
    (tmp_path / "d" / "holdout").mkdir()
    for cls in ("cats", "dogs"):
        shutil.copytree(data / "validation" / cls, data / "holdout" / cls)
    assert detect_layout(data).valid == "validation"
    lay = detect_layout(data, valid="holdout")
    assert lay.valid == "holdout"
    assert f"not used: {data / 'validation'} (--valid holdout is the validation set)" in lay.notes
    assert len(vt.ImageData.from_path(data, valid="holdout", size=32).valid_ds) == 6


def test_ambiguous_layouts_stop_with_the_flag_that_settles_them(tmp_path):
    both = class_folders(tmp_path / "both")
    class_folders(tmp_path / "both", valid="valid")
    with pytest.raises(vt.DataError, match=r"several validation folders: valid, val.*--valid"):
        detect_layout(both)
    mixed = kaggle(tmp_path / "mixed")
    shutil.copy(DOGSCATS / "test1" / "9.jpg", mixed / "train" / "IMG_final.jpg")
    with pytest.raises(vt.DataError, match=r"do not match it \(e.g. IMG_final.jpg\).*--label-re"):
        vt.ImageData.from_path(mixed)
    bad_csv = csv_labelled(tmp_path / "badcsv")
    (bad_csv / "labels.csv").write_text("image,breed\nnot-a-file,cat\nnor-this,dog\n")
    with pytest.raises(vt.DataError, match="--fname-col"):
        vt.ImageData.from_path(bad_csv)


def test_a_class_only_in_valid_is_an_error_naming_it(tmp_path):
    data = class_folders(tmp_path / "d")
    (data / "val" / "birds").mkdir()
    shutil.copy(photos("cat", [60])[0], data / "val" / "birds" / "b.jpg")
    with pytest.raises(vt.DataError, match="birds"):
        vt.ImageData.from_path(data)
    flat = kaggle(tmp_path / "k")
    (flat / "valid").mkdir()
    shutil.copy(DOGSCATS / "test1" / "5.jpg", flat / "valid" / "bird.7.jpg")
    shutil.copy(DOGSCATS / "test1" / "6.jpg", flat / "valid" / "bird.8.jpg")
    with pytest.raises(vt.DataError, match="lacks: bird"):
        vt.ImageData.from_path(flat)


def test_cli_error_is_one_message_without_a_traceback(tmp_path):
    both = class_folders(tmp_path / "both")
    class_folders(tmp_path / "both", valid="valid")
    r = cli("train", both, *TRAIN, "--out", tmp_path / "runs")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "--valid NAME" in r.stderr


def test_predict_takes_the_data_folder_and_finds_its_test_set(tmp_path):
    data = kaggle(tmp_path / "kag", n=4, test=3)
    learn = vt.vision_learner(vt.ImageData.from_path(data, size=32, bs=4))
    model = learn.export(tmp_path / "m.vt")
    r = cli("predict", model, data, "--csv", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    files = [row[0] for row in list(csv.reader(open(tmp_path / "p.csv")))[1:]]
    assert [Path(f).name for f in files] == ["1.jpg", "2.jpg", "3.jpg"]

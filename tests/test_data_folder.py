"""ImageData.from_folder: layouts, deterministic splits, and bad input that reads well."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visiontune import DataError, ImageData

from conftest import make_image_folder


def test_train_valid_folders(image_folder):
    data = ImageData.from_folder(image_folder, size=32, bs=4)
    assert data.classes == ["blue", "red"] and data.c == 2
    assert len(data.train_ds) == 32 and len(data.valid_ds) == 12
    assert sorted(np.bincount(data.valid_labels).tolist()) == [6, 6]
    x, y, i = data.train_ds[0]
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 32, 32) and y in (0, 1) and i == 0


def test_split_is_deterministic_stratified_and_seeded(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=20, with_valid=False)
    a = ImageData.from_folder(root, valid_pct=0.25, seed=1)
    b = ImageData.from_folder(root, valid_pct=0.25, seed=1)
    c = ImageData.from_folder(root, valid_pct=0.25, seed=2)
    assert a.valid_ds.files == b.valid_ds.files
    assert a.valid_ds.files != c.valid_ds.files
    assert np.bincount(a.valid_labels).tolist() == [5, 5]
    assert not set(a.valid_ds.files) & set(a.train_ds.files)
    assert len(a.train_ds) + len(a.valid_ds) == 40


def test_no_valid_folder_splits_20_percent(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=10, with_valid=False)
    data = ImageData.from_folder(root)
    assert len(data.valid_ds) == 4 and "20%" in data.summary()


def test_class_folders_without_train_level(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=10, with_valid=False) / "train"
    data = ImageData.from_folder(root)
    assert data.classes == ["blue", "red"] and len(data.valid_ds) == 4


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"does not exist"):
        ImageData.from_folder(tmp_path / "nope")


def test_no_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"has no class folders.*Expected"):
        ImageData.from_folder(tmp_path)


def test_empty_class_folder(image_folder):
    (image_folder / "train" / "green").mkdir()
    (image_folder / "train" / "green" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"green has no images"):
        ImageData.from_folder(image_folder)


def test_single_class(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("red",), with_valid=False)
    with pytest.raises(DataError, match=r"single class folder \(red\)"):
        ImageData.from_folder(root)


def test_nested_layout_rejected(tmp_path):
    root = make_image_folder(tmp_path / "d", with_valid=False)
    nested = tmp_path / "n" / "train" / "animals"
    nested.parent.mkdir(parents=True)
    (root / "train").rename(nested)
    with pytest.raises(DataError, match=r"sub-folders"):
        ImageData.from_folder(tmp_path / "n")


def test_non_images_ignored_and_counted(image_folder):
    (image_folder / "train" / "red" / "readme.txt").write_text("hi")
    (image_folder / "train" / "red" / ".DS_Store").write_text("")
    (image_folder / "train" / "blue" / "labels.csv").write_text("a,b")
    data = ImageData.from_folder(image_folder)
    assert len(data.train_ds) == 32
    assert data.ignored == 2 and "ignored 2 non-image files" in data.summary()


def test_corrupt_image_is_skipped_with_a_warning(image_folder):
    bad = image_folder / "train" / "red" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = ImageData.from_folder(image_folder, size=32, bs=8)
    i = data.train_ds.files.index(bad)
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert data.train_ds[i] is None
    xs = [b for b in data.loader("train", augment=False)]
    assert sum(len(b[0]) for b in xs) == 32  # 33 files, the broken one left out
    assert "skipped 1 images" in data.summary()


def test_valid_class_missing_from_train(image_folder):
    (image_folder / "valid" / "green").mkdir()
    make = image_folder / "valid" / "red" / "red_0.png"
    (image_folder / "valid" / "green" / "g.png").write_bytes(make.read_bytes())
    with pytest.raises(DataError, match="lacks: green"):
        ImageData.from_folder(image_folder)


def test_valid_transform_is_center_crop_of_resized_image(tmp_path):
    from PIL import Image

    root = tmp_path / "d"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            arr = np.zeros((50, 100, 3), np.uint8)
            arr[:, 40:60] = 255  # bright band in the center
            Image.fromarray(arr).save(root / c / f"{i}.png")
    data = ImageData.from_folder(root, size=20)
    x, _, _ = data.valid_ds[0]
    assert tuple(x.shape) == (3, 20, 20)
    assert x[:, :, 8:12].float().mean() > 200 and x[:, :, :2].float().mean() < 10

"""Label sources: name_re (Pets style), CSV and DataFrame (single- and multi-label, Planet style),
test folders, and bad input that names the offending files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import visiontune as vt
from visiontune import ConfigError, DataError, ImageData

from conftest import COLORS, color_image, make_image_folder

BREEDS = {"great_pyrenees": "red", "Abyssinian": "green", "shiba_inu": "blue"}


def make_pets(root: Path, n: int = 8, seed: int = 0) -> Path:
    """Oxford-IIIT Pets layout: images/<breed>_<i>.jpg (breeds with and without underscores) + a .mat file."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    for breed, color in BREEDS.items():
        for i in range(1, n + 1):
            color_image(rng, COLORS[color]).save(images / f"{breed}_{i}.jpg", quality=95)
    (images / "annotations.mat").write_bytes(b"MATLAB 5.0")
    return images


def make_planet(root: Path, n: int = 36, seed: int = 0, header: str = "image_name,tags") -> Path:
    """Planet layout: train-jpg/<name>.jpg + train_v2.csv with space-separated tags; a tag per colour
    channel that is on, so labels are learnable."""
    rng = np.random.default_rng(seed)
    (root / "train-jpg").mkdir(parents=True)
    rows = [header]
    for i in range(n):
        on = [c for c in ("red", "green", "blue") if rng.random() < 0.5] or ["red"]
        arr = np.clip(rng.normal(30, 15, (32, 32, 3)), 0, 255)
        for c in on:
            arr[..., ("red", "green", "blue").index(c)] += 180
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / "train-jpg" / f"train_{i}.jpg")
        rows.append(f"train_{i},{' '.join(on)}")
    (root / "train_v2.csv").write_text("\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------------------------------- name_re


def test_name_re_labels_pets(tmp_path):
    images = make_pets(tmp_path)
    data = ImageData.from_name_re(images, size=32, bs=4)
    assert data.classes == ["Abyssinian", "great_pyrenees", "shiba_inu"]
    assert len(data.train_ds) + len(data.valid_ds) == 24 and data.ignored == 1  # the .mat file
    for ds in (data.train_ds, data.valid_ds):
        for f, y in zip(ds.files, ds.targets):
            assert f.name.rsplit("_", 1)[0] == data.classes[y]
    assert sorted(np.bincount(data.valid_labels).tolist()) == [2, 2, 2]  # 20% per class, stratified


def test_name_re_with_fnames_and_custom_pattern(tmp_path):
    images = make_pets(tmp_path)
    fnames = [f"great_pyrenees_{i}.jpg" for i in range(1, 6)] + [f"shiba_inu_{i}.jpg" for i in range(1, 6)]
    data = ImageData.from_name_re(images, fnames, pat=r"/([a-z]+)_[a-z_]*\d+\.jpg$", valid_pct=0.4, seed=3)
    assert data.classes == ["great", "shiba"] and len(data.train_ds) + len(data.valid_ds) == 10


def test_name_re_unmatched_files_are_listed(tmp_path):
    images = make_pets(tmp_path)
    Image.new("RGB", (8, 8)).save(images / "IMG 0001.JPG")
    with pytest.raises(DataError, match=r"1 of 25 file names do not match pat .*IMG 0001.JPG"):
        ImageData.from_name_re(images)


def test_name_re_bad_patterns(tmp_path):
    images = make_pets(tmp_path)
    with pytest.raises(ConfigError, match="no group"):
        ImageData.from_name_re(images, pat=r"_\d+\.jpg$")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        ImageData.from_name_re(images, pat=r"/([^/]+_\d+\.jpg$")
    with pytest.raises(DataError, match="do not exist: .*nope.jpg"):
        ImageData.from_name_re(images, fnames=["nope.jpg"])


@pytest.mark.slow
def test_pets_name_re_trains_end_to_end(tmp_path):
    images = make_pets(tmp_path, n=12)
    torch.manual_seed(0)
    data = ImageData.from_name_re(images, size=32, bs=8, valid_pct=0.25, augment="side_on")
    learn = vt.vision_learner(data)
    learn.fit_one_cycle(2)
    assert learn.recorder.last["accuracy"] >= 0.6  # three colours: chance is 1/3
    f = data.valid_ds.files[0]
    label, idx, probs = learn.predict(f)
    assert data.classes[idx] == label and probs.shape == (3,)
    assert idx == int(learn.get_preds()[0][0].argmax())


# ---------------------------------------------------------------------------------------- CSV


def test_csv_single_label_with_suffix_and_test_folder(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("red", "blue"), n_train=10, with_valid=False)
    (root / "all").mkdir()
    rows = ["id,breed"]
    for f in sorted((root / "train").rglob("*.png")):
        f.rename(root / "all" / f.name)
        rows.append(f"{f.stem},{f.parent.name}")
    (root / "labels.csv").write_text("\n".join(rows))
    (root / "test").mkdir()
    for name in ("b.png", "a.png", "c.png"):
        Image.new("RGB", (40, 32), (200, 40, 40)).save(root / "test" / name)
    data = ImageData.from_csv(root, folder="all", suffix=".png", test="test", size=32, bs=4)
    assert data.classes == ["blue", "red"] and not data.is_multi_label
    assert len(data.train_ds) == 16 and len(data.valid_ds) == 4
    assert all(data.classes[y] in f.name for f, y in zip(data.train_ds.files, data.train_ds.targets))
    assert [f.name for f in data.test_ds.files] == ["a.png", "b.png", "c.png"]  # file order
    assert data.test_ds[0][1] == -1 and not data.test_ds.is_labelled


def test_csv_column_names_and_numeric_classes_sort_numerically(tmp_path):
    root = tmp_path / "d"
    (root / "imgs").mkdir(parents=True)
    rows = ["label,file"]
    for i in range(12):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / "imgs" / f"{i}.png")
        rows.append(f"{[2, 10, 1][i % 3]},{i}.png")
    (root / "l.csv").write_text("\n".join(rows))
    data = ImageData.from_csv(root, "l.csv", folder="imgs", fn_col="file", label_col="label")
    assert data.classes == ["1", "2", "10"]
    with pytest.raises(ConfigError, match="'nope' is not a column of .*Columns: label, file"):
        ImageData.from_csv(root, "l.csv", folder="imgs", fn_col="nope")


def test_csv_missing_files_error_or_skip(tmp_path):
    root = make_planet(tmp_path / "planet", n=12)
    with open(root / "train_v2.csv", "a") as f:
        f.write("train_404,haze\ntrain_405,clear\n")
    with pytest.raises(DataError, match=r"2 of 14 rows .* do not exist, e.g. .*train_404.jpg.*on_missing='skip'"):
        ImageData.from_csv(root, "train_v2.csv", folder="train-jpg", suffix=".jpg", label_delim=" ")
    data = ImageData.from_csv(root, "train_v2.csv", folder="train-jpg", suffix=".jpg", label_delim=" ",
                              on_missing="skip")
    assert len(data.train_ds) + len(data.valid_ds) == 12
    assert "skipped 2 rows" in data.summary()
    assert "haze" not in data.classes  # labels of skipped rows do not become classes


def test_csv_forgotten_suffix_hints_at_it(tmp_path):
    root = make_planet(tmp_path / "planet", n=6)
    with pytest.raises(DataError, match=r"6 of 6 rows.*suffix='.jpg'"):
        ImageData.from_csv(root, "train_v2.csv", folder="train-jpg", label_delim=" ")


def test_csv_bad_rows(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=3, with_valid=False)
    names = [f.relative_to(root / "train").as_posix() for f in sorted((root / "train").rglob("*.png"))]
    (root / "empty.csv").write_text("f,l\n" + "\n".join(f"{n},{'' if i == 2 else 'x' + str(i % 2)}"
                                                         for i, n in enumerate(names)))
    with pytest.raises(DataError, match=r"1 rows of .*empty.csv have an empty label: line 4"):
        ImageData.from_csv(root, "empty.csv")
    (root / "dup.csv").write_text("f,l\n" + "\n".join(f"{n},a" for n in names + names[:1]))
    with pytest.raises(DataError, match="more than once"):
        ImageData.from_csv(root, "dup.csv")
    with pytest.raises(DataError, match="does not exist"):
        ImageData.from_csv(root, "nope.csv")
    with pytest.raises(ConfigError, match="on_missing"):
        ImageData.from_csv(root, "dup.csv", on_missing="ignore")


def test_csv_multi_label_targets(tmp_path):
    root = make_planet(tmp_path / "planet", n=20)
    data = ImageData.from_csv(root, "train_v2.csv", folder="train-jpg", suffix=".jpg", label_delim=" ", size=32)
    assert data.is_multi_label and data.classes == ["blue", "green", "red"] and data.c == 3
    rows = {r.split(",")[0]: set(r.split(",")[1].split()) for r in (root / "train_v2.csv").read_text().splitlines()[1:]}
    for f, y in zip(data.train_ds.files, data.train_ds.targets):
        assert y.dtype == np.float32 and {data.classes[j] for j in np.flatnonzero(y)} == rows[f.stem]
    x, t, _ = data.train_ds[0]
    assert t.dtype == torch.float32 and t.shape == (3,)
    assert data.valid_labels.shape == (len(data.valid_ds), 3)
    assert "multi-label" in data.summary()


def test_one_hot_columns_and_valid_col(tmp_path):
    root = make_image_folder(tmp_path / "d", n_train=5, with_valid=False)
    names = [f.relative_to(root / "train").as_posix() for f in sorted((root / "train").rglob("*.png"))]
    lines = ["file,is_blue,is_red,is_valid"]
    lines += [f"{n},{int(n.startswith('blue'))},{int(n.startswith('red'))},{int(i % 5 == 0)}" for i, n in enumerate(names)]
    (root / "onehot.csv").write_text("\n".join(lines))
    data = ImageData.from_csv(root, "onehot.csv", label_col=["is_blue", "is_red"], valid_col="is_valid")
    assert data.is_multi_label and data.classes == ["is_blue", "is_red"]
    assert [f.name for f in data.valid_ds.files] == ["blue_0.png", "red_0.png"]
    assert data.valid_labels.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_from_df_matches_from_csv(tmp_path):
    pd = pytest.importorskip("pandas")
    root = make_planet(tmp_path / "planet", n=15)
    df = pd.read_csv(root / "train_v2.csv")
    a = ImageData.from_df(root, df, folder="train-jpg", suffix=".jpg", label_delim=" ", seed=1)
    b = ImageData.from_csv(root, "train_v2.csv", folder="train-jpg", suffix=".jpg", label_delim=" ", seed=1)
    assert a.classes == b.classes and a.valid_ds.files == b.valid_ds.files
    assert np.array_equal(a.train_ds.targets, b.train_ds.targets)
    with pytest.raises(ConfigError, match="DataFrame"):
        ImageData.from_df(root, [("a", "b")])


def test_importing_visiontune_does_not_import_pandas():
    import subprocess
    import sys

    code = "import sys, visiontune; from visiontune.data import labels; print('pandas' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "False", r.stderr


@pytest.mark.slow
def test_planet_multi_label_trains_end_to_end(tmp_path):
    root = make_planet(tmp_path / "planet", n=40)
    torch.manual_seed(0)
    data = ImageData.from_csv(root, "train_v2.csv", folder="train-jpg", suffix=".jpg", label_delim=" ",
                              size=32, bs=8, augment="top_down")
    learn = vt.vision_learner(data)
    assert isinstance(learn.loss_func, torch.nn.BCEWithLogitsLoss)
    learn.fit_one_cycle(1)  # default lr for a frozen body
    row = learn.recorder.last
    assert {"accuracy_multi", "fbeta"} <= set(row) and 0 <= row["fbeta"] <= 1
    assert row["accuracy_multi"] > 0.6
    probs, targets = learn.get_preds()
    assert probs.shape == targets.shape == (len(data.valid_ds), 3) and ((probs >= 0) & (probs <= 1)).all()
    assert not torch.allclose(probs.sum(1), torch.ones(len(probs)))  # sigmoid per label, not softmax
    labels, idx, p = learn.predict(data.valid_ds.files[0])
    assert labels == [data.classes[i] for i in idx] and idx == torch.nonzero(p > learn.thresh).flatten().tolist()


# ---------------------------------------------------------------------------------------- folders + show


def test_from_folder_test_set_in_file_order_and_predictions(image_folder):
    (image_folder / "test1").mkdir()
    for name in ("10.png", "2.png", "1.png"):
        Image.new("RGB", (40, 32), (40, 60, 200)).save(image_folder / "test1" / name)
    data = ImageData.from_folder(image_folder, test="test1", size=32, bs=4)
    assert [f.name for f in data.test_ds.files] == ["1.png", "10.png", "2.png"]
    assert "test: 3 unlabelled images" in data.summary()
    with pytest.raises(DataError, match="Test folder .*nope does not exist"):
        ImageData.from_folder(image_folder, test="nope")


def test_images_in_sub_folders_of_classes_are_noted(image_folder):
    sub = image_folder / "train" / "red" / "extra"
    sub.mkdir()
    Image.new("RGB", (8, 8)).save(sub / "x.png")
    data = ImageData.from_folder(image_folder)
    assert len(data.train_ds) == 32 and "1 images in sub-folders of class folders were not used" in data.summary()


def test_show_batch_writes_a_labelled_grid(tmp_path):
    root = make_planet(tmp_path / "planet", n=12)
    data = ImageData.from_csv(root, "train_v2.csv", folder="train-jpg", suffix=".jpg", label_delim=" ",
                              size=32, augment="top_down")
    fig = data.show_batch(tmp_path / "out" / "batch.png", n=4)
    assert (tmp_path / "out" / "batch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 4 and all(set(t.split(";")) <= set(data.classes) for t in titles)
    plain = data.show_batch(n=4, augment=False)
    shown = [ax.images[0].get_array() for ax in plain.axes if ax.images]
    assert all(a.shape == (32, 32, 3) for a in shown)

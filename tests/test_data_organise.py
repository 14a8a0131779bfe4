"""split-valid (dry run, apply, undo to a byte-identical tree, never overwrite) and sample."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontune import ConfigError, DataError, ImageData
from visiontune.data.organise import JOURNAL, allocate, sample, split_valid, undo_split_valid

from conftest import make_image_folder


def tree(root: Path) -> dict[str, tuple]:
    """Every file and folder under root with its bytes' hash and mtime (what 'byte-identical' means)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = ()
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (hashlib.sha256(Path(p).read_bytes()).hexdigest(), st.st_mtime_ns)
    return out


@pytest.fixture
def kaggle(tmp_path) -> Path:
    """train/ only, unbalanced classes (12 cats, 8 dogs, 1 axolotl), a unicode name and a hidden file."""
    root = tmp_path / "dogscats"
    rng = np.random.default_rng(0)
    for cls, n in (("cats", 12), ("dogs", 8), ("axolotl", 1)):
        d = root / "train" / cls
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{cls}.{i}.jpg")
    Image.new("RGB", (8, 8)).save(root / "train" / "cats" / "chat été.jpg")
    (root / "train" / "cats" / ".DS_Store").write_bytes(b"x")
    return root


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "visiontune", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_allocate_is_proportional_and_respects_caps():
    assert allocate({"a": 60, "b": 30, "c": 10}, 10) == {"a": 6, "b": 3, "c": 1}
    assert allocate({"a": 5, "b": 1}, 3, keep=1) == {"a": 3, "b": 0}
    assert sum(allocate({"a": 7, "b": 5, "c": 3}, 4).values()) == 4
    assert allocate({"a": 100, "b": 2}, 10, min_each=1)["b"] == 1
    assert allocate({"a": 3, "b": 2}, 0, min_each=1) == {"a": 0, "b": 0}


def test_dry_run_changes_nothing(kaggle):
    before = tree(kaggle)
    plan = split_valid(kaggle, n=5, seed=1)
    assert tree(kaggle) == before and not plan.applied
    assert len(plan.moves) == 5
    assert plan.per_class == {"axolotl": (1, 0), "cats": (13, 3), "dogs": (8, 2)}  # stratified, one stays
    assert all(s.parent.name == d.parent.name for s, d in plan.moves)
    assert "Will move 5 of 22 images" in plan.summary()


def test_apply_then_undo_restores_a_byte_identical_tree(kaggle):
    before = tree(kaggle)
    plan = split_valid(kaggle, pct=0.25, seed=3, apply=True)
    assert plan.applied and (kaggle / JOURNAL).exists()
    moved = {d.relative_to(kaggle).as_posix() for _, d in plan.moves}
    assert moved <= set(tree(kaggle)) and len(moved) == round(22 * 0.25)
    data = ImageData.from_folder(kaggle)  # the result is a train/valid layout visiontune reads
    assert len(data.valid_ds) == 6 and len(data.train_ds) == 16
    assert undo_split_valid(kaggle) == 6
    assert tree(kaggle) == before  # same files, bytes, mtimes, and no leftover valid/ folders or journal


def test_same_seed_same_sample(kaggle):
    a = split_valid(kaggle, n=4, seed=9).moves
    assert a == split_valid(kaggle, n=4, seed=9).moves and a != split_valid(kaggle, n=4, seed=10).moves


def test_never_overwrites(kaggle):
    plan = split_valid(kaggle, n=4, seed=2)
    src, dst = plan.moves[0]
    dst.parent.mkdir(parents=True)
    dst.write_bytes(b"precious")
    before = tree(kaggle)
    with pytest.raises(DataError, match="never overwrites"):
        split_valid(kaggle, n=4, seed=2, apply=True)
    assert tree(kaggle) == before and dst.read_bytes() == b"precious"


def test_second_split_needs_undo_first_and_bad_sizes(kaggle):
    split_valid(kaggle, n=2, apply=True)
    with pytest.raises(DataError, match="--undo"):
        split_valid(kaggle, n=2)
    undo_split_valid(kaggle)
    with pytest.raises(DataError, match="nothing to undo"):
        undo_split_valid(kaggle)
    with pytest.raises(ConfigError, match="not both"):
        split_valid(kaggle, n=2, pct=0.1)
    with pytest.raises(ConfigError, match="between 1 and 19"):
        split_valid(kaggle, n=50)
    with pytest.raises(DataError, match="does not exist"):
        split_valid(kaggle / "nope", n=2)


def test_undo_after_an_interrupted_move(kaggle, monkeypatch):
    """Killed half way: the journal was written first, so undo puts back what had moved."""
    import visiontune.data.organise as org

    before = tree(kaggle)
    real, calls = org._move, {"n": 0}

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(org, "_move", flaky)
    with pytest.raises(KeyboardInterrupt):
        split_valid(kaggle, n=5, apply=True)
    monkeypatch.setattr(org, "_move", real)
    assert tree(kaggle) != before
    assert undo_split_valid(kaggle) == 2
    assert tree(kaggle) == before


def test_undo_refuses_to_overwrite_and_keeps_the_journal(kaggle):
    plan = split_valid(kaggle, n=3, apply=True)
    src, _ = plan.moves[0]
    src.write_bytes(b"new file the user put here")
    with pytest.raises(DataError, match="could not be"):
        undo_split_valid(kaggle)
    assert src.read_bytes() == b"new file the user put here" and (kaggle / JOURNAL).exists()


def test_flat_train_folder_moves_a_plain_sample(tmp_path):
    root = tmp_path / "flat"
    (root / "train").mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (4, 4)).save(root / "train" / f"cat.{i}.jpg")
    plan = split_valid(root, n=3, apply=True)
    assert all(d.parent == root / "valid" for _, d in plan.moves) and "no class folders" in plan.summary()


@pytest.mark.slow
def test_cli_dry_run_apply_undo(kaggle):
    before = tree(kaggle)
    r = run_cli("split-valid", kaggle, "--n", "4")
    assert r.returncode == 0 and "Dry run: nothing was moved" in r.stdout and "--yes" in r.stdout
    assert tree(kaggle) == before
    r = run_cli("split-valid", kaggle, "--n", "4", "--yes")
    assert r.returncode == 0 and "Moved 4 of 22" in r.stdout and "--undo" in r.stdout
    r = run_cli("split-valid", kaggle, "--pct", "0.1")
    assert r.returncode == 1 and "--undo" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("split-valid", "--undo", kaggle)
    assert r.returncode == 0 and "Put back 4 files" in r.stdout
    assert tree(kaggle) == before


# ---------------------------------------------------------------------------------------- sample


def test_sample_mirrors_the_tree(tmp_path):
    root = make_image_folder(tmp_path / "full", classes=("red", "green", "blue"), n_train=10, n_valid=4)
    before = tree(root)
    rep = sample(root, tmp_path / "small", train=6, valid=3, seed=1)
    assert (rep.n_train, rep.n_valid) == (6, 3)
    small = tree(tmp_path / "small")
    files = [k for k in small if not k.endswith("/")]
    assert sorted({k.split("/")[0] for k in files}) == ["train", "valid"]
    assert {k.split("/")[1] for k in files if k.startswith("train")} == {"red", "green", "blue"}
    for k in files:  # copies of the originals, bytes and mtimes
        assert small[k] == before[k]
    assert tree(root) == before
    data = ImageData.from_folder(tmp_path / "small")
    assert len(data.train_ds) == 6 and len(data.valid_ds) == 3
    assert sample(root, tmp_path / "again", train=6, valid=3, seed=1).n_train == 6
    assert tree(tmp_path / "again") == small  # same seed, same sample


def test_sample_never_overwrites_and_explains_shortfalls(tmp_path, kaggle):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="never overwrites"):
        sample(kaggle, out)
    with pytest.raises(DataError, match="inside"):
        sample(kaggle, kaggle / "sample")
    rep = sample(kaggle, tmp_path / "s2", train=100, valid=3)
    assert rep.n_train == 22 and rep.n_valid == 0
    assert "only 22 exist" in rep.summary() and "does not exist" in rep.summary()


def test_sample_cli(tmp_path, kaggle):
    r = run_cli("sample", kaggle, tmp_path / "s", "--train", "6", "--valid", "0", "--seed", "3")
    assert r.returncode == 0 and "Copied 6 train and 0 valid images" in r.stdout
    assert len(list((tmp_path / "s" / "train").rglob("*.jpg"))) == 6

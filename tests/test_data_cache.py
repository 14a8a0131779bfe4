"""The pre-sized image cache: same pixels as decoding, decoded once, invalidated by changes, atomic,
safe with loader workers, and never a reason for training to stop."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from visiontune import ImageData
from visiontune.data.cache import CachedPixels, ImageCache
from visiontune.data.dataset import FilePixels

from conftest import make_image_folder


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "d", n_train=5, n_valid=2, ext=".jpg")


def build(root, **kw) -> ImageData:
    data = ImageData.from_folder(root, **{"size": 32, "bs": 4, **kw})
    for ds in ("train", "valid"):
        data.dataset(ds).prepare()
    return data


def all_pixels(data: ImageData) -> list[torch.Tensor]:
    return [data.pixels(i) for i in range(len(data._all_files))]


def index_of(data: ImageData) -> dict:
    return json.loads((data.pixels.cache.dir / "index.json").read_text())


def test_cached_pixels_equal_decoded_pixels_and_decode_once(folder):
    data = build(folder)
    assert isinstance(data.pixels, CachedPixels) and data.pixels.decoded == 14
    direct = FilePixels(data._all_files, data.presize)
    for i, x in enumerate(all_pixels(data)):
        assert torch.equal(x, direct(i)) and x.shape[0] == 3 and min(x.shape[1:]) == data.presize
    again = build(folder)  # a later run
    assert again.pixels.decoded == 0
    assert all(torch.equal(a, b) for a, b in zip(all_pixels(data), all_pixels(again)))
    assert str(data.cache_dir / "images") in data.summary()


def test_cache_is_read_not_the_files(folder, monkeypatch):
    build(folder)
    warm = build(folder)
    monkeypatch.setattr(FilePixels, "__call__", lambda self, i: pytest.fail("decoded a cached image"))
    x, y, i = warm.train_ds[0]
    assert x.shape == (3, 32, 32)
    assert sum(len(b[0]) for b in warm.loader("train", augment=False)) == 10


def test_changed_added_and_removed_files(folder):
    first = build(folder)
    changed = folder / "train" / "red" / "red_0.jpg"
    Image.new("RGB", (50, 40), (0, 255, 0)).save(changed)  # new content, size and mtime
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    Image.new("RGB", (40, 32), (255, 0, 0)).save(folder / "train" / "red" / "red_new.jpg")
    removed = folder / "train" / "blue" / "blue_4.jpg"
    removed.unlink()
    second = build(folder)
    assert second.pixels.decoded == 2  # the changed and the added file, nothing else
    i = second._all_files.index(changed)
    assert torch.equal(second.pixels(i), FilePixels([changed], second.presize)(0))
    assert second.pixels(i)[1].float().mean() > 200  # green now
    entries = index_of(second)["entries"]
    assert str(removed) not in entries and str(folder / "train" / "red" / "red_new.jpg") in entries
    assert len(entries) == 14
    first_index = set(index_of(first)["segments"])
    assert set(index_of(second)["segments"]) >= first_index  # old segments still hold live images


def test_same_object_notices_a_change_on_the_next_loader(folder):
    data = build(folder)
    f = data.train_ds.files[0]
    Image.new("RGB", (40, 32), (255, 255, 255)).save(f)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    data.loader("train")
    assert data.pixels.decoded == 15 and data.train_ds[0][0].float().mean() > 250


def test_killed_build_is_never_read_and_resumes(folder, monkeypatch):
    """A crash after a segment was written but before the index names it leaves an orphan that the
    next run deletes; a crash mid-segment leaves only a .partial file. Neither is read as valid."""
    calls = {"n": 0}
    real = ImageCache.write_index

    def crash(self, index):
        calls["n"] += 1
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ImageCache, "write_index", crash)
    data = ImageData.from_folder(folder, size=32, bs=4)
    with pytest.raises(KeyboardInterrupt):
        data.train_ds.prepare()
    cache_dir = data.pixels.cache.dir
    assert not (cache_dir / "index.json").exists() and list(cache_dir.glob("seg-*.bin"))
    (cache_dir / ".seg-dead.bin.partial").write_bytes(b"half")
    monkeypatch.setattr(ImageCache, "write_index", real)
    again = build(folder)
    assert again.pixels.decoded == 14
    names = {p.name for p in cache_dir.iterdir()} - {".lock", "index.json"}
    assert names == set(index_of(again)["segments"])  # orphans and partial files are gone
    assert all(torch.equal(x, FilePixels([f], again.presize)(0)) for x, f in zip(all_pixels(again), again._all_files))


@pytest.mark.parametrize("damage", ["truncated_index", "truncated_segment", "deleted_segment"])
def test_damaged_cache_is_rebuilt(folder, damage):
    data = build(folder)
    cache_dir = data.pixels.cache.dir
    seg = next(cache_dir.glob("seg-*.bin"))
    if damage == "truncated_index":
        (cache_dir / "index.json").write_text('{"format": 1, "entr')
    elif damage == "truncated_segment":
        seg.write_bytes(seg.read_bytes()[:100])
    else:
        seg.unlink()
    again = build(folder)
    assert again.pixels.decoded > 0
    assert all(torch.equal(x, FilePixels([f], again.presize)(0)) for x, f in zip(all_pixels(again), again._all_files))


def test_reader_falls_back_when_a_segment_vanishes(folder):
    data = build(folder)
    for seg in data.pixels.cache.dir.glob("seg-*.bin"):
        seg.unlink()  # another run removed it after we resolved our items
    data.pixels._maps = {}
    assert torch.equal(data.pixels(0), FilePixels(data._all_files, data.presize)(0))


def test_bad_files_are_remembered_and_still_reported(folder):
    bad = folder / "train" / "red" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        first = build(folder)
    assert len(first.bad) == 1
    with pytest.warns(UserWarning, match="broken.jpg"):
        second = build(folder)
    assert second.pixels.decoded == 0 and len(second.bad) == 1
    i = second.train_ds.files.index(bad)
    assert second.train_ds[i] is None


def test_workers_read_the_cache(folder):
    solo = build(folder)
    duo = ImageData.from_folder(folder, size=32, bs=4, num_workers=2)
    a = torch.cat([b[0] for b in solo.loader("train", augment=False)])
    b = torch.cat([b[0] for b in duo.loader("train", augment=False)])
    assert duo.pixels.decoded == 0 and torch.equal(a, b)


def test_cache_off_and_cache_path(folder, tmp_path):
    off = ImageData.from_folder(folder, size=32, cache="off")
    assert isinstance(off.pixels, FilePixels) and "image cache: off" in off.summary()
    data = build(folder, cache=tmp_path / "mycache")
    assert (tmp_path / "mycache" / f"s{data.presize}" / "index.json").exists()
    other_size = build(folder, cache=tmp_path / "mycache", size=48)  # a second size lives beside the first
    assert other_size.pixels.decoded == 14 and (tmp_path / "mycache" / "s55").is_dir()
    with pytest.raises(Exception, match="cache must be"):
        ImageData.from_folder(folder, cache=3)


def test_auto_stays_off_when_the_disk_is_short(folder, monkeypatch, capsys):
    monkeypatch.setenv("VISIONTUNE_QUIET", "0")
    monkeypatch.setattr(ImageCache, "free_bytes", lambda self: 10_000)
    data = build(folder)
    assert data.pixels.disabled and data.pixels.decoded == 0
    assert "image cache off" in capsys.readouterr().err and "image cache off" in data.summary()
    assert sum(len(b[0]) for b in data.loader("train", augment=False)) == 10  # trains from the files
    forced = build(folder, cache="on")  # an explicit request is honoured
    assert forced.pixels.decoded == 14


def test_unwritable_cache_file_falls_back_to_files(folder, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # the cache path is a file: mkdir fails with an OSError even as root
    data = build(folder, cache=blocker)
    assert data.pixels.disabled and sum(len(b[0]) for b in data.loader("train", augment=False)) == 10


def test_augmentation_runs_on_cached_pixels(folder):
    data = build(folder, augment="side_on")
    cached = data.pixels(0)
    assert min(cached.shape[1:]) == data.presize  # stored pre-sized, not cropped
    x, _, _ = data.train_ds[0]
    assert x.shape == (3, 32, 32)
    assert np.isclose(data.presize / data.size, 1.15, atol=0.03)

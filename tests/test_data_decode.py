"""Robust decoding: every unusual file kind a messy real-world folder holds, generated here."""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontune import ImageData
from visiontune.data.decode import ImageDecodeError, decode_image, is_image_file, open_image
from visiontune.data.sources import scan_images

from conftest import make_image_folder


def rgb(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    return np.asarray(im)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # a white band on the stored image's left edge
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = rgb(open_image(tmp_path / "rot.jpg"))
    assert out.shape == (40, 20, 3)  # portrait after rotation
    assert out[:8].mean() > 200 and out[-8:].mean() < 50  # the band is now on top


def test_broken_exif_keeps_the_pixels_quietly(tmp_path, recwarn):
    im = Image.fromarray(np.full((10, 12, 3), 90, np.uint8))
    im.save(tmp_path / "x.jpg", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12")  # truncated IFD
    assert rgb(open_image(tmp_path / "x.jpg")).shape == (10, 12, 3)
    assert not [w for w in recwarn if "EXIF" in str(w.message)]  # not a warning per image per epoch


@pytest.mark.parametrize("mode", ["L", "P", "1", "CMYK", "LA", "RGBA", "I;16"])
def test_modes_become_rgb(tmp_path, mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        im = Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16))
    else:
        im = base.convert(mode)
    ext = ".jpg" if mode == "CMYK" else ".png"
    im.save(tmp_path / f"img{ext}")
    out = rgb(open_image(tmp_path / f"img{ext}"))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    if mode in ("L", "1", "LA", "I;16"):
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()  # grey stays grey


def test_16_bit_scales_by_range_not_content(tmp_path):
    Image.fromarray(np.full((4, 4), 100, np.uint16)).save(tmp_path / "dark.png")  # 100 of 65535: near black
    Image.fromarray(np.full((4, 4), 60000, np.uint16)).save(tmp_path / "bright.png")
    assert Image.open(tmp_path / "dark.png").mode.startswith("I")
    assert rgb(open_image(tmp_path / "dark.png")).max() <= 1
    assert rgb(open_image(tmp_path / "bright.png")).min() == round(60000 / 65535 * 255)


def test_transparency_is_composited_on_white(tmp_path):
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[..., 0] = 255  # red ...
    arr[:5, :, 3] = 255  # ... opaque in the top half, fully transparent (black underneath) below
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    out = rgb(open_image(tmp_path / "a.png"))
    assert (out[:5] == [255, 0, 0]).all() and (out[5:] == 255).all()
    pal = Image.fromarray(np.zeros((6, 6), np.uint8), "P")
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert (rgb(open_image(tmp_path / "p.png")) == 255).all()


def png_declaring(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels: a decompression bomb if it were allocated."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 40_000])  # over Pillow's warning limit, and over its error limit
def test_decompression_bomb_is_rejected_without_allocating(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(png_declaring(side, side))
    t = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"bomb.png: image too large to decode safely"):
        open_image(tmp_path / "bomb.png")
    assert time.perf_counter() - t < 5  # decoding 1.6e9 pixels would take far longer (and 4.8 GB)
    assert Image.MAX_IMAGE_PIXELS is not None  # the limit stays on


@pytest.mark.parametrize("kind", ["truncated_jpeg", "truncated_png", "empty", "text", "random_bytes"])
def test_undecodable_files_raise_naming_the_file(tmp_path, kind):
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "f.png")
    data = {
        "truncated_jpeg": full.read_bytes()[: full.stat().st_size // 2],
        "truncated_png": (tmp_path / "f.png").read_bytes()[:300],
        "empty": b"",
        "text": b"this is not an image\n",
        "random_bytes": np.random.default_rng(1).integers(0, 255, 5000, dtype=np.uint8).tobytes(),
    }[kind]
    bad = tmp_path / f"bad {kind}.jpg"
    bad.write_bytes(data)
    with pytest.raises(ImageDecodeError, match=f"bad {kind}.jpg: cannot decode image"):
        open_image(bad)


def test_decode_image_from_bytes_gives_open_images_pixels(tmp_path):
    """The server decodes uploads from memory: the same pixels as from the file, draft mode and EXIF included."""
    rng = np.random.default_rng(2)
    im = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "big.jpg", exif=exif.tobytes(), quality=90)
    Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)).save(tmp_path / "deep.png")
    for name, min_size in (("big.jpg", 37), ("big.jpg", None), ("deep.png", 37)):
        path = tmp_path / name
        assert np.array_equal(rgb(decode_image(path.read_bytes(), name, min_size=min_size)),
                              rgb(open_image(path, min_size=min_size)))
    assert rgb(decode_image(path.read_bytes(), name)).shape == (20, 30, 3)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # 1e8 pixels: over Pillow's warning limit
def test_decode_image_says_why_it_fails_and_leaves_warning_filters_alone(tmp_path):
    import warnings

    full = tmp_path / "f.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    cases = {
        "empty": (b"", None),
        "not_an_image": (b"this is not an image\n", None),
        "truncated": (full.read_bytes()[: full.stat().st_size // 2], None),
        "too_many_pixels": (png_declaring(10_000, 10_000), 40_000_000),  # over max_pixels, from the header
    }
    filters = list(warnings.filters)
    for reason, (data, max_pixels) in cases.items():
        with pytest.raises(ImageDecodeError, match="^upload: ") as e:
            decode_image(data, "upload", max_pixels=max_pixels)
        assert e.value.reason == reason
    with pytest.raises(ImageDecodeError) as e:
        decode_image(png_declaring(40_000, 40_000), "bomb")  # Pillow's own limit, without any max_pixels
    assert e.value.reason == "too_many_pixels"
    with pytest.raises(ImageDecodeError, match="10000 x 10000 = 100,000,000 pixels is over the limit of 1,000,000"):
        decode_image(png_declaring(10_000, 10_000), "x", max_pixels=1_000_000)
    assert list(warnings.filters) == filters  # safe from many threads at once: no catch_warnings


def test_messy_folder_loads_with_bad_files_skipped_and_counted(tmp_path):
    """One folder with everything at once: the data loads, every good image is used, bad ones are
    skipped with a warning naming them, and the summary counts them."""
    root = make_image_folder(tmp_path / "messy", n_train=6, n_valid=2)
    red, blue = root / "train" / "red", root / "train" / "blue"
    Image.new("RGB", (40, 32), (200, 40, 40)).save(red / "UPPER.JPG")
    Image.new("RGB", (40, 32), (200, 40, 40)).save(red / "Photo.JPEG")
    Image.new("RGB", (40, 32), (200, 40, 40)).save(red / "chat noir été 猫.png")
    Image.new("L", (40, 32), 90).save(blue / "grey.png")
    Image.new("RGB", (40, 32)).save(red / ".hidden.png")  # hidden: ignored
    (red / "._resource_fork.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble: hidden, ignored
    (root / "train" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (4, 4)).save(root / "train" / ".ipynb_checkpoints" / "x.png")  # hidden folder: not a class
    (blue / "truncated.jpg").write_bytes((red / "UPPER.JPG").read_bytes()[:200])
    (blue / "bomb.png").write_bytes(png_declaring(20_000, 20_000))
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (40, 32), (40, 60, 200)).save(outside)
    os.symlink(outside, blue / "linked.png")  # a symlinked image is followed
    os.symlink(root / "train", blue / "loop")  # a folder loop does not hang the scan
    os.symlink(blue / "b.jpg", blue / "a.jpg")  # a symlink loop between two files is ignored
    os.symlink(blue / "a.jpg", blue / "b.jpg")
    (red / "notes.txt").write_text("not an image")

    data = ImageData.from_folder(root, size=32, bs=4)
    assert "sub-folders" not in data.summary()  # the loop back to train/ is not counted as nested images
    names = {f.name for f in data.train_ds.files}
    assert {"UPPER.JPG", "Photo.JPEG", "chat noir été 猫.png", "grey.png", "linked.png"} <= names
    assert not {".hidden.png", "._resource_fork.jpg", "x.png", "a.jpg", "b.jpg"} & names
    assert data.classes == ["blue", "red"]
    with pytest.warns(UserWarning) as record:
        batches = list(data.loader("train", augment=False))
    warned = " ".join(str(w.message) for w in record)
    assert "truncated.jpg" in warned and "bomb.png" in warned
    seen = sum(len(b[0]) for b in batches)
    assert seen == len(data.train_ds) - 2
    assert "skipped 2 images that could not be decoded" in data.summary()
    assert all(b[0].shape[1:] == (3, 32, 32) for b in batches)


def test_scan_follows_a_symlinked_folder_once(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "1.png")
    os.symlink(tmp_path / "a", tmp_path / "b")
    os.symlink(tmp_path, tmp_path / "a" / "up")
    files = scan_images(tmp_path).files
    assert [f.name for f in files] == ["1.png"]


def test_is_image_file():
    assert is_image_file("x.JPG") and is_image_file(Path("a b/ü.webp")) and is_image_file("t.TIFF")
    assert not is_image_file(".x.jpg") and not is_image_file("x.txt") and not is_image_file("jpg")


def test_skipped_files_are_counted_with_loader_workers(tmp_path):
    """A file that fails inside a loader worker process is still warned about and counted (off cache)."""
    root = make_image_folder(tmp_path / "d", n_train=4, n_valid=2)
    (root / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    data = ImageData.from_folder(root, size=32, bs=4, num_workers=1, cache="off")
    with pytest.warns(UserWarning, match="broken.jpg"):
        seen = sum(len(b[0]) for b in data.loader("train", augment=False))
    assert seen == 8 and len(data.bad) == 1

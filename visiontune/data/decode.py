"""Robust image decoding: the one function every image in visiontune goes through.

EXIF orientation applied; grayscale, palette, RGBA (composited on white), CMYK, 16-bit and 1-bit
become RGB; Pillow's decompression-bomb limit stays on; JPEGs are decoded at reduced scale when
only a small image is needed (Pillow's draft mode), which is most of the speed on big photos.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._core.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"}
)


class ImageDecodeError(DataError):
    """A file that looks like an image could not be decoded; it is skipped with a warning.

    `reason` says why, for callers that answer differently per cause (the prediction server's status codes):
    'empty', 'not_an_image', 'too_many_pixels', 'truncated', 'unsupported_mode' or 'undecodable'."""

    def __init__(self, message: str, reason: str = "undecodable"):
        super().__init__(message)
        self.reason = reason


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a visible file whose extension (any case) is an image type we decode."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _composite_on_white(im: Image.Image) -> Image.Image:
    im = im.convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, im).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited on white, 16/32-bit scaled to 8-bit."""
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        return _composite_on_white(im)
    if im.mode.startswith("I") or im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        return Image.fromarray(_to_8bit(arr, im.mode), "L").convert("RGB")
    return im.convert("RGB")


def _to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit or float grayscale array to 0..255 by its type's range, not its content,
    so a dark 16-bit image stays dark."""
    top = float(arr.max(initial=0))
    if mode == "F":
        hi = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else top
    else:  # "I;16*" and "I" (Pillow's mode for 16-bit PNG/TIFF data); wider values scale by their maximum
        hi = 65535.0 if top <= 65535.0 else top
    return np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)


def open_image(path: str | os.PathLike, min_size: int | None = None) -> Image.Image:
    """Decode `path` into an RGB PIL image with EXIF orientation applied.

    `min_size`: the caller needs a short side of at least this many pixels, so big JPEGs may be
    decoded at 1/2, 1/4 or 1/8 scale. Raises ImageDecodeError naming the file on any failure.
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")  # e.g. "Corrupt EXIF data"
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _decode(path, str(path), min_size, None)


def decode_image(data: bytes | BinaryIO, name: str = "image", min_size: int | None = None,
                 max_pixels: int | None = None) -> Image.Image:
    """Decode image bytes (an upload) exactly as `open_image` decodes a file, into RGB with EXIF applied.

    Safe to call from many threads at once: it leaves the process's warning filters alone (Pillow's own
    decompression-bomb error stays on) and refuses images over `max_pixels` from their header, before any
    pixel is decoded. Raises ImageDecodeError naming `name`, with its `reason`."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) == 0:
            raise ImageDecodeError(f"{name}: the file is empty (0 bytes).", "empty")
        data = io.BytesIO(data)
    return _decode(data, name, min_size, max_pixels)


def _decode(source: Path | BinaryIO, name: str, min_size: int | None, max_pixels: int | None) -> Image.Image:
    try:
        with Image.open(source) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageDecodeError(f"{name}: {w} x {h} = {w * h:,} pixels is over the limit of "
                                       f"{max_pixels:,}. Send a smaller image.", "too_many_pixels")
            if min_size and im.format == "JPEG":
                scale = min(w, h) / min_size
                if scale >= 2:
                    im.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
            im.load()
            mode = im.mode
            try:
                return to_rgb(_apply_exif_orientation(im))
            except (ValueError, OSError) as e:
                raise ImageDecodeError(f"{name}: cannot convert its pixel mode {mode!r} to RGB ({e}).",
                                       "unsupported_mode") from e
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"{name}: image too large to decode safely ({e}).", "too_many_pixels") from e
    except Exception as e:  # noqa: BLE001  a corrupt file can make a codec raise anything; never crash an epoch
        raise ImageDecodeError(f"{name}: cannot decode image ({type(e).__name__}: {e}).", _reason(e)) from e


def _reason(e: Exception) -> str:
    """Why Pillow failed, from what it raised: not an image at all, cut short, an unreadable mode, or else."""
    text = str(e).lower()
    if isinstance(e, UnidentifiedImageError) or "cannot identify image file" in text:
        return "not_an_image"
    if isinstance(e, EOFError) or "truncated" in text or "broken data stream" in text:
        return "truncated"
    if "mode" in text:
        return "unsupported_mode"
    return "undecodable"


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says; a malformed EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # noqa: BLE001  broken EXIF metadata is common in camera files; the pixels are fine
        return im

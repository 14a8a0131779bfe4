"""Uploads -> model input: decode bytes exactly as `learn.predict` decodes a file, or say what is wrong with them.

Every failure is an `ApiError` carrying the HTTP status, a short code and a message naming the file and the
way out; the server turns it into `{"error": code, "detail": message}` and never into a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..data.dataset import single_thread
from ..data.decode import ImageDecodeError, decode_image
from ..data.transforms import pil_to_uint8, valid_transform
from ..infer.tta import TTAViews

FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# Pillow's failure reason -> (HTTP status, error code)
STATUS_BY_REASON = {
    "empty": (400, "empty_file"),
    "not_an_image": (415, "not_an_image"),
    "unsupported_mode": (415, "unsupported_image_mode"),
    "too_many_pixels": (422, "too_many_pixels"),
    "truncated": (422, "truncated_image"),
    "undecodable": (422, "undecodable_image"),
}
_OBJECT_REPR = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>")


class ApiError(Exception):
    """An answer other than a prediction: HTTP `status`, a short `code` and a `detail` that says the way out."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}

    def body(self) -> dict:
        return {"error": self.code, "detail": self.detail}


@dataclass
class ImageSpec:
    """How the model wants its images: `size` square crops of images resized to a short side of `presize`,
    and with `tta`, the plain view followed by the augmented ones (the views `learn.tta` uses)."""

    size: int
    presize: int
    tta: TTAViews | None = None

    @property
    def views(self) -> int:
        return 1 + len(self.tta.plan) if self.tta is not None else 1

    def to_tensor(self, data: bytes, name: str, max_pixels: int) -> torch.Tensor:
        """uint8 (views, 3, size, size) from the bytes of one upload; ApiError when they are not a usable image."""
        try:
            pil = decode_image(data, name, min_size=self.presize, max_pixels=max_pixels)
        except ImageDecodeError as e:
            raise upload_error(e, name, data) from None
        with single_thread():  # per-image ops: a thread pool of their own would fight the model's for the cores
            x = pil_to_uint8(pil, self.presize)
            return self.tta(x) if self.tta is not None else valid_transform(self.size)(x)[None]


def upload_error(e: ImageDecodeError, name: str, data: bytes) -> ApiError:
    """The ApiError for a failed decode: status and code from its reason, a message without Pillow's internals."""
    status, code = STATUS_BY_REASON.get(e.reason, (422, "undecodable_image"))
    text = _OBJECT_REPR.sub("", str(e)).removeprefix(f"{name}: ")
    if e.reason == "empty":
        detail = f"{name} is empty (0 bytes). Send the image's bytes."
    elif e.reason == "not_an_image":
        detail = f"{name} is not an image ({_looks_like(data)}). Send a {FORMATS} file."
    elif e.reason == "too_many_pixels":
        detail = f"{name}: {text}" if "over the limit" in text else (
            f"{name} declares more pixels than can be decoded safely (a decompression bomb?): {text}")
    elif e.reason == "truncated":
        detail = f"{name} is truncated or damaged ({text}). Send the complete file."
    elif e.reason == "unsupported_mode":
        detail = f"{name}: {text} Convert it to RGB (or any {FORMATS} file in a common mode) and send it again."
    else:
        detail = f"{name} cannot be decoded ({text}). Send a {FORMATS} file."
    return ApiError(status, code, detail)


def _looks_like(data: bytes) -> str:
    head = data[:512]
    if head.startswith((b"{", b"[")):
        return "it looks like JSON"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml", b"<svg")):
        return "it looks like HTML, XML or SVG"
    try:
        head.decode("utf-8")
        return "it looks like text"
    except UnicodeDecodeError:
        return "its bytes are no known image format"


def display_name(filename: str | None, position: int | None) -> str:
    """How an upload is named in messages: its file name (shortened), else its position, else 'the request body'."""
    if filename:
        return filename if len(filename) <= 120 else filename[:117] + "..."
    return f"file {position + 1}" if position is not None else "the request body"

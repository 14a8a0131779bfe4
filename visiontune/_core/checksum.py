"""Checksums of what visiontune writes, so a damaged file (bit flip, truncation) is detected before it is used.

One place for the digests: tensors (checkpoints, .vt exports), plain files (activation caches) and
streamed bytes (image-cache segments). SHA-256 where a digest is part of a file format others may check
(checkpoints, exports), BLAKE2b where only visiontune reads it back and speed matters (caches).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy())  # the buffer itself, no copy
    return h.hexdigest()


def text_digest(text: str) -> str:
    """SHA-256 of a string (headers and configs stored next to tensors)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fast_hasher():
    """The hash object caches use (BLAKE2b-128): about as fast as reading the file."""
    return hashlib.blake2b(digest_size=16)


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """`fast_hasher` digest of a whole file, read in chunks."""
    h = fast_hasher()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

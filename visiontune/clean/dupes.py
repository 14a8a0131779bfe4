"""Duplicates and near-duplicates: the same picture twice, byte for byte (a content hash), or re-encoded,
resized or mirrored. Candidates are pairs with a close perceptual hash (as is or mirrored) or a high cosine
similarity of the body's pooled features; a candidate is a copy when the two 32x32 grey thumbnails (one
mirrored, if that fits better) correlate almost perfectly. Pairs are grouped with union-find; a group with
members in train and in valid or test is a leak: the model is validated on pictures it trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

HASH_SIDE = 32  # pHash: the picture is shrunk to 32x32 grey, its 8x8 lowest DCT frequencies give 64 bits
LOW = 8


@dataclass(frozen=True)
class DupeSettings:
    """When two pictures count as copies (BENCHMARKS.md, "Cleaning the data"). Re-encoded, 90%-resized and
    mirrored copies were within 4 bits of pHash and their thumbnails correlated at 0.9953 or more (Fashion-MNIST's
    28x28 JPEGs at quality 50; dogscats photos: 0.9999), while distinct photos stayed below 0.76 and distinct
    Fashion-MNIST items (many trousers look alike) passed 0.993 in 4 of 8 million pairs."""

    phash_bits: int = 10  # a candidate: Hamming distance (of 64) at most this ...
    cosine: float = 0.90  # ... or centred-feature cosine at least this
    thumb: float = 0.993  # a copy: candidate whose 32x32 grey thumbnails correlate at least this
    min_std: float = 2.0  # pictures flatter than this (grey levels) have no meaningful pHash: exact copies only


def file_digest(path: Path, chunk: int = 1 << 20) -> str | None:
    """SHA-256 of the file's bytes, or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                b = f.read(chunk)
                if not b:
                    break
                h.update(b)
    except OSError:
        return None
    return h.hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(HASH_SIDE)
_FLIP = np.where(np.arange(LOW) % 2 == 1, -1.0, 1.0)[None, :]  # mirroring negates odd horizontal frequencies


def _bits(coeffs: np.ndarray) -> int:
    flat = coeffs.reshape(-1)
    med = np.median(flat[1:])  # the DC term (overall brightness) does not set the median
    return int(np.packbits(flat > med).view(">u8")[0])


def phash(pixels: np.ndarray) -> tuple[int, int, float, np.ndarray]:
    """(pHash, pHash of the mirrored picture, grey-level standard deviation, the 32x32 grey thumbnail as uint8)
    of an HWC uint8 picture."""
    grey = Image.fromarray(pixels).convert("L")
    thumb = np.asarray(grey.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0))
    coeffs = (_DCT @ thumb.astype(np.float64) @ _DCT.T)[:LOW, :LOW]
    return _bits(coeffs), _bits(coeffs * _FLIP), float(np.asarray(grey, dtype=np.float32).std()), thumb


def _unit_rows(a: np.ndarray) -> np.ndarray:
    x = a.reshape(len(a), -1).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def thumb_similarity(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of the thumbnails of pictures a[k] and b[k], the better of b as is and mirrored."""
    ta, tb = _unit_rows(thumbs[a]), _unit_rows(thumbs[b])
    tm = _unit_rows(thumbs[b][:, :, ::-1])
    return np.maximum((ta * tb).sum(1), (ta * tm).sum(1))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between uint64 hashes `a` (n,) and `b` (m,) -> (n, m)."""
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int16)


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self, members: Iterable[int]) -> list[list[int]]:
        """Sets of at least two members, each sorted, in order of their first member."""
        by_root: dict[int, list[int]] = {}
        for i in members:
            by_root.setdefault(self.find(i), []).append(i)
        return sorted((sorted(g) for g in by_root.values() if len(g) > 1), key=lambda g: g[0])


def centred_unit(feats: np.ndarray) -> np.ndarray:
    """Features minus their mean, scaled to unit length: cosine similarity as a dot product. Pooled ReLU features
    all point the same way; centring makes the cosine compare what differs between pictures."""
    x = np.asarray(feats, dtype=np.float32)
    x = x - x.mean(0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class Pair:
    a: int
    b: int
    how: str  # 'exact' | 'near'
    similarity: float  # 1.0 for exact copies, else the thumbnails' correlation
    bits: int  # pHash distance (-1 when not compared)


def exact_pairs(digests: Sequence[str | None]) -> list[Pair]:
    """Every file paired with the first file of the same content hash."""
    first: dict[str, int] = {}
    out = []
    for i, d in enumerate(digests):
        if d is None:
            continue
        if d in first:
            out.append(Pair(first[d], i, "exact", 1.0, 0))
        else:
            first[d] = i
    return out


def near_pairs(hashes: np.ndarray, flipped: np.ndarray, unit: np.ndarray, usable: np.ndarray, thumbs: np.ndarray,
               settings: DupeSettings = DupeSettings(), block: int = 1024) -> list[Pair]:
    """Pairs (i < j) of usable pictures that are near copies: a candidate (close pHash, as is or mirrored, or a
    high cosine of the centred unit features `unit`) whose thumbnails (`thumbs`, n x 32 x 32 uint8) confirm it."""
    idx = np.flatnonzero(usable)
    h, hf, u = hashes[idx], flipped[idx], unit[idx]
    out: list[Pair] = []
    for s in range(0, len(idx), block):
        rows = slice(s, min(s + block, len(idx)))
        cos = u[rows] @ u.T
        bits = np.minimum(hamming(h[rows], h), hamming(h[rows], hf))
        r, c = np.nonzero((bits <= settings.phash_bits) | (cos >= settings.cosine))
        r = r + s
        keep = c > r
        r, c = r[keep], c[keep]
        if not len(r):
            continue
        sim = thumb_similarity(thumbs, idx[r], idx[c])
        for a, b, t in zip(r[sim >= settings.thumb], c[sim >= settings.thumb], sim[sim >= settings.thumb]):
            out.append(Pair(int(idx[a]), int(idx[b]), "near", float(min(t, 1.0)), int(bits[a - s, b])))
    return out


def group_pairs(n: int, pairs: Sequence[Pair]) -> list[list[int]]:
    uf = UnionFind(n)
    for p in pairs:
        uf.union(p.a, p.b)
    return uf.groups({i for p in pairs for i in (p.a, p.b)})

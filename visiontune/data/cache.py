"""Pre-sized image cache: decode each image once, keep its pixels (short side = presize, uint8) in
memory-mapped files, so later epochs and later runs skip JPEG decoding.

On disk, under the cache folder: `s{short_side}/index.json` maps each file's absolute path and its
(byte size, mtime) to a segment, offset and shape; `seg-*.bin` hold raw HWC uint8 pixels and are never
modified once written. The index records a BLAKE2b digest of each segment (computed while it is written)
and of itself: a process checks each segment once before using it, so a bit flip or a truncation in the
cache is caught, reported and rebuilt from the image files, never trained on. Segments and the index are written to temporary names, fsynced and renamed,
the index last, so a killed process leaves at worst unreferenced files, removed by the next update.
Updates hold a file lock (several runs or DDP ranks may share a cache); readers need none: a segment
that vanished under them (another run dropped it) makes them decode the file instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._core import console as _console
from .._core.checksum import fast_hasher, file_digest
from .._core.failpoints import failpoint
from .._core.io import write_bytes
from .dataset import BadFiles, FilePixels
from .decode import ImageDecodeError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent builders may duplicate work, never corrupt
    fcntl = None

FORMAT = 3  # 2: segment and index digests; 3: images shrunk by torch (pil_to_uint8), not Pillow
CHUNK_IMAGES = 2000  # images per segment: the index is committed after each, so a killed build resumes
CHUNK_BYTES = 256 << 20
UNRESOLVED, BAD = -1, -2
_VERIFIED: set[tuple] = set()  # segments this process has checked against their digest (path, size, mtime, digest)


def _index_digest(body: dict) -> str:
    """Digest of an index without its own `digest` entry (key order fixed)."""
    h = fast_hasher()
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def resolve_cache(cache, default_root: Path) -> tuple[Path | None, bool]:
    """`cache` argument -> (folder or None when off, whether 'auto' rules apply)."""
    if cache is None or cache is False or cache == "off":
        return None, False
    if cache == "auto":
        return default_root, True
    if cache is True or cache == "on":
        return default_root, False
    if isinstance(cache, (str, os.PathLike)):
        return Path(cache).expanduser(), False
    from .._core.errors import bad_value

    raise bad_value("cache", cache, "'auto', 'on', 'off' or a folder")


def _decode(path: Path, short_side: int) -> tuple[np.ndarray | None, str]:
    """One file -> (HWC uint8 pixels at `short_side`, '') or (None, reason)."""
    try:
        return FilePixels([path], short_side)(0).permute(1, 2, 0).numpy(), ""
    except ImageDecodeError as e:
        return None, str(e)


class ImageCache:
    """The on-disk store for one short side: index, segments and the update lock."""

    def __init__(self, root: Path, short_side: int):
        self.root, self.short_side = Path(root), int(short_side)
        self.dir = self.root / f"s{self.short_side}"

    @contextlib.contextmanager
    def locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def empty_index(self) -> dict:
        return {"format": FORMAT, "short_side": self.short_side, "segments": {}, "digests": {}, "entries": {}}

    def read_index(self) -> dict:
        """The index, keeping only segments whose file has the recorded length and digest (the images of the
        others are decoded again). A damaged index is reported and the cache rebuilt."""
        path = self.dir / "index.json"
        try:
            raw = path.read_bytes()
        except OSError:
            return self.empty_index()
        try:
            index = json.loads(raw)
            if index.get("format") != FORMAT or index.get("short_side") != self.short_side:
                return self.empty_index()  # an older format: rebuilt, its segments collected
            if index.pop("digest", None) != _index_digest(index):
                raise ValueError("its checksum does not match")
            segments, digests, entries = index["segments"], index["digests"], index["entries"]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            _console.notice(f"image cache: {path} is damaged ({str(e)[:80]}); rebuilding the cache from the images.")
            return self.empty_index()
        kept = {}
        for name, nbytes in segments.items():
            problem = self._check_segment(name, nbytes, digests.get(name))
            if problem is None:
                kept[name] = nbytes
            elif problem != "missing":
                _console.notice(f"image cache: {self.dir / name} is damaged ({problem}); decoding its images again.")
        index["segments"], index["digests"] = kept, {n: digests[n] for n in kept}
        index["entries"] = {p: e for p, e in entries.items() if e[2] is None or e[2] in kept}
        return index

    def _check_segment(self, name: str, nbytes: int, digest: str | None) -> str | None:
        """None when segment `name` is whole and matches its digest, else what is wrong. Each segment is read
        once per process (segments never change once written), at about disk speed."""
        path = self.dir / name
        try:
            st = path.stat()
        except OSError:
            return "missing"
        if st.st_size != nbytes:
            return f"{st.st_size} bytes instead of {nbytes}"
        key = (str(path), st.st_size, st.st_mtime_ns, digest)
        if key in _VERIFIED:
            return None
        try:
            if digest is None or file_digest(path) != digest:
                return "its checksum does not match"
        except OSError as e:
            return str(e)
        _VERIFIED.add(key)
        return None

    def write_index(self, index: dict) -> None:
        body = {k: v for k, v in index.items() if k != "digest"}
        write_bytes(self.dir / "index.json", json.dumps({**body, "digest": _index_digest(body)},
                                                        separators=(",", ":")).encode())

    @contextlib.contextmanager
    def new_segment(self):
        """Yields `append(array) -> offset`; on success the bytes become an immutable segment, whose
        (name, length) is in `.result` of the yielded function afterwards. Nothing is kept on failure."""
        name = f"seg-{uuid.uuid4().hex[:12]}.bin"
        tmp = self.dir / f".{name}.partial"
        pos = 0
        hasher = fast_hasher()

        def append(a: np.ndarray) -> int:
            nonlocal pos
            data = np.ascontiguousarray(a).data
            f.write(data)
            hasher.update(data)
            pos += a.nbytes
            failpoint("image-cache")
            return pos - a.nbytes

        try:
            with open(tmp, "wb") as f:
                yield append
                f.flush()
                os.fsync(f.fileno())
            if pos:
                os.replace(tmp, self.dir / name)
            append.result = (name, pos, hasher.hexdigest()) if pos else None
        finally:
            tmp.unlink(missing_ok=True)

    def collect_garbage(self, index: dict) -> bool:
        """Delete segments no entry uses and partial files of killed builds (call with the lock held);
        True when the index changed."""
        used = {e[2] for e in index["entries"].values() if e[2] is not None}
        unused = [name for name in index["segments"] if name not in used]
        for name in unused:
            del index["segments"][name]
            index["digests"].pop(name, None)
        for p in self.dir.iterdir():
            if p.name.endswith(".partial") or (p.name.startswith("seg-") and p.name not in index["segments"]):
                p.unlink(missing_ok=True)
        return bool(unused)

    def free_bytes(self) -> int:
        p = self.dir
        while not p.exists() and p != p.parent:
            p = p.parent
        return shutil.disk_usage(p).free


class CachedPixels:
    """Pixel source backed by an ImageCache: item i -> uint8 (3, H, W) tensor, as FilePixels gives it.

    `prepare(start, stop)` (main process, before loader workers start) makes sure files [start, stop)
    are in the cache, decoding new or changed ones; items not prepared are decoded from their files.
    """

    def __init__(self, files: Sequence[Path], short_side: int, cache: ImageCache, bad: BadFiles, auto: bool = True):
        self.files = [Path(os.path.abspath(f)) for f in files]
        self.short_side, self.cache, self.bad, self.auto = short_side, cache, bad, auto
        self.disabled: str | None = None  # why the cache is off for this data, once it is
        n = len(self.files)
        self.table = np.full((n, 4), UNRESOLVED, dtype=np.int64)  # segment number, offset, height, width
        self.stat_key = np.full((n, 2), -1, dtype=np.int64)  # byte size, mtime_ns seen when resolved
        self.segments: list[str] = []
        self.reasons: dict[int, str] = {}
        self.decoded = 0  # images this object decoded into the cache (tests and benchmarks read it)
        self._maps: dict[int, np.memmap] = {}
        self._file_pixels = FilePixels(self.files, short_side)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}  # memory maps are reopened in each process
        return state

    # ---------------------------------------------------------------- reading
    def __call__(self, i: int) -> torch.Tensor:
        seg, off, h, w = (int(v) for v in self.table[i])
        if seg == BAD:
            raise ImageDecodeError(self.reasons[i])
        if seg >= 0:
            try:
                mm = self._maps.get(seg)
                if mm is None:
                    mm = self._maps[seg] = np.memmap(self.cache.dir / self.segments[seg], dtype=np.uint8, mode="r")
                pixels = np.array(mm[off : off + h * w * 3]).reshape(h, w, 3)
                return torch.from_numpy(pixels).permute(2, 0, 1)
            except (OSError, ValueError):
                pass  # segment removed by another run: decode the file instead
        return self._file_pixels(i)

    # ---------------------------------------------------------------- filling
    def _stat(self, i: int) -> tuple[int, int]:
        try:
            st = self.files[i].stat()
            return st.st_size, st.st_mtime_ns
        except OSError:
            return -1, -1

    def prepare(self, start: int = 0, stop: int | None = None) -> None:
        """Resolve items [start, stop) against the cache, decoding what is missing or changed."""
        stop = len(self.files) if stop is None else stop
        if self.disabled or start >= stop:
            return
        keys = np.asarray([self._stat(i) for i in range(start, stop)], dtype=np.int64).reshape(-1, 2)
        fresh = (self.stat_key[start:stop] == keys).all(1) & (self.table[start:stop, 0] != UNRESOLVED)
        if fresh.all():
            return
        try:
            with self.cache.locked():
                self._update(start, stop, keys)
        except OSError as e:  # no space, read-only cache folder, ...: train from the files instead
            need = (stop - start) * self.short_side * self.short_side * 4  # 3 channels at about 4:3
            self._disable(f"image cache off: could not write to {self.cache.dir} ({e}; {stop - start} images need "
                          f"about {need / 2**20:.1f} MB there). Training reads the image files instead; free some "
                          f"space there to cache them next time.")

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        self.table[:] = UNRESOLVED
        self._maps = {}
        _console.notice(reason)

    def _update(self, start: int, stop: int, keys: np.ndarray) -> None:
        index = self.cache.read_index()
        entries = index["entries"]
        need = []
        for j, i in enumerate(range(start, stop)):
            e = entries.get(str(self.files[i]))
            if keys[j, 0] < 0:
                continue  # unreadable now: decoding at read time reports it
            if e is None or e[0] != keys[j, 0] or e[1] != keys[j, 1]:
                need.append(i)
        if need and not self._room_for(len(need)):
            return
        t0 = time.perf_counter()
        for chunk in self._chunks(need):
            self._add_chunk(index, chunk, keys, start)
        dropped = [p for p in entries if not os.path.exists(p)]
        for p in dropped:
            del entries[p]
        if self.cache.collect_garbage(index) or dropped:
            self.cache.write_index(index)
        self._resolve(index, start, stop, keys)
        if need and not _console.quiet():
            dt = time.perf_counter() - t0
            _console.notice(f"image cache: decoded {len(need)} images in {dt:.1f}s "
                            f"({len(need) / max(dt, 1e-9):,.0f} img/s) into {self.cache.dir}")

    def _room_for(self, n: int) -> bool:
        """'auto' caches only when the pixels (estimated at 4:3) take at most half the free disk space."""
        if not self.auto:
            return True
        need = n * self.short_side * self.short_side * 3 * 4 // 3
        free = self.cache.free_bytes()
        if need <= free // 2:
            return True
        self._disable(f"image cache off: {n} images at short side {self.short_side} need about "
                      f"{need / 2**30:.1f} GB and {self.cache.dir} has {free / 2**30:.1f} GB free. "
                      f"Pass cache='/a/bigger/disk' to cache elsewhere, or cache='off' to silence this.")
        return False

    def _chunks(self, need: list[int]):
        """`need` in chunks of at most CHUNK_IMAGES images (about CHUNK_BYTES), with a progress bar."""
        size = max(1, min(CHUNK_IMAGES, CHUNK_BYTES // (self.short_side * self.short_side * 4)))
        progress = None
        if need and _console.interactive():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
            )

            progress = Progress(TextColumn("caching images"), BarColumn(), MofNCompleteColumn(),
                                console=_console.err, transient=True)
            progress.start()
            task = progress.add_task("cache", total=len(need))
        try:
            for k in range(0, len(need), size):
                yield need[k : k + size]
                if progress is not None:
                    progress.update(task, advance=len(need[k : k + size]))
        finally:
            if progress is not None:
                progress.stop()

    def _add_chunk(self, index: dict, chunk: list[int], keys: np.ndarray, start: int) -> None:
        """Decode `chunk` on threads (Pillow releases the GIL), streaming the pixels into one new
        segment in file order, then commit the index."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        entries = index["entries"]
        with ThreadPoolExecutor(max(1, min(8, cores))) as pool, self.cache.new_segment() as append:
            located = []
            for i, (a, reason) in zip(chunk, pool.map(lambda i: _decode(self.files[i], self.short_side), chunk)):
                size, mtime = (int(v) for v in keys[i - start])
                if a is None:
                    entries[str(self.files[i])] = [size, mtime, None, reason]
                else:
                    located.append((i, [size, mtime, None, append(a), a.shape[0], a.shape[1]]))
        if append.result is not None:
            name, nbytes, digest = append.result
            index["segments"][name] = nbytes
            index["digests"][name] = digest
            for i, e in located:
                e[2] = name
                entries[str(self.files[i])] = e
        self.decoded += len(chunk)
        self.cache.write_index(index)

    def _resolve(self, index: dict, start: int, stop: int, keys: np.ndarray) -> None:
        """Point items [start, stop) at their cached pixels (or their decode failure)."""
        self.segments = list(index["segments"])
        number = {name: k for k, name in enumerate(self.segments)}
        self._maps = {}
        for j, i in enumerate(range(start, stop)):
            e = index["entries"].get(str(self.files[i]))
            if e is None or keys[j, 0] < 0 or e[0] != keys[j, 0] or e[1] != keys[j, 1]:
                self.table[i] = UNRESOLVED
                continue
            if e[2] is None:
                self.table[i] = (BAD, 0, 0, 0)
                self.reasons[i] = e[3]
                self.bad.add(self.files[i], e[3])
            else:
                self.table[i] = (number[e[2]], e[3], e[4], e[5])
            self.stat_key[i] = keys[j]
        # items outside [start, stop) were resolved against an older segment list: renumber them
        for i in range(len(self.files)):
            if start <= i < stop or self.table[i, 0] < 0:
                continue
            e = index["entries"].get(str(self.files[i]))
            if e is None or e[2] not in number:
                self.table[i] = UNRESOLVED
            else:
                self.table[i, 0] = number[e[2]]

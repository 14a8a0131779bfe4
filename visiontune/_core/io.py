"""The one atomic writer: every file visiontune writes (checkpoints, exports, configs, caches, CSVs) goes to a
temporary name in the same folder, is fsynced, then renamed over the target, so a reader sees the old file
or the new one and never half of one, whatever kills the process."""

from __future__ import annotations

import errno
import glob
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from .errors import DiskFullError
from .failpoints import failpoint


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def partial_name(path: Path) -> Path:
    """The temporary name `path` is written under: hidden, unique per writer, ending in `.partial`."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.partial")


NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def disk_full_error(path: Path, need: int | None = None, cause: BaseException | None = None) -> DiskFullError:
    """The one message for a full disk: the file, the space it needs (when known) and what is free there."""

    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{_mb(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    needs = f"it needs about {_mb(need)}" if need else "it needs more space"
    err = DiskFullError(f"No space left to write {path}: {needs} and its disk has {free}. Free some space on it "
                        f"(or write elsewhere) and run the command again; nothing half-written was kept.")
    err.filename, err.errno = str(path), errno.ENOSPC
    return err


def is_disk_full(e: BaseException) -> bool:
    """True for the OSErrors of a full disk or an exceeded quota, including numpy's short write on one
    ("768000 requested and 262112 written", which carries no errno)."""
    if not isinstance(e, OSError):
        return False
    return e.errno in NO_SPACE or (e.errno is None and "requested and" in str(e) and "written" in str(e))


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], failpoints: str | None = None,
                 durable: bool = False, size_hint: int | None = None) -> Path:
    """Call `write(tmp)` to fill a temporary file, fsync it, then rename it over `path` and return `path`.

    `failpoints='checkpoint'` passes the crash points `checkpoint-partial` (half written), `checkpoint-written`
    (complete, not renamed) and `checkpoint-renamed` (see failpoints.py); `durable` also fsyncs the folder so
    the rename survives a power cut. The temporary file never outlives a failure. A full disk raises
    DiskFullError naming `path` and the space needed (`size_hint` bytes, when the caller knows it)."""
    from .errors import DiskFullError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = partial_name(path)
    try:
        _write_synced(tmp, write, failpoints)
        os.replace(tmp, path)
    except DiskFullError:
        raise
    except Exception as e:  # safetensors reports a failed write as its own error type, "os error 28"
        if not (is_disk_full(e) or "os error 28" in str(e) or "No space left" in str(e)):
            raise
        tmp.unlink(missing_ok=True)  # first, so the message says the space really free
        raise disk_full_error(path, size_hint, e) from e
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
    if failpoints:
        failpoint(f"{failpoints}-renamed")
    return path


def _write_synced(tmp: Path, write: Callable[[Path], object], failpoints: str | None) -> None:
    """Fill `tmp` and fsync it, passing the `-partial` and `-written` failpoints."""
    write(tmp)
    if failpoints:
        failpoint(f"{failpoints}-partial", before=lambda: os.truncate(tmp, tmp.stat().st_size // 2))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    if failpoints:
        failpoint(f"{failpoints}-written")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
                        size_hint=len(text.encode("utf-8")))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`atomic_write` of a binary file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), size_hint=len(data))


def remove_stale_partials(path: Path) -> None:
    """Remove the temporary files of `path` left by writers that died (kill -9, power cut) before renaming
    them: each names its writer's pid, and a live writer's file is left alone."""
    for p in path.parent.glob(f".{glob.escape(path.name)}.*-*.partial"):
        pid = p.name[len(path.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_partial_files(folder: Path) -> None:
    """Temporary files left in `folder` by a process killed while writing (never read; safe to delete)."""
    for p in Path(folder).glob(".*.partial"):
        p.unlink(missing_ok=True)


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file of `key: value` lines as a dict; ConfigError naming the file when it is not valid YAML or
    not a mapping (the caller checks that it exists, to say what was expected there)."""
    import yaml

    from .errors import ConfigError

    try:
        d = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path} should hold `key: value` lines, got {type(d).__name__}.")
    return d

"""The server's settings in one place (`ServeConfig`), validated once at the door, and the check for the extra."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from .._core.errors import ConfigError, bad_value, did_you_mean

BACKENDS = ("torch", "onnx")
API_KEY_ENV = "VISIONTUNE_API_KEY"
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "kib": 2**10, "mib": 2**20, "gib": 2**30}
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def _parse(value: int | float | str, units: dict[str, int], name: str, example: str) -> int:
    if isinstance(value, bool):
        raise bad_value(name, value, example)
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = _NUMBER.match(str(value))
        if m is None or m.group(2).lower() not in units:
            raise bad_value(name, value, example)
        number, unit = float(m.group(1)), m.group(2).lower()
    out = number * units[unit]
    if not math.isfinite(out) or out < 1:
        raise bad_value(name, value, f"{example}, and at least 1")
    return int(out)


def parse_bytes(value: int | float | str, name: str = "max_bytes") -> int:
    """'10MB' -> 10_000_000, '512KiB' -> 524_288, 1048576 -> 1048576 (k/M/G are powers of 10, KiB/MiB/GiB of 2)."""
    return _parse(value, _SIZE_UNITS, name, "a size like 10MB, 512KB, 4MiB or a number of bytes")


def parse_count(value: int | float | str, name: str = "max_pixels") -> int:
    """'40M' -> 40_000_000, '1.5k' -> 1500, 2e6 -> 2_000_000."""
    return _parse(value, _COUNT_UNITS, name, "a count like 40M, 500k or 40000000")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and 'localhost'."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """Everything `visiontune serve` can be told, with its defaults; `ServeConfig(...)` validates them.

    Limits: `max_bytes` per request body, `max_pixels` per image (checked from the header, before decoding),
    `max_files` per request, `queue_size` images admitted at once (over it: 503 with Retry-After), and
    `body_timeout_s` to receive a body. Batching: up to `max_batch` images per forward pass, waiting at most
    `max_wait_ms` for a batch to fill. `threads` sets the model's CPU threads, `decode_threads` the pool
    that decodes uploads."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_bytes: int | str = "10MB"
    max_pixels: int | str = "40M"
    max_files: int = 64
    queue_size: int = 256
    top_k: int = 5
    tta: bool = False
    backend: str = "torch"
    threads: int | None = None
    decode_threads: int | None = None
    device: str | None = None
    api_key: str | None = field(default=None, repr=False)
    cors: tuple[str, ...] = ()
    body_timeout_s: float = 60.0
    warmup: bool = True

    def __post_init__(self) -> None:
        self.max_bytes = parse_bytes(self.max_bytes, "max_bytes")
        self.max_pixels = parse_count(self.max_pixels, "max_pixels")
        self.cors = (self.cors,) if isinstance(self.cors, str) else tuple(self.cors)
        for name in ("max_batch", "max_files", "queue_size", "top_k"):
            _positive_int(name, getattr(self, name))
        for name in ("threads", "decode_threads"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise bad_value("port", self.port, "a port number from 0 to 65535", "0 picks a free port.")
        if not isinstance(self.max_wait_ms, (int, float)) or not 0 <= self.max_wait_ms <= 10_000:
            raise bad_value("max_wait_ms", self.max_wait_ms, "a number of milliseconds from 0 to 10000")
        if not isinstance(self.body_timeout_s, (int, float)) or not self.body_timeout_s > 0:
            raise bad_value("body_timeout_s", self.body_timeout_s, "a positive number of seconds")
        if self.backend not in BACKENDS:
            raise bad_value("backend", self.backend, "'torch' or 'onnx'", did_you_mean(self.backend, BACKENDS))
        if self.max_files > self.queue_size:
            raise ConfigError(f"max_files ({self.max_files}) cannot be more than queue_size ({self.queue_size}): "
                              f"a request with that many images could never be admitted.")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError(f"The API key is empty. Pass a real one (--api-key KEY or {API_KEY_ENV}), or none.")
        for origin in self.cors:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise bad_value("cors", origin, "an origin like https://example.com or http://localhost:3000 "
                                "(scheme and host, no path), or '*'")
        if not self.host:
            raise bad_value("host", self.host, "an address to listen on, like 127.0.0.1 or 0.0.0.0")

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    def model_threads(self, library_default: int) -> int:
        """CPU threads for the model: `threads`, else one less than the CPUs this process may use (at least 1, at
        most torch's default). The core left over decodes uploads and runs the HTTP loop, and keeps the model's
        threads from waiting on each other when another process takes a core: on the 2-core bench, all cores
        were 1.15-1.4x faster on a quiet machine but 3-9x slower next to one busy process (BENCHMARKS.md)."""
        return self.threads or max(1, min(library_default, available_cpus() - 1))

    def pool_size(self) -> int:
        """Threads that decode uploads: `decode_threads`, else up to 4 (decoding releases the GIL)."""
        return self.decode_threads or min(4, available_cpus())

    def public(self) -> dict:
        """The settings safe to show a client (/info): everything but the API key."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("api_key", "host", "port")}


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a container's --cpus), which
    os.cpu_count() and torch's default thread count do not see."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(n, math.ceil(quota))) if quota else max(1, n)


def _cgroup_cpu_quota() -> float | None:
    """cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us / cpu.cfs_period_us`, in CPUs; None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_value(name, value, "a whole number of at least 1")


def require_serve_extra() -> None:
    """Raise ConfigError naming the extra to install when FastAPI, uvicorn or python-multipart is missing."""
    missing = []
    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python_multipart", "python-multipart")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ConfigError(f"visiontune serve needs the serve extra ({', '.join(missing)} not installed): "
                          f"pip install \"visiontune[serve]\".")


def require_onnx_runtime() -> None:
    """Raise ConfigError naming the extra when --backend onnx cannot run here."""
    missing = []
    for module in ("onnxruntime", "onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(f"--backend onnx needs the onnx extra ({', '.join(missing)} not installed): "
                          f"pip install \"visiontune[onnx]\", or use --backend torch.")

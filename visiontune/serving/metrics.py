"""Counters and histograms in Prometheus' text format, written here (no client library): what /metrics shows.

Metrics are updated from the event loop and from the model's worker thread, so each one has a lock; the
label sets are fixed and small (endpoints and status codes, never anything taken from a request body).
"""

from __future__ import annotations

import math
import os
import threading
from typing import Callable, Iterable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Metric:
    """One named metric family: `kind` is counter, gauge or histogram; `labels` are the label names."""

    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        self.name, self.help, self.labels = name, help, tuple(labels)
        self._lock = threading.Lock()

    def lines(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(Metric):
    """A number that only goes up, per label values."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        super().__init__(name, help, labels)
        self._values: dict[tuple, float] = {}

    def inc(self, *label_values, by: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + by

    def value(self, *label_values) -> float:
        with self._lock:
            return self._values.get(label_values, 0.0)

    def total(self, **match: str) -> float:
        """The sum over every series whose labels equal `match` (total(endpoint="/predict"))."""
        where = [(self.labels.index(k), v) for k, v in match.items()]
        with self._lock:
            return sum(v for key, v in self._values.items() if all(key[i] == want for i, want in where))

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return super().lines() + [f"{self.name}{_labels(self.labels, k)} {_number(v)}" for k, v in items]


class Gauge(Metric):
    """A number read when /metrics is asked (`read` returns it), or set directly."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], float] | None = None):
        super().__init__(name, help)
        self.read, self._value = read, 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def lines(self) -> list[str]:
        value = self.read() if self.read is not None else self._value
        return super().lines() + [f"{self.name} {_number(value)}"]


class Histogram(Metric):
    """Observations counted into cumulative buckets (`le`), with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Iterable[float], labels: Iterable[str] = ()):
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple, list] = {}  # label values -> [counts per bucket..., +Inf count, sum]
        if not self.labels:  # an unlabelled histogram shows its zeros from the start
            self._series[()] = [0] * (len(self.buckets) + 1) + [0.0]

    def observe(self, value: float, *label_values) -> None:
        with self._lock:
            s = self._series.setdefault(label_values, [0] * (len(self.buckets) + 1) + [0.0])
            for i, b in enumerate(self.buckets):
                if value <= b:
                    s[i] += 1
                    break
            else:
                s[len(self.buckets)] += 1
            s[-1] += value

    def count(self, *label_values) -> int:
        with self._lock:
            s = self._series.get(label_values)
            return sum(s[:-1]) if s else 0

    def mean(self, *label_values) -> float | None:
        """The mean of the observations so far (None before the first)."""
        with self._lock:
            s = self._series.get(label_values)
            n = sum(s[:-1]) if s else 0
            return s[-1] / n if n else None

    def lines(self) -> list[str]:
        out = super().lines()
        with self._lock:
            series = sorted((k, list(v)) for k, v in self._series.items())
        for key, s in series:
            running = 0
            for b, n in zip((*self.buckets, math.inf), s[:-1]):
                running += n
                le = 'le="' + _number(b) + '"'
                out.append(f"{self.name}_bucket{_labels(self.labels, key, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.labels, key)} {_number(s[-1])}")
            out.append(f"{self.name}_count{_labels(self.labels, key)} {running}")
        return out


def resident_memory_bytes() -> float:
    """This process's resident set size (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return math.nan


class ServeMetrics:
    """The server's metrics: requests by endpoint and status, images by outcome, batch sizes, queue wait,
    decode and model latency, and gauges for the queue and memory."""

    def __init__(self, queue_depth: Callable[[], float] = lambda: 0, admitted: Callable[[], float] = lambda: 0,
                 ready: Callable[[], float] = lambda: 0):
        self.requests = Counter("visiontune_requests_total", "HTTP requests answered, by endpoint and status code.",
                                ("endpoint", "status"))
        self.request_seconds = Histogram("visiontune_request_duration_seconds",
                                         "Time from request start to the end of the answer.", LATENCY_BUCKETS,
                                         ("endpoint",))
        self.images = Counter("visiontune_images_total", "Uploaded images, by outcome (ok or the error code).",
                              ("outcome",))
        self.batch_size = Histogram("visiontune_batch_size", "Images per forward pass of the model.", BATCH_BUCKETS)
        self.queue_wait = Histogram("visiontune_queue_wait_seconds",
                                    "Time an image waited in the queue before its forward pass began.",
                                    LATENCY_BUCKETS)
        self.model_seconds = Histogram("visiontune_model_latency_seconds",
                                       "Time of one forward pass of the model (one batch).", LATENCY_BUCKETS)
        self.decode_seconds = Histogram("visiontune_decode_seconds",
                                        "Time to decode and resize one uploaded image.", LATENCY_BUCKETS)
        self.gauges = [
            Gauge("visiontune_queue_depth", "Images decoded and waiting for the model.", queue_depth),
            Gauge("visiontune_admitted_images", "Images admitted and not yet answered (the queue_size limit).",
                  admitted),
            Gauge("visiontune_ready", "1 when the model is loaded and warmed up.", ready),
            Gauge("process_resident_memory_bytes", "Resident memory of the server process.", resident_memory_bytes),
        ]

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format (version 0.0.4)."""
        families: list[Metric] = [self.requests, self.request_seconds, self.images, self.batch_size,
                                  self.queue_wait, self.model_seconds, self.decode_seconds, *self.gauges]
        return "\n".join(line for m in families for line in m.lines()) + "\n"

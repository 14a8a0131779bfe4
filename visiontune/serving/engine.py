"""Micro-batching: one worker thread owns the model and runs what the request handlers put on its queue.

The worker takes the first waiting image, then more until it has `max_batch` images or `max_wait_ms` have
passed since that first image arrived, whichever comes first, and answers each image's future. Admission
is bounded (`queue_size` images in the server at once), so an overloaded server says 503 instead of piling
requests up in memory. Stopping lets the images already queued finish.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..infer.tta import TTAViews
from .backends import Backend, ModelFile, build_backend
from .config import ServeConfig
from .images import ApiError, ImageSpec
from .metrics import ServeMetrics

log = logging.getLogger("visiontune.serving")
TTA_N, TTA_BETA, TTA_SCALE = 4, 0.25, 1.1  # learn.tta()'s defaults: the server's --tta gives the same numbers
_STOP = object()


@dataclass
class Item:
    """One image waiting for the model: its views (uint8 (V, 3, size, size)) and the future of its probabilities."""

    views: torch.Tensor
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class Engine:
    """Owns the model: its worker thread loads it, warms it up (then `ready` is set), and runs batches."""

    def __init__(self, model: ModelFile, cfg: ServeConfig, metrics: ServeMetrics | None = None,
                 on_ready: Callable[["Engine"], None] | None = None,
                 on_fatal: Callable[["Engine"], None] | None = None):
        self.model, self.cfg = model, cfg
        self.metrics = metrics or ServeMetrics(queue_depth=lambda: self._queued, admitted=lambda: self._admitted,
                                               ready=lambda: float(self.ready.is_set()))
        tta = TTAViews(model.data.size, TTA_N, TTA_SCALE, model.data.aug) if cfg.tta else None
        self.spec = ImageSpec(model.data.size, model.data.presize, tta)
        self.threads = cfg.model_threads(torch.get_num_threads())  # read once, here: decode threads lower the global
        self.ready = threading.Event()
        self.error: str | None = None
        self.stopping = False
        self.facts: dict = {}
        self.warmup_seconds: float | None = None
        self.on_ready, self.on_fatal = on_ready, on_fatal
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued = 0  # images in the queue
        self._admitted = 0  # images admitted and not yet answered
        self._coming = 0  # admitted images not yet in the queue (being received or decoded)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- admission (called from the event loop)
    def admit(self, n: int = 1) -> "Ticket | None":
        """Room for `n` images (a Ticket to give back when the request ends); None when the server already
        holds `queue_size`. Admitted images count as on their way to the model until submitted or dropped."""
        return Ticket(self, n) if self._reserve(n) else None

    def _reserve(self, n: int) -> bool:
        with self._lock:
            if self._admitted + n > self.cfg.queue_size:
                return False
            self._admitted += n
            self._coming += n
            return True

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def queue_depth(self) -> int:
        return self._queued

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time to work through what is admitted now."""
        batches = max(1, self._admitted // self.cfg.max_batch)
        per_batch = self.metrics.model_seconds.mean() or 0.5
        return max(1, min(30, round(batches * per_batch + 0.5)))

    # ---------------------------------------------------------------- the queue
    def start(self) -> None:
        """Start the worker (once): it loads the model in the background, so /health answers meanwhile."""
        if self._thread is not None or self.stopping:  # every request asks: the common answer without the lock
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="visiontune-model", daemon=True)
                self._thread.start()

    def submit(self, views: torch.Tensor, ticket: "Ticket") -> Future:
        """Queue one image's views; the future gets its probabilities (a list of floats)."""
        if self.stopping:
            raise ApiError(503, "stopping", "The server is shutting down. Send the request to another instance.",
                           {"Retry-After": "1"})
        item = Item(views)
        with self._lock:
            self._queued += 1
        ticket.arrived()
        self._queue.put(item)
        return item.future

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new images, let the queued ones finish, and end the worker."""
        self.stopping = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # ---------------------------------------------------------------- the worker thread
    def _run(self) -> None:
        try:
            backend = self._load()
        except Exception as e:  # noqa: BLE001 - any load failure is reported on /ready and by `serve`
            self.error = str(e) if str(e) else type(e).__name__
            log.error("visiontune serve: the model could not be loaded: %s", self.error)
            if self.on_fatal is not None:
                self.on_fatal(self)
            return
        self.ready.set()
        if self.on_ready is not None:
            self.on_ready(self)
        while True:
            batch, stop = self._collect()
            if batch:
                self._forward(backend, batch)
            if stop:
                return

    def _load(self) -> Backend:
        torch.set_num_threads(self.threads)  # this thread's own count, whatever another thread sets later
        backend, facts = build_backend(self.model, self.cfg.backend, self.cfg.device, self.threads)
        self.facts = {**facts, "threads": self.threads, "decode_threads": self.cfg.pool_size()}
        t = time.perf_counter()
        if self.cfg.warmup:  # the first request should not pay for lazy initialization or new batch shapes
            s = self.spec.size
            for n in sorted({1, self.cfg.max_batch}):
                backend(torch.zeros((n * self.spec.views, 3, s, s), dtype=torch.uint8))
        self.warmup_seconds = time.perf_counter() - t
        return backend

    def _collect(self) -> tuple[list[Item], bool]:
        """Up to max_batch items: the first one blocking, the rest until max_wait after the first arrived. It
        waits only while more images are on their way, so a lone client never pays max_wait."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch, deadline = [first], first.enqueued + self.cfg.max_wait_s
        while len(batch) < self.cfg.max_batch:
            timeout = deadline - time.monotonic()
            try:
                if timeout > 0 and (self._coming > 0 or not self._queue.empty()):
                    item = self._queue.get(timeout=timeout)
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _forward(self, backend: Backend, batch: list[Item]) -> None:
        with self._lock:
            self._queued -= len(batch)
        start = time.monotonic()
        live = [it for it in batch if it.future.set_running_or_notify_cancel()]  # clients that went away: skip
        if not live:
            return
        for it in live:
            self.metrics.queue_wait.observe(start - it.enqueued)
        self.metrics.batch_size.observe(len(live))
        try:
            t = time.perf_counter()
            probs = backend(torch.cat([it.views for it in live]))
            self.metrics.model_seconds.observe(time.perf_counter() - t)
            if self.spec.tta is not None:  # as learn.tta: beta * plain + (1 - beta) * mean(augmented views)
                probs = probs.view(len(live), self.spec.views, -1)
                probs = torch.lerp(probs[:, 1:].mean(1), probs[:, 0], TTA_BETA)
            rows = probs.tolist()
        except Exception as e:  # noqa: BLE001 - a failed batch fails its requests, never the worker
            log.exception("visiontune serve: a batch of %d images failed", len(live))
            for it in live:
                it.future.set_exception(e)
            return
        for it, row in zip(live, rows):
            it.future.set_result(row)


class Ticket:
    """The images one request holds in the server: `grow` for the rest of a multi-file request, `arrived` /
    `dropped` as each image reaches the queue or fails before it, `close` when the request is answered."""

    def __init__(self, engine: Engine, n: int):
        self.engine, self.held, self.on_the_way = engine, n, n

    def grow(self, n: int) -> bool:
        if not self.engine._reserve(n):
            return False
        self.held += n
        self.on_the_way += n
        return True

    def arrived(self) -> None:
        self._left(1)

    dropped = arrived

    def _left(self, n: int) -> None:
        n = min(n, self.on_the_way)
        self.on_the_way -= n
        with self.engine._lock:
            self.engine._coming -= n

    def close(self) -> None:
        self._left(self.on_the_way)
        with self.engine._lock:
            self.engine._admitted -= self.held
        self.held = 0

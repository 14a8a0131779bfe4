"""`serve()`: run the app under uvicorn on a socket bound here, print where it listens, stop cleanly on SIGTERM.

The socket is bound before uvicorn starts, so `--port 0` gets a free port and the printed URL is the real
one. SIGTERM (and Ctrl-C) stop accepting connections, let the requests in flight finish, drain the model's
queue and return, so the process exits 0. `background=True` runs the same server in a thread (notebooks,
tests) and returns a handle with `url` and `stop()`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field

from .._core.allocator import keep_freed_memory
from .._core.errors import ConfigError, ExportError
from .config import (
    API_KEY_ENV,
    ServeConfig,
    is_loopback,
    require_onnx_runtime,
    require_serve_extra,
)

GRACEFUL_SECONDS = 30  # in-flight requests get this long after SIGTERM before they are cut


def _say(text: str) -> None:
    """A line on stdout, flushed at once (scripts and tests read the URL from it), whatever VISIONTUNE_QUIET says."""
    print(f"visiontune serve: {text}", flush=True)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), port 0 meaning a free one; ConfigError saying the way out otherwise."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host!r} is not an address this machine can listen on ({e.strerror}). Use "
                          f"127.0.0.1 (this machine only) or 0.0.0.0 (every network interface).") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"Port {port} on {host} is already in use (another server?). Stop it, pick another "
                              f"--port, or pass --port 0 for a free one.") from None
        if e.errno == errno.EACCES:
            raise ConfigError(f"No permission to listen on port {port} (ports under 1024 need root). Pick a port "
                              f"like 8000, or --port 0 for a free one.") from None
        raise ConfigError(f"Cannot listen on {host}:{port}: {e.strerror}.") from None
    sock.listen(2048)  # connect() works from now on, even before uvicorn accepts: the printed URL is usable at once
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"  # a URL that opens here; others use the machine's name
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass
class RunningServer:
    """A server started with `serve(..., background=True)`: its `url`, and `stop()` (graceful, like SIGTERM)."""

    url: str
    app: object
    _server: object = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def wait_ready(self, timeout: float = 120.0) -> "RunningServer":
        """Block until the model is loaded and warmed up; raise if it failed or took longer than `timeout`."""
        engine = self.app.state.engine
        deadline = time.monotonic() + timeout
        while not engine.ready.wait(0.05):
            if engine.error is not None:
                raise ExportError(f"The model could not be loaded: {engine.error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {self.url} was not ready after {timeout:g} s")
        return self

    def stop(self, timeout: float = GRACEFUL_SECONDS + 5) -> None:
        """Stop accepting, finish the requests in flight, drain the queue, end the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *, background: bool = False,
          access_log: bool = False, **options) -> RunningServer | None:
    """Serve the model in `model_path` (a .vt file or a run folder) over HTTP until SIGTERM or Ctrl-C.

    Options are ServeConfig's fields (`max_batch=32, max_wait_ms=10, max_bytes='10MB', max_pixels='40M',
    top_k=5, tta=False, backend='torch', threads=None, api_key=None, cors=()`); without `api_key`, the
    VISIONTUNE_API_KEY environment variable is used if set. Prints the URL it listens on (the upload page).
    With `background=True` it returns a RunningServer at once (the model loads meanwhile; `wait_ready()`)."""
    if options.get("api_key") is None and os.environ.get(API_KEY_ENV):
        options["api_key"] = os.environ[API_KEY_ENV]
    cfg = ServeConfig(host=host, port=port, **options)
    require_serve_extra()
    if cfg.backend == "onnx":
        require_onnx_runtime()
    if not background:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise ConfigError("serve() blocks, and this thread already runs an event loop (a notebook?). Use "
                              "vt.serve(..., background=True), which returns a handle with .url and .stop().")
    import uvicorn

    from .asgi import create_app

    keep_freed_memory()  # freed activations stay in the process: faster batches on the CPU
    if not background:
        # Every upload's pixel count is checked against max_pixels before decoding, so Pillow's own bomb warning
        # (between its two limits) and its EXIF complaints are noise in this process's log. Its error stays on.
        from PIL import Image

        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
    fatal: list[str] = []
    holder: dict = {}

    def on_ready(engine) -> None:
        if not background:
            _say(f"ready: warm-up took {engine.warmup_seconds:.1f} s; backend {engine.cfg.backend} on "
                 f"{engine.facts.get('device', 'cpu')}")

    def on_fatal(engine) -> None:
        fatal.append(engine.error or "unknown error")
        if "server" in holder:
            holder["server"].should_exit = True

    app = create_app(model_path, cfg, on_ready=on_ready, on_fatal=on_fatal)
    sock = bind_socket(cfg.host, cfg.port)
    url = url_of(sock)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="on",
                                           timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False))
    holder["server"] = server
    model = app.state.model
    if not background:
        _say(f"{model.path.name}: {model.arch}, {len(model.data.classes)} classes, size {model.data.size}; max batch "
             f"{cfg.max_batch}, max wait {cfg.max_wait_ms:g} ms{', TTA' if cfg.tta else ''}")
    _say(f"listening on {url}  (open it in a browser, or: curl -F file=@cat.jpg {url}/predict)")
    if not background:
        if cfg.host in ("0.0.0.0", "::"):
            _say(f"on every network interface: other machines use http://{socket.gethostname()}:{url.rsplit(':', 1)[1]}")
        if not is_loopback(cfg.host) and cfg.api_key is None:
            _say(f"warning: listening on {cfg.host} without an API key: anyone who can reach this machine can use "
                 f"the model. Pass --api-key KEY (or set {API_KEY_ENV}).")
    if background:
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="visiontune-serve", daemon=True)
        thread.start()
        return RunningServer(url, app, server, thread)
    received = _run_with_signals(server, sock)
    if fatal:
        raise ExportError(f"The model could not be loaded: {fatal[0]}")
    why = f" ({signal.Signals(received[0]).name})" if received else ""
    answered = int(app.state.engine.metrics.requests.total(endpoint="/predict"))
    _say(f"stopped{why}; answered {answered} requests to /predict")
    return None


def _run_with_signals(server, sock: socket.socket) -> list[int]:
    """Run uvicorn; SIGTERM/SIGINT shut it down gracefully and are *not* re-raised afterwards (uvicorn re-raises
    the signal it caught to the handler that was there before it: ours, which notes it), so we exit 0."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        server.run(sockets=[sock])
        return received
    previous = {s: signal.signal(s, lambda sig, frame: received.append(sig)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.stdout.flush()
    return received


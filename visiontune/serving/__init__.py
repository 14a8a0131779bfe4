"""Ship the model: `visiontune serve MODEL.vt`, `vt.serve(path)`, or `vt.serving.app(path)` to mount it yourself.

An HTTP server (FastAPI + uvicorn, the `serve` extra) with an upload page at `/`, `POST /predict`, health,
readiness, model info and Prometheus metrics; micro-batching across concurrent clients; limits on body size,
pixels, files and queue length, answered with JSON errors. Importing this package imports neither FastAPI nor
torch's model code; they load when a server is made.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .config import ServeConfig

if TYPE_CHECKING:
    from .server import RunningServer


def app(model_path: str | os.PathLike, config: ServeConfig | None = None, **options):
    """An ASGI (FastAPI) app serving `model_path`, to run with any ASGI server or mount in your own app:

        from fastapi import FastAPI
        outer = FastAPI(); outer.mount("/cats", vt.serving.app("model.vt", max_batch=16))

    Options are ServeConfig's fields; the model loads and warms up in the background when the app starts."""
    from .asgi import create_app

    return create_app(model_path, config, **options)


def serve(model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, **options) -> "RunningServer | None":
    """Serve `model_path` over HTTP (blocks until SIGTERM / Ctrl-C; `background=True` returns a handle). See
    `visiontune.serving.server.serve` for the options."""
    from .server import serve as _serve

    return _serve(model_path, host, port, **options)


__all__ = ["ServeConfig", "app", "serve"]

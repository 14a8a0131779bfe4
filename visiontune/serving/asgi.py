"""The ASGI application: routes, error answers, and the wiring of the guard, the decode pool and the engine.

`create_app(model_path, ...)` is what `vt.serving.app` returns and what `visiontune serve` runs; mount it in
your own server if you have one. Every answer that is not a prediction is `{"error", "detail"}` JSON with its
status code; a request handler never raises out to the client.
"""


import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Callable

from .._core.version import __version__
from .backends import ModelFile
from .config import ServeConfig, require_onnx_runtime, require_serve_extra
from .engine import TTA_BETA, TTA_N, TTA_SCALE, Engine
from .guard import BodyTimeout, BodyTooLarge, Guard, too_large_message
from .images import ApiError
from .page import PAGE, PAGE_HEADERS
from .responses import Error, Prediction, Predictions, prediction
from .uploads import read_uploads

log = logging.getLogger("visiontune.serving")

PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                     "description": "One or more images (repeat the field)."}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
ERRORS = {s: {"model": Error, "description": d} for s, d in (
    (400, "Empty body or file, a form without the field 'file'"), (401, "Missing or wrong API key"),
    (408, "The body did not arrive in time"), (413, "Body over --max-bytes, or more files than --max-files"),
    (415, "Not an image, or a Content-Type other than multipart/form-data or image/*"),
    (422, "Truncated or undecodable image, more pixels than --max-pixels (or a decompression bomb)"),
    (503, "Not ready yet, shutting down, or the queue is full (see Retry-After)"))}


async def disconnected(receive) -> None:
    """Return when the client has closed the connection (call after the request body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def create_app(model_path: str | os.PathLike, config: ServeConfig | None = None, *,
               on_ready: Callable[[Engine], None] | None = None, on_fatal: Callable[[Engine], None] | None = None,
               **options):
    """A FastAPI app serving the model in `model_path` (a .vt file, or a run folder holding model.vt).

    Settings are a ServeConfig or its fields as keywords (`max_batch=16, api_key=...`). The model file's
    header is checked now (a wrong file raises ExportError here); the weights are loaded and warmed up by
    the model's worker thread when the app starts (`/ready` says when)."""
    require_serve_extra()
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    if config is not None and options:
        raise TypeError("pass either a ServeConfig or its fields as keywords, not both")
    cfg = config or ServeConfig(**options)
    if cfg.backend == "onnx":
        require_onnx_runtime()
    model = ModelFile.open(model_path)
    engine = Engine(model, cfg, on_ready=on_ready, on_fatal=on_fatal)
    metrics = engine.metrics
    pool = ThreadPoolExecutor(cfg.pool_size(), thread_name_prefix="visiontune-decode")
    classes = list(model.data.classes)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:  # uvicorn has let in-flight requests finish by now: this drains whatever is still queued
            await asyncio.get_running_loop().run_in_executor(None, engine.stop)
            pool.shutdown(wait=True)

    app = FastAPI(title=f"visiontune serve: {model.path.name}", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description=f"Image classification with {model.arch} ({len(classes)} classes). The upload "
                              f"page is at /; POST images to /predict.")
    app.state.engine, app.state.config, app.state.model = engine, cfg, model

    def error(e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), e.status, headers=e.headers)

    # ------------------------------------------------------------------ errors: always {"error", "detail"}
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error(e)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge):
        return error(ApiError(413, "too_large", too_large_message(cfg.max_bytes, "it passed the limit while "
                                                                                 "arriving")))

    @app.exception_handler(BodyTimeout)
    async def _timeout(request: Request, e: BodyTimeout):
        return error(ApiError(408, "body_timeout", f"The request body did not arrive within {cfg.body_timeout_s:g} "
                                                   f"seconds. Send it again on a faster connection."))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, e: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        detail = {404: f"No endpoint at {request.url.path[:200]}. The endpoints are /, /predict, /health, "
                       f"/ready, /info, /metrics and /openapi.json.",
                  405: f"{request.method} is not allowed on {request.url.path[:200]}."}.get(e.status_code, str(e.detail))
        return JSONResponse({"error": codes.get(e.status_code, "http_error"), "detail": detail}, e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg')}"
                 for err in e.errors()]
        return JSONResponse({"error": "invalid_request", "detail": "; ".join(parts)[:500]}, 422)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, e: ClientDisconnect):  # nobody is left to read it; counted, not logged
        return error(ApiError(400, "client_disconnected", "The client went away before its body arrived."))

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):  # Starlette re-raises it afterwards: uvicorn logs the traceback
        return JSONResponse({"error": "internal_error", "detail": f"The server failed on this request "
                             f"({type(e).__name__}); it keeps running. The log has the details."}, 500)

    # ------------------------------------------------------------------ endpoints
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE, headers=PAGE_HEADERS)

    @app.get("/health", summary="Alive (the process answers)")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="Model loaded and warmed up", responses={503: {"model": Error}})
    async def ready():
        if engine.error is not None:
            return error(ApiError(503, "model_failed", f"The model could not be loaded: {engine.error}"))
        if engine.stopping:
            return error(ApiError(503, "stopping", "The server is shutting down."))
        if not engine.ready.is_set():
            return error(ApiError(503, "not_ready", "Loading the model and warming it up.", {"Retry-After": "1"}))
        return {"ready": True, "warmup_seconds": engine.warmup_seconds}

    @app.get("/info", summary="The model and the server's settings")
    async def info():
        return {**model.describe(), "visiontune": __version__, **engine.facts, "ready": engine.ready.is_set(),
                "tta": {"n": TTA_N, "beta": TTA_BETA, "scale": TTA_SCALE} if cfg.tta else None,
                "settings": cfg.public()}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/predict", summary="Classify one or more images", openapi_extra={"requestBody": PREDICT_BODY},
              responses={200: {"model": Prediction | Predictions,
                               "description": "One image: a prediction. Several: {\"predictions\": [...]} in order, "
                                              "a file that failed holding its error and status."},
                         **ERRORS})
    async def predict(request: Request, top_k: int | None = Query(None, ge=1, description="Classes to list "
                                                                  "(default: the server's --top-k).")):
        if not engine.ready.is_set() or engine.stopping:
            raise not_ready()
        k = min(top_k or cfg.top_k, len(classes))
        ticket = engine.admit(1)  # before a byte of the body is read
        if ticket is None:
            raise overloaded()
        try:
            uploads = await read_uploads(request, cfg.max_files)
            if len(uploads) > 1 and not ticket.grow(len(uploads) - 1):
                raise overloaded()
            work = asyncio.gather(*(predict_one(u, k, ticket) for u in uploads))
            results = await unless_client_leaves(request, work)
        finally:
            ticket.close()
        if len(uploads) == 1:
            status, body, headers = results[0]
            return JSONResponse(body, status, headers=headers)
        items = [body if status == 200 else {**body, "status": status} for status, body, _ in results]
        failed = [(status, body) for status, body, _ in results if status != 200]
        if len(failed) < len(results):
            return JSONResponse({"predictions": items})
        status, first = failed[0]
        return JSONResponse({"error": first["error"], "detail": f"None of the {len(results)} files could be "
                             f"predicted; the first: {first['detail']}", "predictions": items}, status)

    async def unless_client_leaves(request: Request, work):
        """`work`'s result; if the client disconnects first, its images still queued are cancelled (the worker
        skips them), so a crowd of clients that gave up does not keep the model busy."""
        work = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(disconnected(request.receive))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():
            work.cancel()
            metrics.images.inc("client_disconnected")
            raise ApiError(499, "client_disconnected", "The client went away before its answer was ready.")
        return work.result()

    def not_ready() -> ApiError:
        if engine.error is not None:
            return ApiError(503, "model_failed", f"The model could not be loaded: {engine.error}")
        if engine.stopping:
            return ApiError(503, "stopping", "The server is shutting down.", {"Retry-After": "1"})
        return ApiError(503, "not_ready", "The model is still loading; try again in a moment.", {"Retry-After": "1"})

    def overloaded() -> ApiError:
        metrics.images.inc("overloaded")
        return ApiError(503, "overloaded", f"The server is at its limit of {cfg.queue_size} images in progress "
                                           f"(--queue-size). Retry after the time in Retry-After.",
                        {"Retry-After": str(engine.retry_after())})

    async def predict_one(upload, k: int, ticket) -> tuple[int, dict, dict | None]:
        """(status, JSON body, headers) for one upload: decoded in the pool, then batched by the engine."""
        loop = asyncio.get_running_loop()
        named = {"file": upload.filename} if upload.filename is not None else {}
        try:
            t = loop.time()
            try:
                views = await loop.run_in_executor(pool, engine.spec.to_tensor, upload.data, upload.name,
                                                   cfg.max_pixels)
            except BaseException:
                ticket.dropped()  # not coming: the worker need not wait for it
                raise
            metrics.decode_seconds.observe(loop.time() - t)
            probs = await asyncio.wrap_future(engine.submit(views, ticket))
        except ApiError as e:
            metrics.images.inc(e.code)
            return e.status, {**named, **e.body()}, e.headers or None
        except Exception as e:  # noqa: BLE001 - one file's failure is its own answer, never the request's
            log.exception("visiontune serve: predicting %s failed", upload.name)
            metrics.images.inc("internal_error")
            return 500, {**named, "error": "internal_error", "detail": f"Predicting {upload.name} failed "
                         f"({type(e).__name__}); the server keeps running. The log has the details."}, None
        metrics.images.inc("ok")
        return 200, prediction(probs, classes, k, model.is_multi_label, model.thresh, upload.filename), None

    app.add_middleware(Guard, api_key=cfg.api_key, max_bytes=cfg.max_bytes, body_timeout_s=cfg.body_timeout_s,
                       metrics=metrics, on_request=engine.start)
    if cfg.cors:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "x-api-key", "content-type"], max_age=600)
    return app

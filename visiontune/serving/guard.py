"""The door of the server (a plain ASGI middleware): API key, body size and time limits, metrics per request.

It runs before any body byte is read: a wrong key is answered 401 and a declared Content-Length over
--max-bytes 413 at once; a body without a declared length is counted as it streams in and stops with
BodyTooLarge as soon as it passes the limit. Nothing here keeps the body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Callable

from .metrics import ServeMetrics

ENDPOINTS = frozenset({"/", "/health", "/ready", "/info", "/metrics", "/predict", "/openapi.json"})
OPEN_ENDPOINTS = frozenset({"/", "/health", "/ready", "/openapi.json"})  # the page asks for the key itself


class BodyTooLarge(Exception):
    """The request body passed --max-bytes while it was being received."""


class BodyTimeout(Exception):
    """The request body did not arrive within body_timeout_s."""


def json_body(status: int, error: str, detail: str) -> bytes:
    return json.dumps({"error": error, "detail": detail}).encode()


async def send_json(send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _route(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


class Guard:
    """ASGI middleware: `api_key` (None: open) checked in constant time on every endpoint but the page, the
    health checks and the schema; `max_bytes` per body; `body_timeout_s` to receive it; counts every answer."""

    def __init__(self, app, *, api_key: str | None, max_bytes: int, body_timeout_s: float, metrics: ServeMetrics,
                 on_request: Callable[[], None] = lambda: None):
        self.app, self.max_bytes, self.body_timeout_s, self.metrics = app, max_bytes, body_timeout_s, metrics
        self.on_request = on_request
        self._key = api_key.encode() if api_key else None

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """The key from `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared with hmac.compare_digest."""
        given = b""
        for name, value in headers:
            if name == b"x-api-key":
                given = value.strip()
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        return hmac.compare_digest(given, self._key)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.on_request()
        route = _route(scope)
        endpoint = route if route in ENDPOINTS else "other"
        status = [0]

        async def counted_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]}
            await send(message)

        t0 = time.perf_counter()
        try:
            headers = scope.get("headers", [])
            if self._key is not None and route not in OPEN_ENDPOINTS and not self.authorized(headers):
                await send_json(counted_send, 401, json_body(401, "unauthorized", "This server needs an API key: "
                                "send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'."),
                                {"WWW-Authenticate": 'Bearer realm="visiontune"'})
                return
            declared = next((v for k, v in headers if k == b"content-length"), None)
            if declared is not None:
                try:
                    length = int(declared)
                except ValueError:
                    await send_json(counted_send, 400, json_body(400, "bad_request", "Content-Length is not a number."))
                    return
                if length > self.max_bytes:
                    await send_json(counted_send, 413, json_body(413, "too_large", too_large_message(
                        self.max_bytes, f"the request declares {length:,} bytes")))
                    return
            await self.app(scope, self._limited(receive), counted_send)
        except BaseException:
            status[0] = status[0] or 500
            raise
        finally:
            self.metrics.requests.inc(endpoint, str(status[0] or 500))
            self.metrics.request_seconds.observe(time.perf_counter() - t0, endpoint)

    def _limited(self, receive):
        """`receive` that counts body bytes (BodyTooLarge past max_bytes) and gives the body body_timeout_s."""
        total, deadline, done = 0, None, False

        async def limited():
            nonlocal total, deadline, done
            if done:
                return await receive()
            if deadline is None:
                deadline = time.monotonic() + self.body_timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.001, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    raise BodyTooLarge(total)
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        return limited


def too_large_message(max_bytes: int, what: str) -> str:
    return (f"The request body is over the server's limit of {max_bytes:,} bytes ({what}). Send a smaller image "
            f"(the model sees small crops anyway), fewer files per request, or start the server with a larger "
            f"--max-bytes.")

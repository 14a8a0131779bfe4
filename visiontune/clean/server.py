"""The review page's local server (standard library only): 127.0.0.1, a random port, a random token.

Every request needs the token (in the URL for the page and pictures, in a header for decisions, which a
cross-site form cannot set); the Host header must name this server (DNS rebinding), and decisions from another
origin are refused. The API serves and decides only files the clean folder lists, named relative to the data
folder: an absolute path or `..` is refused before any file is opened. Pictures are re-encoded thumbnails,
never the raw bytes, so a file cannot be served as HTML.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from .._core.errors import VisiontuneError
from ..data.decode import ImageDecodeError, open_image
from ..runs.cleandir import CleanDir
from .cam import CamModel
from .journal import Journal, ReviewError, check_relative
from .page import render_page

if TYPE_CHECKING:
    from ..train.learner import Learner

THUMB = 320
MAX_BODY = 64 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ReviewServer:
    """Serves one clean folder's review page. `start()` runs it on a background thread (notebooks), `serve()`
    in the foreground until Ctrl-C (the CLI); `url` carries the token."""

    def __init__(self, clean: str | os.PathLike | CleanDir, host: str = "127.0.0.1", port: int = 0,
                 learn: "Learner | None" = None):
        self.clean = clean if isinstance(clean, CleanDir) else CleanDir.open(clean)
        record = self.clean.read()
        self.record = record
        self.data = Path(record["data"])
        self.journal = Journal(self.clean.journal, record["files"], record["classes"], record.get("multi_label", False))
        self.cam = CamModel(self.clean, learn)
        self.token = secrets.token_urlsafe(24)
        self.host = host
        handler = type("Handler", (_Handler,), {"review": self})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise VisiontuneError(f"Cannot start the review page on {host}:{port} ({e.strerror or e}). Pass another "
                                  f"--port, or 0 for a free one.") from None
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK

    def start(self) -> "ReviewServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self.httpd.serve_forever, name="visiontune-review", daemon=True)
            self._thread.start()
        return self

    def serve(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread = None

    # ------------------------------------------------------------------ what the API does
    def state(self) -> dict[str, Any]:
        current, order, skipped = self.journal.read()
        issues = [{"i": i, **{k: r.get(k) for k in ("kind", "file", "given_label", "suggested_label", "score",
                                                      "group", "split", "suggested_prob", "self_confidence", "reason")}}
                  for i, r in enumerate(self.record["issues"])]
        cursor = None
        for d in reversed(order):
            if d.index is not None and d.index < len(issues) and issues[d.index]["file"] == d.file:
                cursor = {"index": d.index}
                break
        applied = None
        if self.clean.applied.is_file():
            try:
                applied = json.loads(self.clean.applied.read_text()).get("state")
            except (OSError, ValueError):
                applied = "unreadable"
        return {"dataset": self.record.get("dataset", self.data.name), "data": str(self.data),
                "folder": str(self.clean.path), "classes": self.record["classes"],
                "multi_label": self.record.get("multi_label", False), "issues": issues,
                "decisions": {f: d.to_dict() for f, d in current.items()}, "cursor": cursor,
                "skipped_lines": skipped, "applied": applied if applied in ("applying", "applied") else None,
                "cam": self.cam.available}

    def listed_file(self, file: Any) -> Path:
        """The path of a file the clean folder lists, inside the data folder; ReviewError otherwise."""
        file = check_relative(file)
        if file not in self.record["files"]:
            raise ReviewError(f"{file!r} is not one of the files this clean folder lists.")
        path = self.data / file
        if not os.path.abspath(path).startswith(os.path.abspath(self.data) + os.sep):
            raise ReviewError(f"{file!r} is outside the data folder.")
        return path

    def thumbnail(self, file: Any) -> bytes:
        path = self.listed_file(file)
        try:
            im = open_image(path, min_size=THUMB)
        except ImageDecodeError:
            im = Image.new("RGB", (THUMB, THUMB * 3 // 4), (200, 200, 200))  # undecodable: a grey card
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    review: ReviewServer
    server_version = "visiontune-review"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (quiet: the terminal shows the URL only)
        return

    # ------------------------------------------------------------------ checks
    def _token_ok(self, query: dict) -> bool:
        given = self.headers.get("X-Visiontune-Token") or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.review.token.encode())

    def _host_ok(self) -> bool:
        if not self.review.loopback:
            return True
        host = (self.headers.get("Host") or "").lower()
        return host in {f"{h}:{self.review.port}" for h in ("127.0.0.1", "localhost", "[::1]")}

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _guard(self) -> dict | None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this page answers only at 127.0.0.1 or localhost")
            return None
        if not self._token_ok(query):
            self._error(HTTPStatus.FORBIDDEN, "missing or wrong token: open the URL that `visiontune clean` printed")
            return None
        return query

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802
        query = self._guard()
        if query is None:
            return
        route = urlsplit(self.path).path
        one = lambda k: (query.get(k) or [None])[0]  # noqa: E731
        try:
            if route == "/":
                nonce = secrets.token_urlsafe(16)
                csp = (f"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
                       f"connect-src 'self'; base-uri 'none'; form-action 'none'")
                self._send(200, render_page(nonce).encode(), "text/html; charset=utf-8",
                           {"Content-Security-Policy": csp})
            elif route == "/api/state":
                self._json(200, self.review.state())
            elif route == "/api/image":
                self._send(200, self.review.thumbnail(one("file")), "image/jpeg")
            elif route == "/api/cam":
                path = self.review.listed_file(one("file"))
                label = one("label")
                self._send(200, self.review.cam.png(path, label if label in self.review.record["classes"] else None),
                           "image/png")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {route}")
        except ReviewError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except (VisiontuneError, OSError) as e:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(e))

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        query = self._guard()
        if query is None:
            return
        if urlsplit(self.path).path != "/api/decide":
            self._error(HTTPStatus.NOT_FOUND, "decisions go to /api/decide")
            return
        if not self.headers.get("X-Visiontune-Token"):
            self._error(HTTPStatus.FORBIDDEN, "decisions need the token in the X-Visiontune-Token header")
            return
        origin = self.headers.get("Origin")
        if origin and self.review.loopback and origin not in {f"http://{h}:{self.review.port}"
                                                              for h in ("127.0.0.1", "localhost", "[::1]")}:
            self._error(HTTPStatus.FORBIDDEN, f"decisions from {origin} are refused")
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if not 0 < n <= MAX_BODY:
            self._error(HTTPStatus.BAD_REQUEST, "a decision is a small JSON object")
            return
        try:
            body = json.loads(self.rfile.read(n))
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object: {file, action, label, index}")
            return
        try:
            d = self.review.journal.append(body.get("file"), body.get("action"), body.get("label"), body.get("index"))
        except ReviewError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
            return
        except OSError as e:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"could not write the journal: {e}")
            return
        self._json(200, {"ok": True, "decision": d.to_dict()})

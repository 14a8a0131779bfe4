"""`visiontune serve`: a real uvicorn server on a free loopback port, real HTTP (httpx and raw sockets), a real
browser for the upload page. Answers are checked against `load_learner(...).predict` on the same files (both on
the CPU: a GPU's mixed precision would make them differ in the third decimal)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from conftest import COLORS, chrome_driver, chromium, color_image
from PIL import Image

import visiontune as vt

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

XSS = "<img src=x onerror=window.__xss=1>"  # a class folder name: class names are untrusted text
CLASSES = ("green", "red", XSS)
MAX_BYTES = 2_000_000


# ---------------------------------------------------------------------------- models and images
def _folder(root: Path, colors: dict[str, tuple], n_train: int = 6, n_valid: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for name, color in colors.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                color_image(rng, color).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A Lite0 model at size 32 on three colour classes, one of them named like an HTML injection."""
    root = _folder(tmp_path_factory.mktemp("serve-data") / "colors",
                   {"green": COLORS["green"], "red": COLORS["red"], XSS: COLORS["blue"]})
    data = vt.ImageData.from_folder(root, size=32, bs=8)
    assert data.classes == sorted(CLASSES)
    learn = vt.vision_learner(data)
    learn.fit_one_cycle(1)
    return learn.export(tmp_path_factory.mktemp("serve-model") / "model.vt")


@pytest.fixture(scope="module")
def reference(model):
    """The learner the server's answers must equal: load_learner on the same file."""
    return vt.load_learner(model, device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Good images of every common kind (PNG, big JPEG that decodes in draft mode, grayscale, RGBA, palette,
    16-bit, EXIF-rotated), and hostile ones."""
    d = tmp_path_factory.mktemp("serve-images")
    rng = np.random.default_rng(1)
    out = {}
    color_image(rng, COLORS["red"]).save(out.setdefault("red.png", d / "red.png"))
    color_image(rng, COLORS["green"], size=(400, 300)).save(out.setdefault("big.jpg", d / "big.jpg"), quality=90)
    color_image(rng, COLORS["blue"]).convert("L").save(out.setdefault("gray.png", d / "gray.png"))
    color_image(rng, COLORS["blue"]).convert("RGBA").save(out.setdefault("rgba.png", d / "rgba.png"))
    color_image(rng, COLORS["green"]).convert("P").save(out.setdefault("palette.gif", d / "palette.gif"))
    Image.fromarray((rng.random((30, 40)) * 65535).astype(np.uint16)).save(out.setdefault("deep.png", d / "deep.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    color_image(rng, COLORS["red"], size=(60, 30)).save(out.setdefault("exif.jpg", d / "exif.jpg"), exif=exif)
    # hostile
    full = io.BytesIO()
    color_image(rng, COLORS["red"], size=(200, 150)).save(full, "JPEG")
    (d / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (d / "text.jpg").write_text("this is a text file with an image's name\n")
    (d / "empty.png").write_bytes(b"")
    (d / "bomb.png").write_bytes(black_png(40_000, 40_000))  # 1.6e9 pixels in ~200 KB: over Pillow's own limit
    (d / "huge.png").write_bytes(black_png(10_000, 10_000))  # a real 10,000 x 10,000 image, over --max-pixels
    for name in ("truncated.jpg", "text.jpg", "empty.png", "bomb.png", "huge.png"):
        out[name] = d / name
    return out


GOOD = ("red.png", "big.jpg", "gray.png", "rgba.png", "palette.gif", "deep.png", "exif.jpg")


def black_png(w: int, h: int) -> bytes:
    """A valid 1-bit PNG of w x h black pixels, compressed as it streams (never held decompressed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z, row, parts = zlib.compressobj(9), b"\0" * (1 + (w + 7) // 8), []
    block = row * 1000
    for start in range(0, h, 1000):
        parts.append(z.compress(block if start + 1000 <= h else row * (h - start)))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def server(model):
    """The default server (no key, no CORS), in a thread; a short batching window so concurrent clients batch."""
    with vt.serve(model, port=0, background=True, device="cpu", max_wait_ms=50, max_bytes=MAX_BYTES, max_files=8) as s:
        yield s.wait_ready()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def post_files(client, names_paths, **kw):
    files = [("file", (name, Path(p).read_bytes(), "application/octet-stream")) for name, p in names_paths]
    return client.post("/predict", files=files, **kw)


def assert_matches(answer: dict, expected, classes) -> None:
    """The server's JSON for one image equals learn.predict's (label, index, probs) to 1e-5."""
    label, index, probs = expected
    assert answer["label"] == label and answer["index"] == index
    assert answer["probability"] == pytest.approx(float(probs[index]), abs=1e-5)
    assert len(answer["top_k"]) == len(classes)  # top-k 5 > 3 classes: every class, most probable first
    got = [t["probability"] for t in answer["top_k"]]
    assert got == sorted(got, reverse=True)
    for t in answer["top_k"]:
        assert t["probability"] == pytest.approx(float(probs[classes.index(t["label"])]), abs=1e-5)


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


# ---------------------------------------------------------------------------- answers
def test_answers_equal_load_learner_predict_for_every_kind_of_image(client, images, reference):
    classes = reference.data.classes
    for name in GOOD:
        r = post_files(client, [(name, images[name])])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["file"] == name and "labels" not in body  # single-label: no 'labels'
        assert_matches(body, reference.predict(images[name]), classes)
    raw = client.post("/predict", content=images["big.jpg"].read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200 and "file" not in raw.json()
    assert_matches(raw.json(), reference.predict(images["big.jpg"]), classes)


def test_several_files_in_one_request_keep_their_order(client, images, reference):
    order = ["exif.jpg", "red.png", "big.jpg", "red.png", "gray.png"]
    r = post_files(client, [(n, images[n]) for n in order])
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == order
    for name, p in zip(order, preds):
        assert_matches(p, reference.predict(images[name]), reference.data.classes)


def test_top_k_query_and_its_validation(client, images):
    r = post_files(client, [("red.png", images["red.png"])], params={"top_k": 2})
    assert r.status_code == 200 and len(r.json()["top_k"]) == 2
    bad = post_files(client, [("red.png", images["red.png"])], params={"top_k": 0})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_request" and "top_k" in bad.json()["detail"]


def test_concurrent_clients_get_their_own_answers_in_shared_batches(server, client, images, reference):
    names = list(GOOD) * 3
    expected = {n: reference.predict(images[n]) for n in GOOD}
    before = client.get("/metrics").text

    def one(name: str):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return name, post_files(c, [(name, images[name])])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, names))
    for name, r in results:
        assert r.status_code == 200
        assert_matches(r.json(), expected[name], reference.data.classes)
    after = client.get("/metrics").text
    batches = metric(after, "visiontune_batch_size_count") - metric(before, "visiontune_batch_size_count")
    singles = (metric(after, 'visiontune_batch_size_bucket{le="1"}')
               - metric(before, 'visiontune_batch_size_bucket{le="1"}'))
    images_run = metric(after, "visiontune_batch_size_sum") - metric(before, "visiontune_batch_size_sum")
    assert images_run == len(names)  # every image went through the model exactly once
    assert batches < len(names) and singles < batches  # some forward passes carried several clients' images


# ---------------------------------------------------------------------------- hostile input
def _raw(url: str, head: str, chunks, timeout: float = 10.0) -> tuple[int, dict, int]:
    """Send a request by hand: `head` then body `chunks` until the server answers. (status, JSON, bytes sent)."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
    sent, data = 0, b""
    try:
        sock.sendall(head.replace("HOST", f"{u.hostname}:{u.port}").encode())
        sock.setblocking(False)
        deadline = time.monotonic() + timeout
        for chunk in chunks:
            try:
                data += sock.recv(65536)
            except BlockingIOError:
                pass
            if data:
                break
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
            assert time.monotonic() < deadline, "no answer while the body was streaming"
        sock.setblocking(True)
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head_raw, _, body = data.partition(b"\r\n\r\n")
        lines = head_raw.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
        return int(lines[0].split()[1]), json.loads(body), sent
    finally:
        sock.close()


class SlowUpload:
    """A client that sends its headers and half of an image, then waits: the request is in flight (admitted,
    its body arriving) until `finish()` sends the rest and reads the answer."""

    def __init__(self, url: str, image: bytes):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        self.rest = image[len(image) // 2:]
        self.sock.sendall((f"POST /predict HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nContent-Type: image/png\r\n"
                           f"Content-Length: {len(image)}\r\n\r\n").encode() + image[: len(image) // 2])

    def finish(self) -> tuple[int, dict]:
        self.sock.sendall(self.rest)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        while len(body) < length:
            body += self.sock.recv(65536)
        self.sock.close()
        return int(head.split()[1]), json.loads(body)


def test_body_over_max_bytes_is_refused_before_it_is_read(server, client):
    # declared: 413 after the headers and 64 KB of the 50 MB announced (a server that read on would wait here)
    head = ("POST /predict HTTP/1.1\r\nHost: HOST\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {50_000_000}\r\n\r\n")
    status, body, sent = _raw(server.url, head, [b"\0" * 65536], timeout=5)
    assert status == 413 and body["error"] == "too_large" and "2,000,000 bytes" in body["detail"]
    assert "declares 50,000,000 bytes" in body["detail"]
    # streamed (chunked, no length): 413 once the bytes received pass the limit, long before the body ends
    head = "POST /predict HTTP/1.1\r\nHost: HOST\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b"\0" * 65536 + b"\r\n"
    status, body, sent = _raw(server.url, head, (chunk for _ in range(2000)))  # 131 MB if it were all sent
    assert status == 413 and body["error"] == "too_large"
    assert MAX_BYTES < sent < 20_000_000
    # an ordinary client that sends a too-large file reads the 413 too
    r = client.post("/predict", content=b"\xff\xd8\xff" + b"\0" * (MAX_BYTES + 10), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize("name, status, code, says", [
    ("bomb.png", 422, "too_many_pixels", "decompression bomb"),
    ("huge.png", 422, "too_many_pixels", "10000 x 10000 = 100,000,000 pixels is over the limit of 40,000,000"),
    ("truncated.jpg", 422, "truncated_image", "truncated"),
    ("text.jpg", 415, "not_an_image", "it looks like text"),
    ("empty.png", 400, "empty_file", "empty (0 bytes)"),
])
def test_hostile_file_gets_its_status_and_a_message_naming_it(client, images, name, status, code, says):
    t = time.perf_counter()
    r = post_files(client, [(name, images[name])])
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == code and r.json()["file"] == name
    assert name in r.json()["detail"] and says in r.json()["detail"]
    assert time.perf_counter() - t < 5  # refused from the header, not after decoding 1.6e9 pixels


def test_wrong_requests_get_json_errors_and_the_server_keeps_answering(client, images, reference):
    cases = [
        (dict(content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty_body"),
        (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
        (dict(json={"image": "cat.jpg"}), 415, "unsupported_media_type"),
        (dict(content=images["red.png"].read_bytes()), 415, "unsupported_media_type"),  # no Content-Type
        (dict(files=[("image", ("a.png", b"x", "image/png"))]), 400, "no_file"),
        (dict(data={"file": "cat.jpg"}, files=[("other", ("a.png", b"x", "image/png"))]), 400, "not_a_file"),
        (dict(files=[("file", (f"{i}.png", images["red.png"].read_bytes(), "image/png")) for i in range(9)]),
         413, "too_many_files"),
    ]
    for kwargs, status, code in cases:
        r = client.post("/predict", **kwargs)
        assert (r.status_code, r.json()["error"]) == (status, code), r.text
        assert len(r.json()["detail"]) > 20
    assert client.get("/predict").json()["error"] == "method_not_allowed"
    assert client.get("/nope").status_code == 404 and client.get("/nope").json()["error"] == "not_found"
    assert client.get("/docs").status_code == 404  # no docs page that would load its assets from a CDN
    # many files in one request, good and bad mixed: each gets its own status and message, in order
    mixed = ["red.png", "truncated.jpg", "text.jpg", "empty.png", "bomb.png", "huge.png", "gray.png"]
    r = post_files(client, [(n, images[n]) for n in mixed])
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == mixed
    assert [p.get("status", 200) for p in preds] == [200, 422, 415, 400, 422, 422, 200]
    assert_matches(preds[0], reference.predict(images["red.png"]), reference.data.classes)
    assert all(p["error"] and p["detail"] for p in preds[1:-1])
    only_bad = post_files(client, [(n, images[n]) for n in ("text.jpg", "bomb.png")])
    assert only_bad.status_code == 415 and only_bad.json()["error"] == "not_an_image"
    assert [p["status"] for p in only_bad.json()["predictions"]] == [415, 422]
    assert client.get("/health").status_code == 200 and client.get("/ready").json()["ready"] is True
    assert post_files(client, [("red.png", images["red.png"])]).status_code == 200
    m = client.get("/metrics").text  # every refused or failed request gave its room back: nothing leaks
    assert metric(m, "visiontune_admitted_images") == 0 and metric(m, "visiontune_queue_depth") == 0


def test_full_queue_answers_503_with_retry_after_and_a_slow_body_408(model, images):
    # room for one image, held by a client whose body is still arriving: the next request finds the server full
    with vt.serve(model, port=0, background=True, device="cpu", queue_size=1, max_files=1, body_timeout_s=1.5) as s, \
            httpx.Client(base_url=s.url, timeout=30) as c:
        s.wait_ready()
        slow = SlowUpload(s.url, images["red.png"].read_bytes())
        time.sleep(0.3)
        r = post_files(c, [("red.png", images["red.png"])])
        assert r.status_code == 503 and r.json()["error"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 1
        status, body = slow.finish()
        assert status == 200 and body["label"] in CLASSES
        assert post_files(c, [("red.png", images["red.png"])]).status_code == 200  # room again
        head = "POST /predict HTTP/1.1\r\nHost: HOST\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
        t = time.perf_counter()
        status, body, _ = _raw(s.url, head, [b"\x89PNG"])  # and then nothing
        assert status == 408 and body["error"] == "body_timeout" and 1.4 < time.perf_counter() - t < 5
        assert 'visiontune_images_total{outcome="overloaded"} 1\n' in c.get("/metrics").text
        assert post_files(c, [("red.png", images["red.png"])]).status_code == 200  # the slot came back


def test_a_lone_request_does_not_wait_for_a_batch_to_fill(model, images):
    with vt.serve(model, port=0, background=True, device="cpu", max_wait_ms=2000) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        s.wait_ready()
        post_files(c, [("red.png", images["red.png"])])
        t = time.perf_counter()
        assert post_files(c, [("red.png", images["red.png"])]).status_code == 200
        assert time.perf_counter() - t < 1.8  # nothing else was on its way: no 2 s wait for company


def test_requests_whose_clients_left_are_not_computed(model, images):
    """Clients that hang up while their images wait for the model free the model: those images are skipped."""
    png = images["big.jpg"].read_bytes()
    n = 32
    with vt.serve(model, port=0, background=True, device="cpu", max_batch=1) as s, \
            httpx.Client(base_url=s.url, timeout=30) as c:
        s.wait_ready()
        u = urlparse(s.url)
        socks = [socket.create_connection((u.hostname, u.port)) for _ in range(n)]
        for sock in socks:
            sock.sendall((f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                          f"Content-Length: {len(png)}\r\n\r\n").encode() + png)
        time.sleep(0.05)
        for sock in socks:
            sock.close()  # every client gives up while most images still wait in the queue
        deadline = time.monotonic() + 30
        while metric(m := c.get("/metrics").text, "visiontune_admitted_images") > 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        computed = metric(m, "visiontune_batch_size_sum")
        left = metric(m, 'visiontune_images_total{outcome="client_disconnected"}')
        assert left >= 1 and computed + left >= n and computed < n
        assert post_files(c, [("red.png", images["red.png"])]).status_code == 200


# ---------------------------------------------------------------------------- endpoints and security
def test_info_health_metrics_and_schema(client, model, reference):
    info = client.get("/info").json()
    assert info["classes"] == list(reference.data.classes) and info["arch"] == "efficientnet_lite0"
    assert info["size"] == 32 and info["threshold"] == 0.5 and info["is_multi_label"] is False
    assert info["visiontune"] == vt.__version__ and info["backend"] == "torch"
    assert info["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert info["model_file"] == "model.vt" and str(model.parent) not in json.dumps(info)  # no paths
    assert "api_key" not in info["settings"]
    from visiontune.serving.config import available_cpus

    assert info["threads"] == max(1, min(torch.get_num_threads(), available_cpus() - 1)) and info["decode_threads"] >= 1
    assert client.get("/health").json() == {"status": "ok"}
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain; version=0.0.4")
    for family in ("visiontune_requests_total", "visiontune_batch_size", "visiontune_queue_wait_seconds",
                   "visiontune_model_latency_seconds"):
        assert f"# TYPE {family} " in m.text
    assert re.search(r'^visiontune_requests_total\{endpoint="/info",status="200"\} [1-9]', m.text, re.M)
    assert metric(m.text, "visiontune_ready") == 1
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*"} <= set(body)
    assert {"413", "415", "422", "503"} <= set(schema["paths"]["/predict"]["post"]["responses"])


def test_cors_is_off_by_default(client):
    r = client.get("/info", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    pre = client.options("/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_api_key_is_required_when_set_and_cors_when_asked(model, images):
    with vt.serve(model, port=0, background=True, device="cpu", api_key="s3cret-key", cors=("https://app.example",)) as s, \
            httpx.Client(base_url=s.url, timeout=30) as c:
        s.wait_ready()
        red = [("red.png", images["red.png"])]
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer s3cret-ke"}, {"Authorization": "s3cret-key"}):
            r = post_files(c, red, headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert post_files(c, red, headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert post_files(c, red, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.get("/info").status_code == 401 and c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200  # the page asks for the key
        # a body is refused on the key before it is read: 401, not 413
        assert c.post("/predict", content=b"\0" * (11 << 20), headers={"Content-Type": "image/png"}).status_code == 401
        ok = c.get("/info", headers={"Origin": "https://app.example", "X-API-Key": "s3cret-key"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        pre = c.options("/predict", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "x-api-key"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_multi_label_model_with_tta_answers_labels_over_threshold(tmp_path, images):
    root = tmp_path / "planet"
    (root / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(3)
    rows = ["image,tags"]
    for i in range(12):
        tags = [["red"], ["green"], ["red", "green"]][i % 3]
        color_image(rng, COLORS[tags[0]]).save(root / "imgs" / f"{i}.png")
        rows.append(f"{i}.png,{' '.join(tags)}")
    (root / "labels.csv").write_text("\n".join(rows))
    data = vt.ImageData.from_csv(root, "labels.csv", folder="imgs", label_delim=" ", size=32, bs=8,
                                 augment="side_on", valid_pct=0.25)
    learn = vt.vision_learner(data)
    learn.thresh = 0.4
    path = learn.export(tmp_path / "multi.vt")
    loaded = vt.load_learner(path, device="cpu")
    with vt.serve(path, port=0, background=True, device="cpu", tta=True) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        s.wait_ready()
        assert c.get("/info").json()["tta"] == {"n": 4, "beta": 0.25, "scale": 1.1}
        for name in ("red.png", "big.jpg"):
            body = post_files(c, [(name, images[name])]).json()
            probs, _ = loaded.tta([images[name]])
            assert body["labels"] == [loaded.data.classes[i] for i in range(2) if probs[0, i] > 0.4]
            for t in body["top_k"]:
                assert t["probability"] == pytest.approx(float(probs[0, loaded.data.classes.index(t["label"])]), abs=1e-5)


def test_app_mounted_inside_another_app_serves_under_its_prefix(model, images, reference):
    """vt.serving.app in someone else's FastAPI app: no lifespan of its own, so its first request starts the model."""
    import uvicorn
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/vision", vt.serving.app(model, device="cpu"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(outer, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/vision", timeout=30) as c:
            deadline = time.monotonic() + 60
            while c.get("/ready").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            r = post_files(c, [("red.png", images["red.png"])])
            assert r.status_code == 200
            assert_matches(r.json(), reference.predict(images["red.png"]), reference.data.classes)
            assert 'fetch("predict"' in c.get("/").text  # the page calls relative URLs: it works under a prefix
            assert 'endpoint="/predict",status="200"' in c.get("/metrics").text
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
def test_onnx_backend_matches_torch(model, images, reference):
    pytest.importorskip("onnxruntime")
    with vt.serve(model, port=0, background=True, backend="onnx", threads=2) as s, \
            httpx.Client(base_url=s.url, timeout=30) as c:
        s.wait_ready()
        info = c.get("/info").json()
        assert info["backend"] == "onnx" and info["onnx_max_abs_diff"] < 1e-4
        names = ["red.png", "big.jpg", "gray.png"]
        preds = post_files(c, [(n, images[n]) for n in names]).json()["predictions"]
        for name, p in zip(names, preds):
            _, _, probs = reference.predict(images[name])
            for t in p["top_k"]:
                assert abs(t["probability"] - float(probs[reference.data.classes.index(t["label"])])) < 1e-4
    cached = list((Path(os.environ["VISIONTUNE_HOME"]) / "serve").glob("*.onnx"))
    assert len(cached) == 1  # exported once into the cache, reused by the next start


# ---------------------------------------------------------------------------- the command
def _read_lines(stream, out: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)


@pytest.mark.slow
def test_cli_serves_prints_its_url_and_sigterm_finishes_in_flight_then_exits_0(model, images, reference):
    proc = subprocess.Popen([sys.executable, "-m", "visiontune", "serve", str(model), "--port", "0",
                             "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    url, deadline, seen = None, time.monotonic() + 90, []
    try:
        while url is None:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", seen[-1])
            url = m.group(1) if m else None
        with httpx.Client(base_url=url, timeout=30) as c:
            while c.get("/ready").status_code != 200:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
            slow = SlowUpload(url, images["red.png"].read_bytes())  # in flight: half its body sent
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            status, body = slow.finish()
            assert status == 200
            assert_matches(body, reference.predict(images["red.png"]), reference.data.classes)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    while not lines.empty():
        seen.append(lines.get())
    stderr = proc.stderr.read()
    assert any("stopped (SIGTERM)" in line for line in seen), seen
    assert "Traceback" not in stderr, stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)


def test_cli_refuses_bad_options_with_one_clear_message(model, tmp_path, capsys):
    from visiontune.cli import main

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [
        ([str(tmp_path / "missing.vt")], "No model file at"),
        ([str(model), "--max-bytes", "10XB"], "max_bytes must be a size like 10MB"),
        ([str(model), "--max-pixels", "0"], "max_pixels must be a count like 40M"),
        ([str(model), "--backend", "tensorflow"], "backend must be 'torch' or 'onnx'"),
        ([str(model), "--port", str(busy.getsockname()[1])], "already in use"),
        ([str(model), "--cors", "example.com"], "an origin like https://example.com"),
        ([str(model), "--max-files", "500"], "max_files (500) cannot be more than queue_size"),
    ]
    try:
        for args, message in cases:
            with pytest.raises(SystemExit) as e:
                main(["serve", *args])
            err = capsys.readouterr().err
            assert e.value.code == 1 and message in err and "Traceback" not in err, (args, err)
    finally:
        busy.close()


def test_missing_serve_extra_is_named(model, monkeypatch):
    from visiontune.serving.config import require_serve_extra

    monkeypatch.setitem(sys.modules, "fastapi", None)  # what an install without the extra looks like
    with pytest.raises(vt.ConfigError, match=r'pip install "visiontune\[serve\]"'):
        require_serve_extra()
    with pytest.raises(vt.ConfigError, match="fastapi"):
        vt.serving.app(model)


def test_import_visiontune_does_not_import_the_server():
    code = ("import sys, visiontune as vt; assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules; "
            "assert callable(vt.serve) and callable(vt.serving.app); assert 'fastapi' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- the upload page
def test_upload_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http" not in r.text and " src=" not in r.text and " href=" not in r.text  # no external asset
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe-inline" not in csp


@pytest.mark.slow
@pytest.mark.browser
def test_upload_page_in_headless_chromium_shows_labels_as_text(server, images, reference, tmp_path):
    if chromium() is None:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="the selenium package drives Chromium (pip install visiontune[dev])")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome_driver(tmp_path / "chromium-profile")
    try:
        driver.get(server.url + "/")
        WebDriverWait(driver, 20).until(lambda d: "efficientnet_lite0" in d.find_element(By.ID, "model").text)
        files = [images["red.png"], images["gray.png"], images["text.jpg"]]
        driver.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "status").text == "3 of 3 predicted")
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
        assert len(cards) == 3
        assert [c.find_element(By.CSS_SELECTOR, ".name").text for c in cards] == [f.name for f in files]  # in order
        by_name = {c.find_element(By.CSS_SELECTOR, ".name").text: c for c in cards}
        for f in files[:2]:
            card = by_name[f.name]
            label, _, _ = reference.predict(f)
            assert card.find_element(By.CSS_SELECTOR, ".label").text == label
            bars = [b.text for b in card.find_elements(By.CSS_SELECTOR, ".bar .text")]
            assert sorted(bars) == sorted(CLASSES)  # the hostile class name, shown as the text it is
        assert "not an image" in by_name["text.jpg"].find_element(By.CSS_SELECTOR, ".error").text
        # dropping a photo on the page works like choosing it (a PNG drawn in the page, dropped as a File)
        driver.execute_async_script("""
            const done = arguments[arguments.length - 1], c = document.createElement("canvas");
            c.width = 40; c.height = 32;
            const g = c.getContext("2d"); g.fillStyle = "rgb(200, 40, 40)"; g.fillRect(0, 0, 40, 32);
            c.toBlob((blob) => {
              const dt = new DataTransfer();
              dt.items.add(new File([blob], "dropped.png", {type: "image/png"}));
              document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
              done();
            }, "image/png");""")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "status").text == "4 of 4 predicted")
        dropped = driver.find_element(By.CSS_SELECTOR, "#results .card")  # the newest batch comes first
        assert dropped.find_element(By.CSS_SELECTOR, ".name").text == "dropped.png"
        assert dropped.find_element(By.CSS_SELECTOR, ".label").text in CLASSES
        # nothing from a class name became markup or ran: the only images are the four thumbnails
        assert driver.execute_script("return window.__xss === undefined")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#results img")) == 4
        assert driver.execute_script("return document.querySelectorAll('#results .bar img').length") == 0
    finally:
        driver.quit()

#!/usr/bin/env python3
"""`visiontune serve` under load, on loopback: throughput and latency with micro-batching on and off, the bare
in-process batched loop it is compared with, peak memory, and memory after a soak of good and hostile uploads.

    python bench/serve.py [--out DIR] [--model model.vt] [--rounds 3] [--seconds 8] [--clients 1,8,32]
                          [--soak 5000] [--soak-seconds 300] [--threads N] [--also-threads N]
                          [--bare-passes 2] [--wait-quiet 0]

Data: dogscats photos from /work/shared/data/dogscats (laid out once under OUT/dogscats by
/work/shared/bench/make_dogscats.py: 80 train + 40 valid photos per class and 60 test photos, copies).
Without --model, a quick model is trained at size 224 on them (embedded Lite0, 4 epochs of the head on
precomputed activations) and exported to OUT/model.vt. The photos served are the 80 valid + 60 test ones.

Servers run side by side as `python -m visiontune serve` subprocesses: "batched" (--max-batch 32
--max-wait-ms 10, the defaults) and "unbatched" (--max-batch 1), both with the default model threads; and
optionally more: `--also-threads N` adds one batched with `--threads N`, `--also-passive` that one again with
OMP_WAIT_POLICY=PASSIVE, `--variant NAME=ARGS` any other (e.g. `--variant 'batched_mb8=--max-batch 8'`).
In each round, for each client count, each server gets --seconds of closed-loop load (every client sends its
next photo as soon as it has its answer; keep-alive connections; multipart uploads of the JPEG files as they
are; the clients run on the same machine); the order of the servers reverses every round, and the bare loop
runs once per round: `TorchBackend` (the server's own forward: normalize + model under inference_mode, with
this process's threads) over the same photos, decoded beforehand exactly as the server decodes them, in
batches of 32 (and of 1: how much batching can gain at all on this CPU). Figures are medians over rounds, of
all rounds and of the quiet ones apart; the CPU used by other processes during each measurement is recorded
(the machine may be shared).

Soak: --soak requests (or --soak-seconds, whichever ends first) from 8 clients against the batched server,
mixing good photos (single and several per request) with hostile uploads (declared-oversize body, truncated
JPEG, text named .jpg, decompression-bomb PNG, 10,000 x 10,000 PNG, empty body, wrong content type, too
many files); RSS is sampled as it goes. Loopback only; every phase is bounded in requests and time.

Prints ONE JSON line (also written to OUT/serve-<date>.json); progress goes to stderr.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # _machine.py, and this checkout's visiontune
from _machine import _busy_jiffies, _own_seconds, machine_info, wait_for_quiet  # noqa: E402

SHARED = Path("/work/shared")


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data and model
def lay_out_data(out: Path) -> Path:
    data = out / "dogscats"
    if not (data / "valid").is_dir():
        subprocess.run([sys.executable, str(SHARED / "bench" / "make_dogscats.py"), str(data),
                        "--train-per-class", "80", "--valid-per-class", "40", "--test", "60"], check=True)
    return data


def train_model(data: Path, out: Path) -> tuple[Path, dict]:
    import visiontune as vt

    t = time.perf_counter()
    d = vt.ImageData.from_folder(data, size=224, bs=32)
    learn = vt.vision_learner(d, precompute=True)
    learn.fit_one_cycle(4, 1e-2)
    info = {"train_s": round(time.perf_counter() - t, 1), **{k: round(v, 4) for k, v in learn.validate().items()}}
    log(f"trained in {info['train_s']} s: {info}")
    return learn.export(out / "model.vt"), info


# ----------------------------------------------------------------------------- processes
def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (and its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


STARTED: list["Server"] = []  # stopped at exit, however the bench ends


class Server:
    """`python -m visiontune serve MODEL --port 0 ARGS` in a subprocess; `url` from the line it prints."""

    def __init__(self, name: str, model: Path, args: list[str], env: dict | None = None):
        self.name = name
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "visiontune", "serve", str(model), "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        STARTED.append(self)
        self.url = None
        for line in self.proc.stdout:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.url = f"http://127.0.0.1:{self.port}"
                break
        if self.url is None:
            raise SystemExit(f"{name}: the server did not start (exit {self.proc.wait()})")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        deadline = time.monotonic() + 300
        while request(self.port, "GET", "/ready")[0] != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"{name}: not ready")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        if own:
            conn.close()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# ----------------------------------------------------------------------------- load
def closed_loop(port: int, bodies: list[tuple[bytes, dict]], clients: int, seconds: float, max_requests: int,
                expect: tuple[int, ...] = (200,)) -> dict:
    """`clients` threads, each sending the next body as soon as it has the answer, for `seconds` (or until
    `max_requests` answers). Throughput counts answers within the window; latencies are per request."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds
    counter = iter(range(10**9))

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            n = next(counter)
            if n >= max_requests or time.perf_counter() >= stop_at:
                break
            body, headers = bodies[(n * 7 + i) % len(bodies)]
            t = time.perf_counter()
            try:
                status, _ = request(port, "POST", "/predict", body, headers, conn)
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                status = -1
            dt = time.perf_counter() - t
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status in expect:
                    lat.append(dt)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
    return {"requests": len(lat), "wall_s": round(wall, 2), "img_s": round(len(lat) / wall, 2),
            "p50_ms": round(q(0.50) * 1000, 1), "p99_ms": round(q(0.99) * 1000, 1), "statuses": statuses}


class Foreign:
    """CPU used by processes other than this one and the servers, as a fraction of all cores."""

    def __init__(self, pids: list[int]):
        self.pids = pids

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_jiffies(), _own_seconds()
        self.servers = sum(cpu_seconds(p) for p in self.pids)
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        busy = (_busy_jiffies() - self.busy) / os.sysconf("SC_CLK_TCK")
        own = _own_seconds() - self.own + sum(cpu_seconds(p) for p in self.pids) - self.servers
        self.foreign_cpu = round(max(0.0, busy - own) / (wall * (os.cpu_count() or 1)), 3)


class BareLoop:
    """The ceiling: the server's own forward (TorchBackend: normalize + model under inference_mode) over the
    photos decoded beforehand exactly as the server decodes uploads, in batches of `bs`, in this process."""

    def __init__(self, model: Path, photos: list[Path], bs: int = 32):
        import torch

        import visiontune as vt
        from visiontune._core.allocator import keep_freed_memory
        from visiontune.serving.backends import ModelFile, TorchBackend
        from visiontune.serving.config import ServeConfig
        from visiontune.serving.engine import Engine

        keep_freed_memory()  # as the server's process
        spec = Engine(ModelFile.open(model), ServeConfig()).spec
        self.x = torch.cat([spec.to_tensor(p.read_bytes(), p.name, 40_000_000) for p in photos])
        self.backend, self.bs = TorchBackend(vt.load_learner(model, device="cpu")), bs
        self.backend(self.x[:bs])  # warm-up, as the server's

    def img_s(self, passes: int = 3, bs: int | None = None, max_s: float = 10.0, threads: int | None = None) -> float:
        """Images/s over `passes` passes, or as many batches as fit in `max_s` (a busy machine), with this
        process's torch threads or `threads`."""
        import torch

        if threads is not None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return self.img_s(passes, bs, max_s)
            finally:
                torch.set_num_threads(before)
        bs = bs or self.bs
        t, n = time.perf_counter(), 0
        for _ in range(passes):
            for i in range(0, len(self.x), bs):
                n += len(self.backend(self.x[i:i + bs]))
                if time.perf_counter() - t > max_s:
                    return round(n / (time.perf_counter() - t), 2)
        return round(n / (time.perf_counter() - t), 2)


# ----------------------------------------------------------------------------- hostile uploads
def black_png(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z, row = zlib.compressobj(9), b"\0" * (1 + (w + 7) // 8)
    idat = b"".join(z.compress(row * min(1000, h - s)) for s in range(0, h, 1000)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def soak_mix(photos: list[bytes], hostile_only: bool = False) -> list[tuple[str, bytes, dict]]:
    """(kind, body, headers) for every kind of upload in the soak; good ones weighted up (none if hostile_only)."""
    truncated = photos[0][: len(photos[0]) // 2]
    bomb, huge = black_png(40_000, 40_000), black_png(10_000, 10_000)
    mix = []
    for i, p in enumerate(photos[:40]):
        mix.append(("good", *multipart([(f"{i}.jpg", p)])))
    for i in range(10):
        mix.append(("good_several", *multipart([(f"{i}a.jpg", photos[i]), (f"{i}b.jpg", photos[i + 1]),
                                                ("bad.jpg", truncated)])))
    hostile = [
        ("truncated", *multipart([("t.jpg", truncated)])),
        ("text_as_jpg", *multipart([("t.jpg", b"just some text\n" * 20)])),
        ("bomb_png", *multipart([("bomb.png", bomb)])),
        ("huge_png", *multipart([("huge.png", huge)])),
        ("empty_body", b"", {"Content-Type": "image/jpeg"}),
        ("wrong_type", b'{"image": "cat.jpg"}', {"Content-Type": "application/json"}),
        ("too_many_files", *multipart([(f"{i}.jpg", photos[0][:100]) for i in range(70)])),
        ("oversize", b"\xff\xd8\xff" + b"\0" * 10_500_000, {"Content-Type": "image/jpeg"}),
    ]
    return hostile if hostile_only else mix + hostile * 3


def soak(server: Server, photos: list[bytes], n: int, seconds: float, clients: int = 8,
         hostile_only: bool = False) -> dict:
    mix = soak_mix(photos, hostile_only)
    kinds: dict[str, dict[int, int]] = {}
    samples = [(0, rss_mb(server.pid))]
    lock = threading.Lock()
    done = [0]
    start = time.perf_counter()
    counter = iter(range(10**9))

    def client(i: int) -> None:
        rng = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        while True:
            k = next(counter)
            if k >= n or time.perf_counter() - start > seconds:
                break
            kind, body, headers = rng.choice(mix)
            try:
                status, _ = request(server.port, "POST", "/predict", body, headers, conn)
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                status = -1
            with lock:
                kinds.setdefault(kind, {}).setdefault(status, 0)
                kinds[kind][status] += 1
                done[0] += 1
                if done[0] % max(1, n // 10) == 0:
                    samples.append((done[0], rss_mb(server.pid)))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples.append((done[0], rss_mb(server.pid)))
    health = request(server.port, "GET", "/health")[0]
    return {"requests": done[0], "seconds": round(time.perf_counter() - start, 1), "by_kind_status": kinds,
            "rss_mb_samples": samples, "rss_start_mb": samples[0][1], "rss_end_mb": samples[-1][1],
            "rss_growth_mb": round(samples[-1][1] - samples[0][1], 1), "health_after": health}


# ----------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/vt-bench-serve"))
    p.add_argument("--model", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="load per measurement")
    p.add_argument("--max-requests", type=int, default=2000, help="cap per measurement")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--soak", type=int, default=5000)
    p.add_argument("--soak-seconds", type=float, default=300.0)
    p.add_argument("--soak-hostile-only", action="store_true", help="soak with hostile uploads only")
    p.add_argument("--threads", type=int, help="--threads for both servers (default: the library's)")
    p.add_argument("--also-threads", type=int, help="also run a server batched with --threads N")
    p.add_argument("--also-passive", action="store_true", help="and that one again with OMP_WAIT_POLICY=PASSIVE "
                   "(OpenMP threads sleep at barriers instead of spinning)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                   help="another server, e.g. 'batched_mb8=--max-batch 8' (repeatable)")
    p.add_argument("--bare-passes", type=int, default=2, help="passes over the photos per bare-loop measurement")
    p.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to this long for an idle machine first")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"command": " ".join(sys.argv), "date": datetime.now().isoformat(timespec="seconds"),
                    **machine_info()}
    if a.wait_quiet:
        result["waited_for_quiet_s"] = wait_for_quiet(a.wait_quiet)
    data = lay_out_data(a.out)
    model = a.model
    if model is None:
        model, result["model"] = train_model(data, a.out)
    photos = sorted((data / "valid").rglob("*.jpg")) + sorted((data / "test1").glob("*.jpg"))
    raw = [f.read_bytes() for f in photos]
    result["photos"] = {"n": len(photos), "mean_kb": round(sum(map(len, raw)) / len(raw) / 1024, 1)}
    bodies = [multipart([(f.name, b)]) for f, b in zip(photos, raw)]
    extra = ["--threads", str(a.threads)] if a.threads else []
    servers = {"batched": Server("batched", model, ["--max-batch", "32", "--max-wait-ms", "10", *extra])}
    if a.rounds:
        servers["unbatched"] = Server("unbatched", model, ["--max-batch", "1", *extra])
    if a.rounds and a.also_threads:
        args = ["--max-batch", "32", "--max-wait-ms", "10", "--threads", str(a.also_threads)]
        servers[f"batched_t{a.also_threads}"] = Server(f"batched_t{a.also_threads}", model, args)
        if a.also_passive:
            servers[f"batched_t{a.also_threads}_passive"] = Server(f"batched_t{a.also_threads}_passive", model, args,
                                                                   {"OMP_WAIT_POLICY": "PASSIVE"})
    for spec in a.variant if a.rounds else []:
        name, _, args = spec.partition("=")
        servers[name] = Server(name, model, args.split())
    log(f"servers ready: {', '.join(f'{k} {s.url}' for k, s in servers.items())}")
    out = a.out / f"serve-{datetime.now():%Y%m%d-%H%M%S}.json"

    def save(runs: dict) -> None:
        out.write_text(json.dumps({**result, "runs": runs, "partial": True}) + "\n")

    if a.rounds:
        result["summary"], result["runs"] = load_rounds(a, servers, bodies, BareLoop(model, photos), save)
        for name in servers:
            if name != "batched":
                servers[name].stop()
    if a.soak:
        log(f"soak: {a.soak} requests (at most {a.soak_seconds:g} s) against the batched server")
        with Foreign([servers["batched"].pid]) as f:
            result["soak"] = soak(servers["batched"], raw, a.soak, a.soak_seconds, hostile_only=a.soak_hostile_only)
        result["soak"]["foreign_cpu"] = f.foreign_cpu
        result["soak"]["peak_rss_mb"] = rss_mb(servers["batched"].pid, "VmHWM")
        log(json.dumps({k: v for k, v in result["soak"].items() if k != "by_kind_status"}))
    result["exit_codes_after_sigterm"] = {k: s.stop() if s.proc.poll() is None else s.proc.returncode
                                          for k, s in servers.items()}
    out.write_text(json.dumps(result) + "\n")
    print(json.dumps(result))
    log(f"wrote {out}")


def load_rounds(a, servers: dict, bodies: list, bare: BareLoop, save=lambda runs: None) -> tuple[dict, dict]:
    """Interleaved rounds: the bare loop, then each client count against every server (order alternating).
    `save(runs)` after each round, so a bench stopped early keeps what it measured."""
    clients = [int(c) for c in a.clients.split(",")]
    runs: dict = {}
    for r in range(a.rounds):
        for key, bs, threads in bare_loops():
            with Foreign([s.pid for s in servers.values()]) as f:
                runs.setdefault(f"{key}_img_s", []).append(bare.img_s(a.bare_passes, bs, threads=threads))
            runs.setdefault(f"{key}_foreign_cpu", [])
            runs[f"{key}_foreign_cpu"].append(f.foreign_cpu)
            log(f"round {r + 1}: {key} loop {runs[f'{key}_img_s'][-1]} img/s (foreign CPU {f.foreign_cpu})")
        order = list(servers) if r % 2 == 0 else list(reversed(servers))  # A B (C) then (C) B A
        for c in clients:
            for name in order:
                closed_loop(servers[name].port, bodies[:8], min(c, 8), 1.0, 50)  # a moment to settle
                with Foreign([s.pid for s in servers.values()]) as f:
                    m = closed_loop(servers[name].port, bodies, c, a.seconds, a.max_requests)
                m["foreign_cpu"] = f.foreign_cpu
                runs.setdefault(f"{name}_c{c}", []).append(m)
                log(f"round {r + 1}: {name:18s} {c:2d} clients: {m['img_s']:7.2f} img/s, p50 {m['p50_ms']} ms, "
                    f"p99 {m['p99_ms']} ms (foreign CPU {f.foreign_cpu}) {m['statuses']}")
        save(runs)
    rounds = range(a.rounds)
    quiet = [r for r in rounds if round_foreign(runs, r) < QUIET]
    summary = {"all_rounds": summarize(runs, list(rounds), servers, clients),
               f"quiet_rounds (foreign CPU < {QUIET} in every measurement)": summarize(runs, quiet, servers, clients),
               "quiet_rounds": [r + 1 for r in quiet],
               "peak_rss_mb": {k: rss_mb(s.pid, "VmHWM") for k, s in servers.items()}}
    log(json.dumps(summary, indent=1))
    return summary, runs


QUIET = 0.1


def bare_loops() -> list[tuple[str, int, int | None]]:
    """(name, batch size, threads) of the bare loops: with this process's threads (torch's default), and with the
    threads a server's model gets by default (one less than the CPUs), which is the fair ceiling for it."""
    import torch

    from visiontune.serving.config import ServeConfig

    n = ServeConfig().model_threads(torch.get_num_threads())
    return [("bare", 32, None), ("bare_bs1", 1, None), (f"bare_t{n}", 32, n), (f"bare_t{n}_bs8", 8, n),
            (f"bare_t{n}_bs1", 1, n)]


def round_foreign(runs: dict, r: int) -> float:
    """The most foreign CPU seen in any measurement of round r."""
    bare = [v[r] for k, v in runs.items() if k.endswith("_foreign_cpu")]
    return max(bare + [v[r]["foreign_cpu"] for v in runs.values() if isinstance(v[r], dict)])


def summarize(runs: dict, rounds: list[int], servers: dict, clients: list[int]) -> dict:
    """Medians over `rounds` of every figure, and of the per-round ratios (side by side in one round)."""
    if not rounds:
        return {}
    med = lambda xs: round(statistics.median(xs), 2)  # noqa: E731
    pick = lambda key: [runs[key][r] for r in rounds]  # noqa: E731
    out: dict = {"rounds": len(rounds)}
    for key, _, _ in bare_loops():
        out[f"{key}_img_s"] = med(pick(f"{key}_img_s"))
    same = bare_loops()[2][0]  # the bare loop with the server's default model threads
    for c in clients:
        for name in servers:
            out[f"{name}_c{c}"] = {k: med([m[k] for m in pick(f"{name}_c{c}")]) for k in ("img_s", "p50_ms", "p99_ms")}
        b = pick(f"batched_c{c}")
        if "unbatched" in servers:
            out[f"batched_over_unbatched_c{c}"] = med([x["img_s"] / u["img_s"] for x, u in zip(b, pick(f"unbatched_c{c}"))])
        out[f"batched_over_bare_c{c}"] = med([x["img_s"] / y for x, y in zip(b, pick("bare_img_s"))])
        out[f"batched_over_{same}_c{c}"] = med([x["img_s"] / y for x, y in zip(b, pick(f"{same}_img_s"))])
        for name in servers:
            if name not in ("batched", "unbatched"):
                out[f"{name}_over_batched_c{c}"] = med([t["img_s"] / x["img_s"] for t, x in zip(pick(f"{name}_c{c}"), b)])
    return out


def stop_all() -> None:
    for s in STARTED:
        if s.proc.poll() is None:
            s.proc.kill()  # a bench that is being stopped does not wait for a graceful drain


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    finally:
        stop_all()

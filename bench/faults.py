"""A seeded fault campaign: real `visiontune` processes on a small real data set, one fault per trial at a
random moment, and a check of what is left afterwards (issue 20).

    python bench/faults.py --trials 200 --seed 0            # the full campaign; prints the table
    python bench/faults.py --trials 20 --seed 0 --quick     # the short mode tests/test_faults.py runs

Per trial, one fault, its moment drawn from the seeded generator (a delay after the process starts, or the
pass count of a failpoint, VISIONTUNE_FAILPOINT=<point>:<n>), then the outcome:

- kill -9 of train (frozen and unfrozen phases, with and without --precompute), of resume, of the
  image-cache build, of the precompute build, of export; SIGTERM / SIGINT of train. Recovery is
  `visiontune resume RUN` (or a plain rerun when the process died before its run folder had a config).
  "exact" means: status finished, every epoch logged once, log.csv rows and results.json metrics equal to
  an uninterrupted run's (same seed, CPU, no workers: bit-identical), every file readable.
- disk full (a tmpfs mounted by the campaign; root only): during a checkpoint, the image cache, the
  precompute cache, export. Expected: one clear error naming the path (or, for the two caches, a notice and
  training from the images / from memory), nothing half-written, then a run with space succeeds.
- concurrency: two trains on one data + cache folder at once; a predict while a train builds the cache;
  two resumes of one run (the second must refuse; after kill -9 of the first, a resume must succeed).
- damage: a bit flip or a truncation at a random offset of an image-cache segment or index, an activation
  cache file, a checkpoint, a .vt export, config.yaml. Expected: detected (rebuilt, or refused with a
  message), never used silently.

Outcomes: exact (recovered exactly), diff (recovered with a difference), error (a clear error, and whatever
came next worked), corrupt (a file left unreadable, a damaged file used, a traceback, a data-folder change),
hung (a process past its timeout). The data folder is hashed before and after every trial.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DOGSCATS = Path("/work/shared/data/dogscats/train")
TIMEOUT = 600  # seconds any one visiontune process may take before the trial counts as hung
COMMON = ("--size", "32", "--bs", "4", "--seed", "0", "--num-workers", "0", "--device", "cpu")
CONFIGS = {  # name -> train flags; both have a frozen and an unfrozen phase (4 + 4 batches)
    "plain": (*COMMON, "--epochs", "1", "--unfreeze-epochs", "1"),
    "precompute": (*COMMON, "--epochs", "1", "--unfreeze-epochs", "1", "--precompute"),
}
OUTCOMES = ("exact", "diff", "error", "corrupt", "hung")


# ------------------------------------------------------------------------------------------- processes
class Hung(Exception):
    """A visiontune process ran past TIMEOUT."""


@dataclass
class Proc:
    rc: int
    out: str
    err: str
    seconds: float


def env_for(home: Path, failpoint: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "VISIONTUNE_HOME": str(home), "COLUMNS": "200"}
    for k in ("VISIONTUNE_FAILPOINT", "VISIONTUNE_QUIET", "VISIONTUNE_DEBUG"):
        env.pop(k, None)
    if failpoint:
        env["VISIONTUNE_FAILPOINT"] = failpoint
    return env


FORKS = None  # a vtfork.ForkServer unless --exec: processes forked from a server that imported visiontune once
LIVE: set = set()  # processes started and not yet reaped, killed when the campaign is stopped


def start(args, home: Path, failpoint: str | None = None):
    """Start `visiontune ARGS` (a fork of the server, or with --exec a fresh `python -m visiontune`)."""
    argv, env = [str(a) for a in args], env_for(home, failpoint)
    if FORKS is not None:
        p = FORKS.start(argv, env)
    else:
        p = subprocess.Popen([sys.executable, "-m", "visiontune", *argv], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    LIVE.add(p)
    return p


def finish(p, t0: float, timeout: float = TIMEOUT) -> Proc:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Hung(" ".join(map(str, p.args[2:5])))
    finally:
        LIVE.discard(p)
    return Proc(p.returncode, out, err, time.perf_counter() - t0)


def kill_live() -> None:
    for p in list(LIVE):
        with contextlib.suppress(Exception):
            p.kill()
            p.communicate(timeout=30)
    LIVE.clear()


def vt(args, home: Path, failpoint: str | None = None, kill_after: float | None = None,
       sig: int = signal.SIGKILL) -> Proc:
    """Run `visiontune ARGS`; with `kill_after`, send `sig` that many seconds after the start (if still alive)."""
    t0 = time.perf_counter()
    p = start(args, home, failpoint)
    if kill_after is not None:
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(sig)
    return finish(p, t0)


def clear_error(p: Proc) -> bool:
    """Exit status 1 with one `error:` message and no traceback."""
    return p.rc == 1 and "error:" in p.err and "Traceback" not in p.err + p.out


# ------------------------------------------------------------------------------------------- files
def tree_digest(folder: Path) -> str:
    """SHA-256 over every file's relative path, size and bytes (the data folder must never change)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(folder)}\0{p.stat().st_size}\0".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def make_data(root: Path, n_train: int = 4, n_valid: int = 2) -> Path:
    """root/train/{cats,dogs}/ and root/valid/...: real photos from dogscats when present, else noisy colours."""
    root.mkdir(parents=True)
    if DOGSCATS.is_dir():
        for c in ("cat", "dog"):
            names = [f"{c}.{i}.jpg" for i in range(n_train + n_valid)]
            for i, name in enumerate(names):
                d = root / ("train" if i < n_train else "valid") / f"{c}s"
                d.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(DOGSCATS / name, d / name)
        return root
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for c, rgb in (("reds", (200, 40, 40)), ("blues", (40, 60, 200))):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(np.array(rgb)[None, None] + rng.normal(0, 40, (32, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{c}_{i}.png")
    return root


def the_run(out: Path) -> Path | None:
    """The one run folder under `out/<dataset>/` that has a config.yaml (None before one exists)."""
    runs = [p for p in out.glob("*/*") if (p / "config.yaml").is_file()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def partial_files(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*.partial")]


def damage(path: Path, rng: random.Random) -> str:
    """Flip one bit at a random offset, or cut the file at a random length; returns what was done."""
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5 and len(data) > 1:
        cut = rng.randrange(0, len(data))
        path.write_bytes(bytes(data[:cut]))
        return f"truncated {path.name} to {cut} of {len(data)} bytes"
    off, bit = rng.randrange(len(data)), rng.randrange(8)
    data[off] ^= 1 << bit
    path.write_bytes(bytes(data))
    return f"flipped bit {bit} of byte {off} of {path.name} ({len(data)} bytes)"


@contextlib.contextmanager
def tmpfs(folder: Path, size: int):
    """A tmpfs of `size` bytes at `folder` (root only); `remount(size)` grows it in place."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True,
                   capture_output=True)

    def remount(new: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new}", str(folder)], check=True, capture_output=True)

    try:
        yield remount
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def can_mount() -> str | None:
    """None when tmpfs can be mounted here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", d], capture_output=True, text=True)
        if r.returncode:
            return r.stderr.strip() or "mount failed"
        subprocess.run(["umount", d], capture_output=True)
    return None


# ------------------------------------------------------------------------------------------- checks
@dataclass
class Reference:
    config: str
    run: Path
    rows: list[dict]
    metrics: dict
    seconds: float
    batches: int


def check_files(run: Path | None, *homes: Path) -> list[str]:
    """Every file visiontune reads back must be whole: run folder (config, status, results, log, events,
    checkpoints, weights, model.vt) and caches (image-cache segments and index, activation files)."""
    import yaml
    from safetensors.torch import load_file

    from visiontune.data.cache import ImageCache
    from visiontune.infer import load_learner
    from visiontune.runs.checkpoint import checkpoint_paths, read_checkpoint
    from visiontune.train.precompute import ActivationCache

    bad: list[str] = []
    if run is not None and run.exists():
        try:
            yaml.safe_load((run / "config.yaml").read_text())
            for name in ("status.json", "results.json"):
                if (run / name).exists():
                    json.loads((run / name).read_text())
            if (run / "log.csv").exists():
                keys = [(r["phase"], r["epoch"]) for r in log_rows(run)]
                if len(keys) != len(set(keys)):
                    bad.append(f"{run}/log.csv logs an epoch twice: {keys}")
            if (run / "events.jsonl").exists():
                steps = [json.loads(line)["step"] for line in (run / "events.jsonl").read_text().splitlines()]
                if steps != list(range(1, len(steps) + 1)):
                    bad.append(f"{run}/events.jsonl steps are not 1..n once each: {steps}")
        except (OSError, ValueError, KeyError, yaml.YAMLError) as e:
            bad.append(f"{run}: {e}")
        for ck in checkpoint_paths(run / "models"):
            try:
                read_checkpoint(ck)
            except Exception as e:  # noqa: BLE001
                bad.append(f"{ck}: {e}")
        for w in (run / "models").glob("*.safetensors"):
            if not w.name.startswith("checkpoint-"):
                try:
                    load_file(str(w))
                except Exception as e:  # noqa: BLE001
                    bad.append(f"{w}: {e}")
        if (run / "model.vt").exists():
            try:
                load_learner(run / "model.vt")
            except Exception as e:  # noqa: BLE001
                bad.append(f"{run}/model.vt: {e}")
    for home in homes:
        for index in home.glob("data/*/images/s*/index.json"):
            cache = ImageCache(index.parent.parent, int(index.parent.name[1:]))
            raw = json.loads(index.read_text())
            kept = cache.read_index()["segments"]
            lost = set(raw.get("segments", {})) - set(kept)
            if lost or "digest" not in raw:
                bad.append(f"{index}: segments damaged or missing: {sorted(lost)}")
        for meta in home.glob("data/*/activations/*.json"):
            info = json.loads(meta.read_text())
            if ActivationCache(meta.parent).read(meta.stem, info["desc"]) is None:
                bad.append(f"{meta}: activation cache marked complete but unreadable")
    return bad


def compare(run: Path | None, ref: Reference) -> tuple[str, str]:
    """('exact' | 'diff' | 'corrupt', detail) for a finished run against the uninterrupted reference."""
    if run is None or not (run / "results.json").exists():
        return "corrupt", "no finished run"
    status = json.loads((run / "status.json").read_text()).get("status")
    if status != "finished":
        return "corrupt", f"status {status}"
    rows = log_rows(run)
    if [(r["phase"], r["epoch"]) for r in rows] != [(r["phase"], r["epoch"]) for r in ref.rows]:
        return "corrupt", f"epochs logged {[(r['phase'], r['epoch']) for r in rows]}"
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    if metrics == ref.metrics and rows == ref.rows:
        return "exact", ""
    gap = max(abs(metrics.get(k, float("nan")) - v) for k, v in ref.metrics.items())
    return "diff", f"metrics differ by up to {gap:.3g}"


# ------------------------------------------------------------------------------------------- the campaign
@dataclass
class Trial:
    number: int
    kind: str
    fault: str = ""
    outcome: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Campaign:
    work: Path
    seed: int
    quick: bool = False
    refs: dict[str, Reference] = field(default_factory=dict)
    mount_problem: str | None = None
    stopped: bool = False

    def __post_init__(self) -> None:
        self.data = make_data(self.work / "data")
        self.data_digest = tree_digest(self.data)
        self.warm = self.work / "home-warm"  # caches of the reference runs, copied for trials that need them
        self.mount_problem = can_mount()
        self.configs = dict(CONFIGS)
        if self.quick:  # one reference; the frozen phase on cached features is the cheap one
            self.configs["plain"] = CONFIGS["precompute"]

    # ---------------------------------------------------------------- helpers
    def reference(self, config: str) -> Reference:
        if config not in self.refs:
            out = self.work / f"ref-{config}"
            p = vt(["train", self.data, *self.configs[config], "--out", out], self.warm)
            if p.rc != 0:
                raise SystemExit(f"the reference run {config} failed:\n{p.err[-3000:]}")
            run = the_run(out)
            events = (run / "events.jsonl").read_text().splitlines()
            metrics = json.loads((run / "results.json").read_text())["metrics"]
            # Again, warm (the first run also started the fork server and built the caches): its time is what
            # the random moments are drawn from, and its results must be the same bits.
            again = vt(["train", self.data, *self.configs[config], "--out", self.work / f"ref2-{config}"], self.warm)
            run2 = the_run(self.work / f"ref2-{config}")
            if again.rc != 0 or json.loads((run2 / "results.json").read_text())["metrics"] != metrics or \
                    log_rows(run2) != log_rows(run):
                raise SystemExit(f"two uninterrupted runs of {config} differ: nothing to compare a recovery with")
            self.refs[config] = Reference(config, run, log_rows(run), metrics, again.seconds, len(events))
        return self.refs[config]

    def export_seconds(self) -> float:
        """How long an uninterrupted `visiontune export` of the reference run takes (measured once)."""
        if not hasattr(self, "_export_seconds"):
            ref = self.reference("precompute")
            p = vt(["export", ref.run, "--out", self.work / "export-timing.vt"], self.warm)
            if p.rc != 0:
                raise SystemExit(f"export of the reference run failed:\n{p.err[-3000:]}")
            self._export_seconds = p.seconds
        return self._export_seconds

    def home(self, t: Trial, warm: bool) -> Path:
        home = self.work / f"t{t.number}" / "home"
        if warm:
            shutil.copytree(self.warm, home)
        else:
            home.mkdir(parents=True)
        return home

    def recover(self, out: Path, home: Path, config: str) -> tuple[Path | None, Proc]:
        """`visiontune resume RUN`, or a plain rerun when no run folder had been made."""
        run = the_run(out)
        if run is None:
            shutil.rmtree(out, ignore_errors=True)
            p = vt(["train", self.data, *self.configs[config], "--out", out], home)
            return the_run(out), p
        p = vt(["resume", run], home)
        return run, p

    def judge_recovery(self, t: Trial, out: Path, home: Path, config: str, first: Proc) -> None:
        if "Traceback" in first.err:
            t.outcome, t.detail = "corrupt", "traceback: " + first.err.strip().splitlines()[-1][:200]
            return
        bad = check_files(the_run(out), home)  # what the fault left, before anything repairs it
        run, p = self.recover(out, home, config) if first.rc != 0 else (the_run(out), first)
        if p.rc != 0:
            t.outcome, t.detail = "corrupt", f"recovery failed ({p.rc}): {p.err.strip()[-300:]}"
            return
        bad += check_files(run, home)
        t.outcome, t.detail = compare(run, self.reference(config))
        if bad:
            t.outcome, t.detail = "corrupt", "; ".join(bad)[:400]

    # ---------------------------------------------------------------- kill -9 and signals
    def kill_train(self, t: Trial, rng: random.Random, config: str, sig: int = signal.SIGKILL) -> None:
        ref = self.reference(config)
        home, out = self.home(t, warm=True), self.work / f"t{t.number}" / "runs"
        name = signal.Signals(sig).name
        at_batch = sig != signal.SIGKILL and rng.random() < 0.5
        if sig == signal.SIGKILL and rng.random() < 0.5:
            point = rng.choice(["batch", "batch", "checkpoint-partial", "checkpoint-written", "checkpoint-renamed"])
            n = rng.randint(1, ref.batches if point == "batch" else 4)  # 4 checkpoints: 2 epochs + 2 fit ends
            t.fault = f"kill -9 at failpoint {point}:{n}"
            first = vt(["train", self.data, *self.configs[config], "--out", out], home, failpoint=f"{point}:{n}")
        elif at_batch:  # the signal sent from inside a random training batch: certainly mid-epoch
            n = rng.randint(1, ref.batches)
            t.fault = f"{name} during training batch {n} of {ref.batches}"
            first = vt(["train", self.data, *self.configs[config], "--out", out], home,
                       failpoint=f"batch:{n}:{name}")
        else:
            delay = rng.uniform(0.15, 0.85) * ref.seconds
            t.fault = f"{name} after {delay:.1f}s"
            first = vt(["train", self.data, *self.configs[config], "--out", out], home, kill_after=delay, sig=sig)
        if first.rc == 0:
            t.fault += " (the run ended normally: the signal came after its last training batch)" if \
                "stopping at the end of this batch" in first.err else " (the run had finished)"
        elif sig != signal.SIGKILL:
            stopped = "stopped at phase" in first.err
            run = the_run(out)
            status = json.loads((run / "status.json").read_text()).get("status") if run and \
                (run / "status.json").exists() else None
            if stopped and status != "interrupted":
                t.outcome, t.detail = "corrupt", f"stopped at a batch end but status is {status}"
                return
            if at_batch and not stopped:
                t.outcome, t.detail = "corrupt", f"{name} inside a batch did not stop at its end: {first.err[-300:]}"
                return
            t.fault += " (stopped at the batch end, checkpoint saved)" if stopped else \
                " (outside the training loop: the process stopped at once, like kill -9)"
        self.judge_recovery(t, out, home, config, first)

    def kill_resume(self, t: Trial, rng: random.Random, config: str) -> None:
        ref = self.reference(config)
        home, out = self.home(t, warm=True), self.work / f"t{t.number}" / "runs"
        n = rng.randint(1, ref.batches // 2)
        vt(["train", self.data, *self.configs[config], "--out", out], home, failpoint=f"batch:{n}")
        run = the_run(out)
        delay = rng.uniform(0.2, 1.0) * ref.seconds
        t.fault = f"train killed at batch:{n}, then resume kill -9 after {delay:.1f}s"
        first = vt(["resume", run], home, kill_after=delay)
        self.judge_recovery(t, out, home, config, first)

    def kill_build(self, t: Trial, rng: random.Random, point: str) -> None:
        """kill -9 while the image cache (fresh cache folder) or the activation cache is being built."""
        config = "precompute" if point == "precompute" else "plain"
        self.reference(config)
        home, out = self.home(t, warm=point == "precompute"), self.work / f"t{t.number}" / "runs"
        if point == "precompute":
            for p in home.glob("data/*/activations"):
                shutil.rmtree(p)
        n = rng.randint(1, 3 if point == "precompute" else 12)  # batches of 8 / images
        t.fault = f"kill -9 at failpoint {point}:{n}"
        first = vt(["train", self.data, *self.configs[config], "--out", out], home, failpoint=f"{point}:{n}")
        self.judge_recovery(t, out, home, config, first)

    def kill_export(self, t: Trial, rng: random.Random) -> None:
        from visiontune.infer import load_learner

        ref = self.reference("precompute")
        run = self.work / f"t{t.number}" / "run"
        shutil.copytree(ref.run, run)
        home = self.home(t, warm=False)
        before = (run / "model.vt").read_bytes()
        if rng.random() < 0.5:
            point = rng.choice(["export-partial", "export-written", "export-renamed"])
            t.fault = f"kill -9 at failpoint {point}:1"
            first = vt(["export", run], home, failpoint=f"{point}:1")
        else:
            delay = rng.uniform(0.1, 0.9) * self.export_seconds()
            t.fault = f"kill -9 after {delay:.1f}s"
            first = vt(["export", run], home, kill_after=delay)
        try:
            load_learner(run / "model.vt")  # the old file or the new one, never half of one
        except Exception as e:  # noqa: BLE001
            t.outcome, t.detail = "corrupt", f"model.vt after the kill: {e}"
            return
        again = vt(["export", run], home) if first.rc != 0 else first
        left = partial_files(run)
        if again.rc != 0 or left:
            t.outcome, t.detail = "corrupt", f"export again: rc {again.rc}, partial files {left}"
            return
        load_learner(run / "model.vt")
        from safetensors.torch import load, load_file

        old, new = load(before), load_file(str(run / "model.vt"))
        same = old.keys() == new.keys() and all(old[k].equal(new[k]) for k in old)
        t.outcome, t.detail = ("exact", "same weights as before") if same else ("diff", "the weights changed")

    # ---------------------------------------------------------------- clean --apply
    def clean_setup(self) -> dict:
        """Once: a copy of the data with planted cross-class copies, duplicates and a leak, and the clean folder
        `visiontune clean` wrote for it (its issues list the files a journal may decide on)."""
        if not hasattr(self, "_clean"):
            base = self.work / "clean"
            pristine, data = base / "pristine", base / "data"
            shutil.copytree(self.data, pristine, copy_function=shutil.copy2)
            for src, dst in (("train/cats", "train/dogs"), ("train/dogs", "train/cats"), ("train/cats", "valid/cats"),
                             ("train/dogs", "train/dogs")):
                first = sorted((pristine / src).iterdir())[0]
                shutil.copy2(first, pristine / dst / f"copy-{first.name}")
            shutil.copytree(pristine, data, copy_function=shutil.copy2)
            p = vt(["clean", data, "--out", base / "runs", "--size", "32"], base / "home")
            if p.rc != 0:
                raise SystemExit(f"visiontune clean failed:\n{p.err[-3000:]}")
            folder = next((base / "runs").glob("*/clean-*"))
            shutil.copytree(folder, base / "clean-pristine")
            record = json.loads((folder / "issues.json").read_text())
            self._clean = {"base": base, "pristine": pristine, "data": data, "folder": folder, "record": record,
                           "digest": tree_digest(pristine)}
        return self._clean

    def kill_clean_apply(self, t: Trial, rng: random.Random) -> None:
        """kill -9 of `clean --apply` at a random move or moment. Then: every file whole in exactly one place;
        `clean --apply` again finishes, giving what an uninterrupted apply gives; `--undo` gives back the
        data folder byte for byte."""
        from visiontune.clean.journal import Journal

        c = self.clean_setup()
        data, folder, home = c["data"], c["folder"], c["base"] / "home"

        def reset() -> None:
            shutil.rmtree(data)
            shutil.copytree(c["pristine"], data, copy_function=shutil.copy2)
            shutil.rmtree(folder)
            shutil.copytree(c["base"] / "clean-pristine", folder)

        def contents() -> list[str]:
            return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for r in (data, folder / "trash")
                          if r.exists() for p in r.rglob("*") if p.is_file())

        def layout() -> str:
            return tree_digest(data) + tree_digest(folder / "trash") if (folder / "trash").exists() else tree_digest(data)

        def decide() -> int:
            record = c["record"]
            files = sorted(record["files"])
            picked = rng.sample(files, rng.randint(2, len(files)))
            j = Journal(folder / "journal.jsonl", record["files"], record["classes"])
            for f in picked:
                other = [k for k in record["classes"] if k != record["files"][f]["label"]]
                j.append(f, "delete") if rng.random() < 0.5 else j.append(f, "relabel", other[0])
            return len(picked)

        reset()
        trial_rng_state = rng.getstate()
        n = decide()
        before = contents()
        t0 = time.perf_counter()
        ref = vt(["clean", "--apply", folder, "--yes"], home)
        seconds = time.perf_counter() - t0
        if ref.rc != 0:
            t.outcome, t.detail = "corrupt", f"uninterrupted apply failed: {ref.err.strip()[-300:]}"
            return
        expected = layout()
        reset()
        rng.setstate(trial_rng_state)
        decide()
        if rng.random() < 0.5:
            k = rng.randint(1, n)
            t.fault = f"kill -9 at failpoint clean-move:{k} of {n} moves"
            first = vt(["clean", "--apply", folder, "--yes"], home, failpoint=f"clean-move:{k}")
        else:
            delay = rng.uniform(0.1, 0.9) * seconds
            t.fault = f"kill -9 after {delay:.1f}s ({n} moves)"
            first = vt(["clean", "--apply", folder, "--yes"], home, kill_after=delay)
        if first.rc == 0:
            t.fault += " (the apply had finished)"
        left = partial_files(data, folder) + [p for p in data.rglob(".*.partial")]
        if contents() != before or left:
            t.outcome, t.detail = "corrupt", f"after the kill: files lost or doubled, or partial files {left}"
            return
        state = json.loads((folder / "applied.json").read_text())["state"] if (folder / "applied.json").exists() \
            else None
        if state == "applied":  # killed after its last record (dropping cache entries): done; a new apply refuses
            again = vt(["clean", "--apply", folder, "--yes"], home)
            if not (clear_error(again) and "applied already" in again.err):
                t.outcome, t.detail = "corrupt", f"apply of an applied folder: rc {again.rc}: {again.err[-300:]}"
                return
            again.rc = 0
            if first.rc != 0:
                t.fault += " (after the apply had recorded its end)"
        elif first.rc != 0:
            again = vt(["clean", "--apply", folder, "--yes"], home)
        else:
            again = first
        if again.rc != 0 or layout() != expected:
            t.outcome, t.detail = "corrupt", f"apply again: rc {again.rc}, same as uninterrupted: " \
                f"{layout() == expected}: {again.err.strip()[-300:]}"
            return
        undo = vt(["clean", "--undo", folder], home)
        if undo.rc != 0 or tree_digest(data) != c["digest"]:
            t.outcome, t.detail = "corrupt", f"undo: rc {undo.rc}, data restored {tree_digest(data) == c['digest']}"
            return
        t.outcome, t.detail = "exact", "apply again finished it; undo restored the data folder byte for byte"

    # ---------------------------------------------------------------- concurrency
    def two_trains(self, t: Trial, rng: random.Random) -> None:
        config = rng.choice(list(CONFIGS))
        ref = self.reference(config)
        home = self.home(t, warm=False)  # both build the image cache at once
        outs = [self.work / f"t{t.number}" / f"runs{i}" for i in (1, 2)]
        gap = rng.uniform(0.0, 0.5) * ref.seconds
        t.fault = f"two train ({config}) on one data and cache folder, {gap:.1f}s apart"
        t0 = time.perf_counter()
        a = start(["train", self.data, *self.configs[config], "--out", outs[0]], home)
        time.sleep(gap)
        b = start(["train", self.data, *self.configs[config], "--out", outs[1]], home)
        procs = [finish(a, t0), finish(b, t0)]
        results = []
        for p, out in zip(procs, outs):
            if p.rc != 0:
                t.outcome, t.detail = "corrupt", f"a train failed: {p.err.strip()[-300:]}"
                return
            bad = check_files(the_run(out), home)
            if bad:
                t.outcome, t.detail = "corrupt", "; ".join(bad)[:400]
                return
            results.append(compare(the_run(out), self.reference(config)))
        worst = max(results, key=lambda r: OUTCOMES.index(r[0]))
        t.outcome, t.detail = worst

    def predict_during_build(self, t: Trial, rng: random.Random) -> None:
        ref = self.reference("plain")
        home = self.home(t, warm=False)
        out = self.work / f"t{t.number}" / "runs"
        csv_ref, csv_new = self.work / f"t{t.number}" / "ref.csv", self.work / f"t{t.number}" / "during.csv"
        vt(["predict", ref.run / "model.vt", self.data / "valid", "--csv", csv_ref], home)
        gap = rng.uniform(0.0, 0.6) * ref.seconds
        t.fault = f"predict {gap:.1f}s after a train started building the cache"
        t0 = time.perf_counter()
        a = start(["train", self.data, *self.configs["plain"], "--out", out], home)
        time.sleep(gap)
        p = vt(["predict", ref.run / "model.vt", self.data / "valid", "--csv", csv_new], home)
        trained = finish(a, t0)
        if p.rc != 0 or trained.rc != 0:
            t.outcome, t.detail = "corrupt", f"predict rc {p.rc}, train rc {trained.rc}: {(p.err + trained.err)[-300:]}"
            return
        bad = check_files(the_run(out), home)
        same = csv_ref.read_text() == csv_new.read_text()
        t.outcome, t.detail = ("corrupt", "; ".join(bad)[:400]) if bad else compare(the_run(out), ref)
        if not same and t.outcome != "corrupt":
            t.outcome, t.detail = "diff", "predictions differ from those without a concurrent train"

    def two_resumes(self, t: Trial, rng: random.Random) -> None:
        config = "plain"
        ref = self.reference(config)
        home, out = self.home(t, warm=True), self.work / f"t{t.number}" / "runs"
        n = rng.randint(1, ref.batches // 2)
        vt(["train", self.data, *self.configs[config], "--out", out], home, failpoint=f"batch:{n}")
        run = the_run(out)
        t0 = time.perf_counter()
        a = start(["resume", run], home)
        deadline = time.time() + 120
        while time.time() < deadline and a.poll() is None:  # wait until the first resume holds the lock
            if (run / ".lock").exists() and (run / ".lock").read_text().strip() == str(a.pid):
                break
            time.sleep(0.2)
        kill_first = rng.random() < 0.5
        t.fault = f"train killed at batch:{n}; two resumes at once" + ("; then kill -9 the first" if kill_first else "")
        b = vt(["resume", run], home)
        if b.rc == 0 and a.poll() is None:
            a.kill()
            t.outcome, t.detail = "corrupt", "the second resume ran while the first held the run"
            return
        refused = clear_error(b) and "another visiontune process" in b.err
        if a.poll() is None and not refused:
            a.kill()
            t.outcome, t.detail = "corrupt", f"second resume: rc {b.rc}: {b.err.strip()[-300:]}"
            return
        if kill_first and a.poll() is None:
            a.kill()
        first = finish(a, t0)
        if kill_first and first.rc != 0:
            c = vt(["resume", run], home)  # the lock died with its holder
            if c.rc != 0:
                t.outcome, t.detail = "corrupt", f"resume after the holder died: {c.err.strip()[-300:]}"
                return
        bad = check_files(run, home)
        t.outcome, t.detail = ("corrupt", "; ".join(bad)[:400]) if bad else compare(run, ref)
        if t.outcome == "exact" and refused:
            t.detail = "second resume refused with a clear message"

    # ---------------------------------------------------------------- damage (in this process, on real files)
    def damage_trial(self, t: Trial, rng: random.Random, target: str) -> None:
        from visiontune._core.errors import VisiontuneError
        from visiontune.data.cache import ImageCache
        from visiontune.infer import load_learner
        from visiontune.runs.checkpoint import latest_checkpoint
        from visiontune.train.precompute import ActivationCache

        ref = self.reference("precompute")
        home = self.home(t, warm=True)
        run = self.work / f"t{t.number}" / "run"
        shutil.copytree(ref.run, run)
        if target in ("segment", "index"):
            folder = next(home.glob("data/*/images/s*"))
            files = sorted(folder.glob("seg-*.bin")) if target == "segment" else [folder / "index.json"]
            path = rng.choice(files)
            t.fault = damage(path, rng)
            kept = ImageCache(folder.parent, int(folder.name[1:])).read_index()
            used = path.name in kept["segments"] if target == "segment" else bool(kept["segments"])
            t.outcome, t.detail = ("corrupt", f"damaged {path.name} accepted") if used else \
                ("exact", "detected; the images are decoded again")
            return
        if target == "activations":
            meta = rng.choice(sorted(home.glob("data/*/activations/*.json")))
            path = rng.choice([meta.with_suffix(".npy"), meta.with_name(meta.stem + ".idx.npy")])
            t.fault = damage(path, rng)
            info = json.loads(meta.read_text())
            hit = ActivationCache(meta.parent).read(meta.stem, info["desc"])
            t.outcome, t.detail = ("corrupt", "damaged activations read") if hit is not None else \
                ("exact", "detected; computed again")
            return
        if target == "checkpoint":
            cks = sorted((run / "models").glob("checkpoint-*.safetensors"))
            path = cks[-1]
            t.fault = damage(path, rng)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    ck = latest_checkpoint(run / "models")
                except VisiontuneError as e:
                    t.outcome, t.detail = "error", str(e)[:200]
                    return
            if ck is not None and ck.path == path:
                t.outcome, t.detail = "corrupt", "the damaged checkpoint was read"
            elif ck is not None and caught:
                t.outcome, t.detail = "exact", f"detected; fell back to {ck.path.name}"
            else:
                t.outcome, t.detail = "corrupt", "no fallback and no error"
            return
        if target == "model":
            path = run / "model.vt"
            t.fault = damage(path, rng)
            try:
                load_learner(path)
            except VisiontuneError as e:
                t.outcome, t.detail = "error", str(e)[:200]
                return
            t.outcome, t.detail = "corrupt", "a damaged model.vt loaded"
            return
        if target == "config":
            # a run interrupted after its first checkpoint, whose config.yaml is then damaged: resume must refuse
            out = self.work / f"t{t.number}" / "runs"
            vt(["train", self.data, *self.configs["precompute"], "--out", out], home, failpoint="checkpoint-renamed:1")
            irun = the_run(out)
            t.fault = damage(irun / "config.yaml", rng)
            p = vt(["resume", irun], home)
            if p.rc == 0:
                t.outcome, t.detail = "corrupt", "resumed with a damaged config.yaml"
            elif clear_error(p):
                t.outcome, t.detail = "error", p.err.strip().splitlines()[0][:200]
            else:
                t.outcome, t.detail = "corrupt", f"rc {p.rc}: {p.err.strip()[-300:]}"
            return
        raise ValueError(target)

    # ---------------------------------------------------------------- disk full
    def disk_full(self, t: Trial, rng: random.Random, target: str) -> None:
        if self.mount_problem:
            t.outcome, t.detail = "skipped", f"cannot mount a tmpfs: {self.mount_problem}"
            return
        config = "precompute" if target == "precompute" else "plain"
        ref = self.reference(config)
        base = self.work / f"t{t.number}"
        mnt = base / "full"
        if target == "export":
            run = base / "run"
            shutil.copytree(ref.run, run)
            size = rng.randint(1 << 20, 12 << 20)  # the model is about 14 MB
            t.fault = f"export to a {size >> 10} KB disk"
            with tmpfs(mnt, size) as remount:
                p = vt(["export", run, "--out", mnt / "model.vt"], self.warm)
                ok = clear_error(p) and str(mnt / "model.vt") in p.err.replace("\n", "") and not partial_files(mnt)
                remount(256 << 20)
                q = vt(["export", run, "--out", mnt / "model.vt"], self.warm)
                t.outcome = "error" if ok and q.rc == 0 else "corrupt"
                t.detail = p.err.strip().splitlines()[0][:200] if p.err.strip() else f"rc {p.rc}"
            return
        if target == "checkpoint":
            size = rng.randint(4 << 20, 70 << 20)  # frozen checkpoints ~14 MB, unfrozen ~40 MB, 2 kept
            t.fault = f"run folder on a {size >> 20} MB disk"
            with tmpfs(mnt, size) as remount:
                home = self.home(t, warm=True)
                p = vt(["train", self.data, *self.configs[config], "--out", mnt], home)
                run = the_run(mnt)
                if p.rc == 0:
                    t.outcome, t.detail = compare(run, ref)
                    return
                msg_ok = clear_error(p) and "No space left" in p.err
                left = [x for x in partial_files(mnt)]
                bad = check_files(run, home)
                remount(512 << 20)
                q = vt(["resume", run], home) if run is not None else vt(
                    ["train", self.data, *self.configs[config], "--out", mnt], home)
                run = the_run(mnt)
                outcome, detail = compare(run, ref) if q.rc == 0 else ("corrupt", q.err[-300:])
                if not msg_ok or left or bad:
                    outcome, detail = "corrupt", f"message ok {msg_ok}, partials {left}, {bad}: {p.err[-300:]}"
                t.outcome = "error" if outcome == "exact" else outcome
                t.detail = (p.err.strip().splitlines()[0][:200] if outcome == "exact" else detail)
            return
        # the image cache or the activation cache on a disk too small for it: a notice, training goes on
        size = rng.randint(8 << 10, 96 << 10) if target == "image-cache" else rng.randint(160 << 10, 260 << 10)
        t.fault = f"cache folder on a {size >> 10} KB disk ({target})"
        out = base / "runs"
        with tmpfs(mnt, size) as remount:
            p = vt(["train", self.data, *self.configs[config], "--out", out], mnt)
            if p.rc != 0:
                t.outcome, t.detail = ("error" if clear_error(p) else "corrupt"), p.err.strip()[-300:]
                return
            outcome, detail = compare(the_run(out), ref)
            bad = check_files(None, mnt) + [str(x) for x in partial_files(mnt)]
            remount(64 << 20)
            q = vt(["train", self.data, *self.configs[config], "--out", base / "runs2"], mnt)
            if q.rc != 0 or bad:
                outcome, detail = "corrupt", f"{bad} {q.err[-300:]}"
            t.outcome, t.detail = outcome, detail or ("notice: " + _first_notice(p.err))

    # ---------------------------------------------------------------- the schedule
    def kinds(self) -> list[tuple[str, float, callable]]:
        """(kind, weight, function(trial, rng)) for every fault kind."""
        k = [
            ("kill -9 train (plain)", 3, lambda t, r: self.kill_train(t, r, "plain")),
            ("kill -9 train (--precompute)", 3, lambda t, r: self.kill_train(t, r, "precompute")),
            ("kill -9 resume", 2, lambda t, r: self.kill_resume(t, r, r.choice(list(CONFIGS)))),
            ("kill -9 image-cache build", 1, lambda t, r: self.kill_build(t, r, "image-cache")),
            ("kill -9 precompute build", 1, lambda t, r: self.kill_build(t, r, "precompute")),
            ("kill -9 export", 1, self.kill_export),
            ("kill -9 clean --apply", 1, self.kill_clean_apply),
            ("SIGTERM train", 1, lambda t, r: self.kill_train(t, r, r.choice(list(CONFIGS)), signal.SIGTERM)),
            ("SIGINT train", 1, lambda t, r: self.kill_train(t, r, r.choice(list(CONFIGS)), signal.SIGINT)),
            ("two train, one cache", 1, self.two_trains),
            ("predict while train builds the cache", 0.5, self.predict_during_build),
            ("two resume of one run", 1, self.two_resumes),
        ]
        for target in ("segment", "index", "activations", "checkpoint", "model", "config"):
            k.append((f"damage: {target}", 1, lambda t, r, target=target: self.damage_trial(t, r, target)))
        for target in ("checkpoint", "image-cache", "precompute", "export"):
            k.append((f"disk full: {target}", 0.5, lambda t, r, target=target: self.disk_full(t, r, target)))
        return k

    def schedule(self, n: int, rng: random.Random) -> list[str]:
        """`n` kinds: every kind once (as far as `n` allows), the rest drawn by weight. --quick favours the
        cheap kinds (the precompute config, damage) so 20 trials fit in a few minutes."""
        kinds = self.kinds()
        if self.quick:
            cheap = ["kill -9 train (--precompute)", "kill -9 resume", "kill -9 precompute build",
                     "kill -9 image-cache build", "kill -9 export", "kill -9 clean --apply", "two resume of one run",
                     "disk full: checkpoint", "SIGTERM train"]
            damage = [x for x in kinds if x[0].startswith("damage")]
            kinds = [x for x in kinds if x[0] in cheap] + damage
            names = [k for k, _, _ in kinds]
            extra = [k for k, _, _ in damage if k != "damage: config"]  # the in-process ones take a second
            order = names[:n] + rng.choices(extra, k=max(0, n - len(names)))
            rng.shuffle(order)
            return order
        names = [k for k, _, _ in kinds]
        order = names[:n] + rng.choices(names, weights=[w for _, w, _ in kinds], k=max(0, n - len(names)))
        rng.shuffle(order)
        return order

    def run(self, n: int, log=print, into: list[Trial] | None = None) -> list[Trial]:
        """Run `n` trials, appending each to `into` as it ends; Ctrl-C kills the trial's processes and stops."""
        rng = random.Random(self.seed)
        table = {k: f for k, _, f in self.kinds()}
        trials = [] if into is None else into
        for i, kind in enumerate(self.schedule(n, rng)):
            t = Trial(i, kind)
            trng = random.Random(f"{self.seed}-{i}")  # each trial reproducible on its own
            t0 = time.perf_counter()
            try:
                table[kind](t, trng)
            except Hung as e:
                t.outcome, t.detail = "hung", str(e)
            except KeyboardInterrupt:
                kill_live()
                log(f"[{i + 1}/{n}] {t.kind}: stopped by Ctrl-C; {len(trials)} trials finished")
                self.stopped = True
                break
            digest = tree_digest(self.data)
            if digest != self.data_digest:
                t.outcome, t.detail = "corrupt", "THE DATA FOLDER CHANGED"
                self.data_digest = digest
            t.seconds = time.perf_counter() - t0
            trials.append(t)
            log(f"[{i + 1}/{n}] {t.kind}: {t.fault} -> {t.outcome} {t.detail}"[:400])
            shutil.rmtree(self.work / f"t{i}", ignore_errors=True)
        return trials


def _first_notice(err: str) -> str:
    lines = [line for line in err.splitlines() if "cache" in line or "activations" in line]
    return (lines[0] if lines else "(none)")[:200]


def table(trials: list[Trial], seed: int, n: int, quick: bool, exec_: bool = False) -> str:
    """The markdown table: per kind, trials and outcomes, with the command that reproduces them."""
    by = defaultdict(Counter)
    secs = defaultdict(float)
    for t in trials:
        by[t.kind][t.outcome] += 1
        secs[t.kind] += t.seconds
    cmd = f"python bench/faults.py --trials {n} --seed {seed}" + (" --quick" if quick else "") + \
        (" --exec" if exec_ else "")
    lines = [f"Command: `{cmd}`", "",
             "| fault | trials | recovered exactly | recovered with a difference | clear error | corrupt | hung "
             "| skipped | seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total = Counter()
    for kind in sorted(by):
        c = by[kind]
        total.update(c)
        lines.append(f"| {kind} | {sum(c.values())} | {c['exact']} | {c['diff']} | {c['error']} | {c['corrupt']} | "
                     f"{c['hung']} | {c['skipped']} | {secs[kind]:.0f} |")
    lines.append(f"| **all** | **{sum(total.values())}** | {total['exact']} | {total['diff']} | {total['error']} | "
                 f"{total['corrupt']} | {total['hung']} | {total['skipped']} | {sum(secs.values()):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global FORKS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="cheap kinds only (the CI short mode)")
    ap.add_argument("--exec", action="store_true",
                    help="start every visiontune process as a fresh interpreter (about 6 s more each) instead of a "
                         "fork of a server that imported visiontune once")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed after)")
    ap.add_argument("--json", type=Path, help="write every trial here (after each trial)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="vt-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    os.environ["COLUMNS"] = "200"  # the fork server's console width, as env_for gives fresh processes
    trials: list[Trial] = []

    def log(line: str) -> None:
        print(line, flush=True)
        if args.json:
            args.json.write_text(json.dumps([vars(t) for t in trials], indent=1))

    try:
        if not args.exec:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from vtfork import ForkServer

            (work / "procs").mkdir(exist_ok=True)
            FORKS = ForkServer(work / "procs")
        camp = Campaign(work, args.seed, args.quick)
        camp.run(args.trials, log=log, into=trials)
    except KeyboardInterrupt:
        kill_live()
        print(f"stopped by Ctrl-C after {len(trials)} trials")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    how = "fresh interpreters" if args.exec else "forks of a server that imported visiontune"
    print(table(trials, args.seed, args.trials, args.quick, args.exec))
    print(f"\n{len(trials)} trials in {time.perf_counter() - t0:.0f}s (visiontune processes: {how})")
    if args.json:
        args.json.write_text(json.dumps([vars(t) for t in trials], indent=1))
    return 1 if any(t.outcome in ("corrupt", "hung") for t in trials) or len(trials) < args.trials else 0


if __name__ == "__main__":
    sys.exit(main())

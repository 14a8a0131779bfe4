"""The fault campaign's short mode (bench/faults.py --quick, >= 20 trials) and one regression test per fix it
led to: the run-folder lock, checksums on the image cache, the activation cache, .vt exports, checkpoint
headers and config.yaml, and the one clear error on a full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import visiontune as vt
from visiontune._core.errors import CheckpointError, DiskFullError, ExportError, RunLockedError
from visiontune._core.io import atomic_write, write_bytes
from visiontune.data.cache import ImageCache
from visiontune.runs.checkpoint import read_checkpoint
from visiontune.runs.rundir import RunDir
from visiontune.train.precompute import ActivationCache

from conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "colors", n_train=4, n_valid=2)


# ---------------------------------------------------------------------------- the run-folder lock
def test_a_second_process_cannot_lock_a_run_and_the_lock_dies_with_its_holder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    code = ("import sys, time; from visiontune.runs.rundir import RunDir; RunDir(sys.argv[1]).lock(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"another visiontune process \\(pid {holder.pid}\\)"):
            RunDir(run).lock()
    finally:
        holder.kill()  # kill -9: the kernel releases the flock
        holder.wait(timeout=30)
    mine = RunDir(run)
    mine.lock()
    with pytest.raises(RunLockedError):
        RunDir(run).check_unlocked()  # a second descriptor, even in this process, is refused
    mine.unlock()
    RunDir(run).check_unlocked()


def test_resume_is_refused_while_the_run_is_held(head_run):
    run = RunDir(head_run.run.path)
    run.lock()
    try:
        with pytest.raises(RunLockedError, match="Wait for it to end"):
            vt.vision_learner(head_run.data, precompute=True, run_dir=run.path, resume=True)
    finally:
        run.unlock()


# ---------------------------------------------------------------------------- damage is detected
def test_a_flipped_bit_in_an_image_cache_segment_is_detected_and_rebuilt(small_folder, tmp_path):
    data = vt.ImageData.from_folder(small_folder, size=32, bs=4, cache=tmp_path / "cache")
    data.train_ds[0]  # noqa: B018  (fills the cache)
    pixels = data.pixels
    pixels.prepare()
    folder = pixels.cache.dir
    (seg,) = folder.glob("seg-*.bin")
    flip(seg, seg.stat().st_size // 2)
    index = ImageCache(folder.parent, pixels.short_side).read_index()
    assert seg.name not in index["segments"] and not index["entries"]  # never used: its images decode again
    again = vt.ImageData.from_folder(small_folder, size=32, bs=4, cache=tmp_path / "cache").pixels
    again.prepare()
    assert again.decoded == len(again.files) and not seg.exists()  # rebuilt, the damaged segment collected
    for i in range(len(again.files)):
        assert torch.equal(again(i), again._file_pixels(i))


def test_a_damaged_image_cache_index_is_rebuilt(small_folder, tmp_path):
    pixels = vt.ImageData.from_folder(small_folder, size=32, bs=4, cache=tmp_path / "cache").pixels
    pixels.prepare()
    index = pixels.cache.dir / "index.json"
    text = index.read_text()
    index.write_text(text.replace('"entries":{', '"entries":{"/x":[1,2,null,"x"],', 1))  # valid JSON, wrong
    assert ImageCache(pixels.cache.root, pixels.short_side).read_index()["segments"] == {}


def test_a_damaged_activation_cache_is_computed_again(tmp_path):
    cache = ActivationCache(tmp_path)
    feats, idx = np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(3)
    cache.write("k", {"a": 1}, feats, idx)
    assert cache.read("k", {"a": 1}) is not None
    flip(tmp_path / "k.npy", (tmp_path / "k.npy").stat().st_size - 3)  # one float's bits: np.load would not notice
    assert cache.read("k", {"a": 1}) is None


def test_a_flipped_bit_in_a_vt_export_is_refused(head_run, tmp_path):
    path = tmp_path / "model.vt"
    head_run.export(path)
    vt.load_learner(path)
    flip(path, path.stat().st_size - 100)  # inside the last tensor: the file still parses
    with pytest.raises(ExportError, match="do not match their checksum"):
        vt.load_learner(path)


def test_a_damaged_checkpoint_header_is_detected(head_run, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = sorted((head_run.run.path / "models").glob("checkpoint-*.safetensors"))[-1]
    with safe_open(str(src), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["state"] = meta["state"].replace('"epoch": ', '"epoch": 1', 1)  # still valid JSON, another position
    save_file(tensors, str(tmp_path / "checkpoint-00009.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="header does not match its checksum"):
        read_checkpoint(tmp_path / "checkpoint-00009.safetensors")


def test_resume_refuses_a_config_yaml_changed_since_the_checkpoint(small_folder, tmp_path):
    data = vt.ImageData.from_folder(small_folder, size=32, bs=4)
    learn = vt.vision_learner(data, precompute=True, run_dir=tmp_path / "run")
    learn.fit(1e-2, 1)
    cfg = tmp_path / "run" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("size: 32", "size: 36"))
    with pytest.raises(CheckpointError, match="config.yaml changed since"):
        vt.vision_learner(data, precompute=True, run_dir=tmp_path / "run", resume=True)
    RunDir(tmp_path / "run").check_unlocked()  # the refusal released the lock


# ---------------------------------------------------------------------------- left-overs of a kill -9
def test_a_writer_killed_before_its_rename_leaves_no_partial_file_behind_the_next_write(tmp_path):
    """Found by the campaign (kill -9 at export-partial, then export again): the dead writer's temporary
    model.vt stayed in the run folder for good. The next write of the same file removes it, but never the
    temporary file of a writer that is still alive."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "model.vt"
    stale = tmp_path / f".model.vt.{dead.pid}-abc123.partial"
    live = tmp_path / f".model.vt.{os.getppid()}-def456.partial"
    other = tmp_path / f".config.yaml.{dead.pid}-abc123.partial"
    for p in (stale, live, other):
        p.write_bytes(b"half")
    write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other.exists()  # only this file's, only dead writers'


# ---------------------------------------------------------------------------- a full disk
@pytest.fixture
def tiny_disk():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = Path(tempfile.mkdtemp())
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    folder.rmdir()


def test_a_full_disk_is_one_clear_error_naming_the_file_and_the_space(tiny_disk):
    from safetensors.torch import save_file

    write_bytes(tiny_disk / "old.bin", b"x" * 1000)
    with pytest.raises(DiskFullError) as e:
        write_bytes(tiny_disk / "big.bin", b"x" * (3 << 20))
    assert f"No space left to write {tiny_disk / 'big.bin'}: it needs about 3.0 MB" in str(e.value)
    assert isinstance(e.value, OSError)  # the image cache's fallback on OSError still applies
    with pytest.raises(DiskFullError, match="needs about 4.0 MB"):  # safetensors' own error type too
        atomic_write(tiny_disk / "w.safetensors", lambda tmp: save_file({"w": torch.zeros(1 << 20)}, str(tmp)),
                     size_hint=4 << 20)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["old.bin"]  # nothing half-written, the old file kept


def test_precomputed_activations_on_a_full_disk_are_skipped_not_fatal(tiny_disk, capsys, monkeypatch):
    monkeypatch.delenv("VISIONTUNE_QUIET", raising=False)
    cache = ActivationCache(tiny_disk / "acts")
    cache.write("k", {"a": 1}, np.zeros((600, 1280), dtype=np.float32), np.arange(600))  # 3 MB on a 1 MB disk
    assert "precomputed activations not cached: No space left" in capsys.readouterr().err
    assert list((tiny_disk / "acts").iterdir()) == [] and cache.read("k", {"a": 1}) is None


# ---------------------------------------------------------------------------- the campaign itself
TRIALS = int(os.environ.get("VISIONTUNE_FAULT_TRIALS", "20"))  # the short mode: every cheap kind at least once


@pytest.mark.slow
def test_fault_campaign_short_mode_leaves_nothing_corrupt_or_hung(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "bench" / "faults.py"), "--trials", str(TRIALS), "--seed", "0",
                        "--quick",
                        "--work", str(tmp_path / "w"), "--json", str(tmp_path / "trials.json")],
                       capture_output=True, text=True, timeout=1500, env={**os.environ, "PYTHONPATH": str(REPO)})
    trials = json.loads((tmp_path / "trials.json").read_text())
    assert len(trials) == TRIALS, r.stdout[-2000:] + r.stderr[-2000:]
    bad = [t for t in trials if t["outcome"] in ("corrupt", "hung", "diff")]
    assert not bad, bad
    kill = [t for t in trials if t["kind"].startswith("kill -9 train") or t["kind"] == "kill -9 resume"]
    assert kill and all(t["outcome"] == "exact" for t in kill)
    assert r.returncode == 0 and f"| **all** | **{TRIALS}** |" in r.stdout

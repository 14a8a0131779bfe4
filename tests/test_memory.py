"""Host memory on the CPU: the training step's estimate against a real step's peak memory, and the default batch
size lowered (with a notice, recorded in config.yaml) when the free memory would not hold it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import visiontune as vt
from visiontune.cli.app import app
from visiontune.train.memory import HEADROOM, parse_bytes, step_memory
from visiontune.train.oom import fit_host_memory

from conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]

PEAK = """
import json, sys, torch, visiontune as vt
from pathlib import Path
from visiontune.train.memory import step_memory
torch.set_num_threads(2)

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) * 1024

learn = vt.vision_learner(vt.ImageData.from_folder(sys.argv[1], size=int(sys.argv[2]), bs=16, cache=False))
learn.unfreeze()
per_image, fixed = step_memory(learn)
before = status("VmRSS:")
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) from here on
learn.fit(1e-4, 1)
print(json.dumps({"estimate": fixed + 16 * per_image, "peak_growth": status("VmHWM:") - before}))
"""


def test_the_step_estimate_is_close_to_a_real_training_steps_peak_memory(tmp_path):
    """Two full batches of 16 at 160 px, unfrozen: the memory the fit added at its peak against the estimate."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak from a point in time")
    folder = make_image_folder(tmp_path / "d", n_train=16, n_valid=2)  # 2 classes: 32 training images
    r = subprocess.run([sys.executable, "-c", PEAK, str(folder), "160"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(REPO), "VISIONTUNE_QUIET": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["peak_growth"] > 0 and 0.8 <= got["estimate"] / got["peak_growth"] <= 1.6, got


def test_the_probe_scales_with_pixels_and_leaves_the_model_as_it_was(image_folder):
    learn = vt.vision_learner(vt.ImageData.from_folder(image_folder, size=64, bs=8))
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    flags = [p.requires_grad for p in learn.model.parameters()]
    learn.set_train_mode()  # the frozen body's own modes, as a fit leaves them
    modes = [m.training for m in learn.model.modules()]
    rng = torch.get_rng_state()
    small = step_memory(learn)[0]
    assert torch.equal(torch.get_rng_state(), rng)  # the head's dropout ran, but the run's random stream did not move
    learn.data.size = 128
    large = step_memory(learn)[0]
    assert 3.0 <= large / small <= 5.0, (small, large)  # activations grow with the pixels (4x)
    assert [p.requires_grad for p in learn.model.parameters()] == flags  # the body stays frozen
    assert [m.training for m in learn.model.modules()] == modes
    after = learn.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched


def test_short_memory_lowers_the_batch_size_to_the_largest_power_of_two_that_fits(image_folder, capsys, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_QUIET", "0")
    learn = vt.vision_learner(vt.ImageData.from_folder(image_folder, size=64, bs=64))
    per, fixed = step_memory(learn)
    free = int((fixed + 10 * per) / HEADROOM)
    assert fit_host_memory(learn, free=free, lower=False) == 64  # a batch size the person chose: only said
    assert "may stop the run for lack of memory" in capsys.readouterr().err
    assert fit_host_memory(learn, free=free) == 8 == learn.data.bs
    assert "using batch size 8" in capsys.readouterr().err
    assert fit_host_memory(learn, free=10 * free) == 8  # plenty: kept


def test_cli_default_batch_size_follows_visiontune_memory_and_is_recorded(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "colors", n_train=8, n_valid=4)
    probe = vt.vision_learner(vt.ImageData.from_folder(folder, size=64, bs=64))
    per, fixed = step_memory(probe)
    monkeypatch.setenv("VISIONTUNE_MEMORY", str(int((fixed + 5 * per) / HEADROOM)))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("VISIONTUNE_QUIET", "0")
    r = CliRunner().invoke(app, ["train", str(folder), "--size", "64", "--epochs", "1", "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    assert "using batch size 4" in r.output
    (config,) = (tmp_path / "runs").rglob("config.yaml")
    assert yaml.safe_load(config.read_text())["bs"] == 4
    r = CliRunner().invoke(app, ["train", str(folder), "--size", "64", "--bs", "32", "--epochs", "1",
                                 "--out", str(tmp_path / "runs2")])
    assert r.exit_code == 0, r.output
    assert "may stop the run" in r.output  # the person's own batch size is kept, and the risk said
    (config,) = (tmp_path / "runs2").rglob("config.yaml")
    assert yaml.safe_load(config.read_text())["bs"] == 32


def test_memory_sizes_parse():
    assert parse_bytes("8G") == 8 << 30 and parse_bytes("512m") == 512 << 20 and parse_bytes("1000") == 1000
    assert parse_bytes("1.5GiB") == int(1.5 * (1 << 30))

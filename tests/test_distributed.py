"""torchrun + gloo on the CPU: two processes train like one process with the same global batch size,
and only rank 0 writes the run folder."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(data: Path, out: Path, bs: int) -> list[str]:
    # A linear head on the frozen body (BatchNorm statistics frozen): nothing depends on how the global
    # batch is split, so the two runs must agree to float rounding.
    return ["train", str(data), "--size", "32", "--bs", str(bs), "--epochs", "2", "--lr", "1e-2", "--head", "linear",
            "--seed", "0", "--out", str(out), "--num-workers", "0", "--device", "cpu"]


def run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VISIONTUNE_QUIET": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def only_run_dir(out: Path) -> Path:
    dirs = [p for p in out.glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found next to the Python executable")
def test_two_process_torchrun_matches_single_process(image_folder, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([sys.executable, "-m", "visiontune", *train_args(image_folder, single, 16)])
    run([TORCHRUN, "--nproc_per_node=2", "--nnodes=1", f"--master_port={free_port()}", "-m", "visiontune",
         *train_args(image_folder, ddp, 8)])

    a, b = only_run_dir(single), only_run_dir(ddp)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    log = (b / "log.csv").read_text().splitlines()
    assert len(log) == 1 + 2  # header + one row per epoch, written once
    ra = json.loads((a / "results.json").read_text())["metrics"]
    rb = json.loads((b / "results.json").read_text())["metrics"]
    assert rb["valid_loss"] == pytest.approx(ra["valid_loss"], rel=1e-3, abs=1e-4)
    assert rb["accuracy"] == pytest.approx(ra["accuracy"])
    la, lb = list(csv.DictReader(open(a / "log.csv"))), list(csv.DictReader(open(b / "log.csv")))
    for x, y in zip(la, lb):
        assert float(y["train_loss"]) == pytest.approx(float(x["train_loss"]), rel=1e-3, abs=1e-4)
    wa, wb = load_file(str(a / "models" / "final.safetensors")), load_file(str(b / "models" / "final.safetensors"))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-4), k

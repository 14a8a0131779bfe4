#!/usr/bin/env python3
"""What a run's crash safety costs: size and time of one checkpoint for EfficientNet-Lite0 (unfrozen,
AdamW moments for every parameter), beside a plain weights save (`learn.save`) measured in the same run.

    python bench/checkpoint_cost.py [--repeats 7] [--size 64]

Trains one short epoch on generated images (so the optimizer has state), then alternates: full checkpoint
(state gathered, SHA-256, safetensors, fsync, rename), plain weights save, checkpoint read + verify.
Prints ONE JSON line with medians (seconds) and sizes (MB), plus how busy the machine was (CpuWatch).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import CpuWatch, machine_info  # noqa: E402


def make_folder(root: Path, size: int) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("valid", 4)):
        for c, color in (("red", (200, 40, 40)), ("blue", (40, 60, 200))):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(color)[None, None] + rng.normal(0, 40, (size, size, 3)), 0, 255)
                Image.fromarray(arr.astype(np.uint8)).save(d / f"{i}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()

    import os

    os.environ.setdefault("VISIONTUNE_QUIET", "1")
    import visiontune as vt
    from visiontune.runs.checkpoint import Position, checkpoint_state, read_checkpoint, write_checkpoint

    tmp = Path(tempfile.mkdtemp())
    data = vt.ImageData.from_folder(make_folder(tmp / "colors", args.size), size=args.size, bs=8)
    learn = vt.vision_learner(data)
    learn.unfreeze()
    learn.fit_one_cycle(1)
    write_s, save_s, read_s = [], [], []
    ckpt, weights = tmp / "checkpoint.safetensors", tmp / "weights"
    with CpuWatch() as watch:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tensors, meta = checkpoint_state(learn, Position(0, 1))
            write_checkpoint(ckpt, tensors, meta)
            write_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            learn.save(weights)
            save_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            read_checkpoint(ckpt)
            read_s.append(time.perf_counter() - t0)
    med = statistics.median
    out = {
        "bench": "checkpoint_cost", "arch": "efficientnet_lite0", "repeats": args.repeats,
        "checkpoint_mb": round(ckpt.stat().st_size / 2**20, 1),
        "weights_mb": round((tmp / "weights.safetensors").stat().st_size / 2**20, 1),
        "checkpoint_write_s": round(med(write_s), 3), "weights_save_s": round(med(save_s), 3),
        "checkpoint_read_verify_s": round(med(read_s), 3),
        "write_vs_weights_ratio": round(med(write_s) / med(save_s), 2),
        "foreign_cpu": watch.foreign_cpu, **machine_info(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What glibc's malloc settings do to a bare PyTorch inference loop on the CPU, side by side.

    python bench/malloc_ab.py MODEL.vt DATA/valid [--rounds 5] [--bs 64]

Each round starts two fresh processes one after the other, one with glibc's defaults and one with
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 (what `visiontune predict` sets for itself,
see visiontune/_core/allocator.py); each decodes the images once, then times 3 passes of `model(x)` over the
pre-made tensors and reports its median. Prints ONE JSON line with the medians over rounds and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import CpuWatch, machine_info  # noqa: E402

CHILD = r"""
import os, statistics, sys, time
os.environ["VISIONTUNE_QUIET"] = "1"
from pathlib import Path
import torch, visiontune as vt
from visiontune.infer import image_files
from visiontune.infer.predict import item_to_tensor, prepare_batch
learn = vt.load_learner(sys.argv[1], device="cpu")
files = [e.path for e in image_files([Path(sys.argv[2])])]
x = prepare_batch(learn, [item_to_tensor(f, learn.data.size, learn.data.presize) for f in files])
model, bs = learn.model.eval(), int(sys.argv[3])
times = []
with torch.inference_mode():
    for _ in range(4):
        t = time.perf_counter()
        for i in range(0, len(x), bs):
            model(x[i:i + bs])
        times.append(time.perf_counter() - t)
print(len(x) / statistics.median(times[1:]))
"""
TUNED = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def run(env: dict, a) -> float:
    r = subprocess.run([sys.executable, "-c", CHILD, str(a.model), str(a.images), str(a.bs)], env=env, cwd=REPO,
                       capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--bs", type=int, default=64)
    a = p.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in TUNED}
    out: dict[str, list[float]] = {"default": [], "tuned": []}
    foreign = []
    for r in range(a.rounds):
        with CpuWatch() as w:
            out["default"].append(run(base, a))
            out["tuned"].append(run({**base, **TUNED}, a))
        foreign.append(w.foreign_cpu)
        print(f"round {r + 1}: default {out['default'][-1]:.0f} img/s, tuned {out['tuned'][-1]:.0f} img/s "
              f"(foreign cpu {w.foreign_cpu})", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in out.items()}
    ratios = [t / d for d, t in zip(out["default"], out["tuned"])]
    print(json.dumps({"tool": "bench/malloc_ab.py", **machine_info(), "images_per_s_median": med,
                      "tuned_over_default_per_round_median": round(statistics.median(ratios), 3),
                      "runs_img_s": out, "foreign_cpu_per_round": foreign}))


if __name__ == "__main__":
    main()

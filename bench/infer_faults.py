#!/usr/bin/env python3
"""Page faults and speed of inference at 224 px, batch size 64, under visiontune's malloc setting and the one before.

    python bench/infer_faults.py DATA [--size 224] [--bs 64] [--rounds 2] [--calls 3]

DATA is an ImageNet-style folder (DATA/valid/<class>/*). Each round starts one process per setting, A B A B:
  now      visiontune's setting (visiontune/_core/allocator.py: no mmap for malloc, glibc never trims the heap)
  earlier  the setting before it: no mmap, glibc trims the heap's top beyond 1 GiB free
Each process builds a Learner (embedded Lite0, untrained head: speed does not depend on the weights), warms up
with one get_preds, then times `--calls` get_preds over DATA/valid and as many passes of a bare loop (the model
over the same batches, pre-made) and records per call: images/s, minor page faults, kernel (sys) seconds.
Prints ONE JSON line with every call and the medians per setting; progress goes to stderr.
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

CHILD = r"""
import ctypes, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import visiontune as vt
from visiontune._core.allocator import M_TRIM_THRESHOLD

data, size, bs, calls, setting = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
torch.set_num_threads(2)
learn = vt.vision_learner(vt.ImageData.from_folder(data, size=size, bs=bs), device="cpu")  # applies "now"
if setting == "earlier":
    ctypes.CDLL("libc.so.6").mallopt(M_TRIM_THRESHOLD, 1 << 30)
learn.get_preds()
batches = [x.clone() for x, _ in learn.dl("valid", augment=False)]
n = sum(len(x) for x in batches)
learn.model.eval()

def bare():
    with torch.inference_mode():
        for x in batches:
            learn.model(x)

def measure(fn):
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    s, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    return {"img_s": n / s, "minflt": r1.ru_minflt - r0.ru_minflt, "sys_s": r1.ru_stime - r0.ru_stime}

out = {"get_preds": [], "bare": []}
for _ in range(calls):
    out["get_preds"].append(measure(learn.get_preds))
    out["bare"].append(measure(bare))
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--calls", type=int, default=3)
    a = p.parse_args()
    runs: dict[str, list] = {"now": [], "earlier": []}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, "VISIONTUNE_QUIET": "1"}
    for r in range(a.rounds):
        for setting in runs:
            print(f"round {r + 1}/{a.rounds}: {setting}", file=sys.stderr, flush=True)
            cmd = [sys.executable, "-c", CHILD, str(REPO), a.data, str(a.size), str(a.bs), str(a.calls), setting]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            runs[setting].append(json.loads(res.stdout.strip().splitlines()[-1]))

    def median(setting: str, what: str, key: str) -> float:  # over every call of every round
        return statistics.median(call[key] for run in runs[setting] for call in run[what])

    medians = {s: {what: {k: median(s, what, k) for k in ("img_s", "minflt", "sys_s")} for what in ("get_preds", "bare")}
               for s in runs}
    print(json.dumps({"args": vars(a), "medians": medians, "runs": runs}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What the run report costs, beside one plain validation pass measured in the same rounds.

    python bench/report_cost.py [--repeats 5] [--size 64] [--k 9]

On the demo's real data (scikit-learn's handwritten digits, 360 validation images) with the embedded
EfficientNet-Lite0 after one head-only epoch (not timed), each round runs, in turn: `learn.get_preds()` (one
validation pass), `learn.interpret()` (the pass with per-item losses and positions) and `write_report(...)`
(interpretation + Grad-CAM for the top losses + every figure + PNG encoding + the HTML). Prints ONE JSON line
with medians (seconds), the ratio report / validation pass, the page size, and how busy the machine was.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import CpuWatch, machine_info  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--k", type=int, default=9)
    args = ap.parse_args()

    os.environ.setdefault("VISIONTUNE_QUIET", "1")
    import torch

    import visiontune as vt
    from visiontune.data.demo import digits_folder
    from visiontune.interpret.report import write_report

    torch.manual_seed(0)
    data = vt.ImageData.from_folder(digits_folder(), size=args.size, bs=64)
    learn = vt.vision_learner(data)
    learn.fit_one_cycle(1)
    out_dir = Path(tempfile.mkdtemp())
    write_report(learn, out_dir / "warmup.html", k=args.k, on_error="raise")  # imports, caches: not timed
    preds_s, interp_s, report_s = [], [], []
    with CpuWatch() as watch:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            learn.get_preds()
            preds_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            learn.interpret()
            interp_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            path = write_report(learn, out_dir / "report.html", k=args.k, on_error="raise")
            report_s.append(time.perf_counter() - t0)
    med = statistics.median
    page = path.read_text(encoding="utf-8")
    out = {
        "bench": "report_cost", "arch": "efficientnet_lite0", "size": args.size, "k": args.k,
        "n_valid": len(data.valid_ds), "repeats": args.repeats,
        "valid_pass_s": round(med(preds_s), 3), "interpret_s": round(med(interp_s), 3),
        "report_s": round(med(report_s), 3), "report_vs_valid_pass": round(med(report_s) / med(preds_s), 2),
        "report_kb": round(len(page.encode()) / 1024, 1), "images": page.count("<img "),
        "foreign_cpu": watch.foreign_cpu, **machine_info(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Figures for the course's training steps (issues 4 and 5) on real Fashion-MNIST, Lite0, size 64.

    python bench/course.py /tmp/fmnist [--size 64] [--only precompute,schedules] [--repeats 3]

Prints one JSON line per measurement and a markdown table at the end. Run on a quiet machine:
`foreign_cpu` in each line says how much CPU other processes used meanwhile (0 = none).
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

os.environ.setdefault("VISIONTUNE_QUIET", "1")


def emit(**kw) -> dict:
    print(json.dumps(kw), flush=True)
    return kw


def fresh(data_path: Path, size: int, precompute: bool = False, seed: int = 0, **kw):
    import visiontune as vt
    from visiontune.runs.recipe import seed_everything

    seed_everything(seed)
    data = vt.ImageData.from_folder(data_path, size=size, bs=64, **kw)
    return vt.vision_learner(data, precompute=precompute)


def precompute_figures(path: Path, size: int, repeats: int) -> list[dict]:
    """Cold cache build, warm start, head epoch on features vs frozen epoch on images, accuracy both ways."""
    out = []
    os.environ["VISIONTUNE_HOME"] = tempfile.mkdtemp(prefix="vt-bench-")  # a cold cache
    learn = fresh(path, size, precompute=True)
    with CpuWatch() as w:
        t = time.perf_counter()
        learn.dl("train")
        learn.dl("valid")
        cold = time.perf_counter() - t
    n = len(learn.data.train_ds) + len(learn.data.valid_ds)
    out.append(emit(figure="cache_build_cold_s", value=round(cold, 2), images=n, img_s=round(n / cold), foreign_cpu=w.foreign_cpu))

    warm = []
    for _ in range(repeats):
        learn2 = fresh(path, size, precompute=True)
        t = time.perf_counter()
        learn2.dl("train")
        learn2.dl("valid")
        warm.append(time.perf_counter() - t)
    out.append(emit(figure="cache_warm_start_s", value=round(statistics.median(warm), 3), runs=[round(x, 3) for x in warm]))

    learn = fresh(path, size, precompute=True)
    with CpuWatch() as w:
        learn.fit_one_cycle(3)
    head_epochs = [r["time"] for r in learn.recorder.rows]
    acc_pre = learn.recorder.last["accuracy"]
    learn_img = fresh(path, size, precompute=False)
    with CpuWatch() as w2:
        learn_img.fit_one_cycle(3)
    img_epochs = [r["time"] for r in learn_img.recorder.rows]
    acc_img = learn_img.recorder.last["accuracy"]
    med_head, med_img = statistics.median(head_epochs), statistics.median(img_epochs)
    out.append(emit(figure="head_epoch_precompute_s", value=round(med_head, 3), epochs=[round(x, 3) for x in head_epochs], foreign_cpu=w.foreign_cpu))
    out.append(emit(figure="frozen_epoch_images_s", value=round(med_img, 2), epochs=[round(x, 2) for x in img_epochs], foreign_cpu=w2.foreign_cpu))
    out.append(emit(figure="precompute_speedup_x", value=round(med_img / med_head, 1)))
    out.append(emit(figure="acc_3_head_epochs_precompute", value=round(acc_pre, 4)))
    out.append(emit(figure="acc_3_head_epochs_images", value=round(acc_img, 4)))
    return out


def schedule_figures(path: Path, size: int) -> list[dict]:
    """fit_one_cycle(3) frozen vs fine_tune(3); SGDR fit(lr, 3, cycle_len=1, cycle_mult=2) after unfreezing."""
    out = []
    learn = fresh(path, size)
    with CpuWatch() as w:
        t = time.perf_counter()
        learn.fit_one_cycle(3)
        dt = time.perf_counter() - t
    out.append(emit(figure="acc_fit_one_cycle_3_frozen", value=round(learn.recorder.last["accuracy"], 4), seconds=round(dt, 1), foreign_cpu=w.foreign_cpu))

    learn = fresh(path, size)
    with CpuWatch() as w:
        t = time.perf_counter()
        learn.fine_tune(3)
        dt = time.perf_counter() - t
    out.append(emit(figure="acc_fine_tune_3", value=round(learn.recorder.last["accuracy"], 4), seconds=round(dt, 1), foreign_cpu=w.foreign_cpu))

    learn = fresh(path, size)
    learn.fit_one_cycle(1)
    learn.unfreeze()
    with CpuWatch() as w:
        t = time.perf_counter()
        learn.fit(slice(1e-4, 1e-3), 3, cycle_len=1, cycle_mult=2)
        dt = time.perf_counter() - t
    rows = learn.recorder.rows[1:]
    out.append(emit(figure="acc_sgdr_3_cycles_mult2_unfrozen", value=round(rows[-1]["accuracy"], 4), epochs=len(rows),
                    per_epoch_acc=[round(r["accuracy"], 4) for r in rows], seconds=round(dt, 1), foreign_cpu=w.foreign_cpu))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default="precompute,schedules")
    a = p.parse_args()
    import torch

    emit(figure="machine", **machine_info(), torch=str(torch.__version__), threads=torch.get_num_threads())
    rows = []
    if "precompute" in a.only:
        rows += precompute_figures(a.data, a.size, a.repeats)
    if "schedules" in a.only:
        rows += schedule_figures(a.data, a.size)
    print("\n| figure | value |\n| --- | --- |")
    for r in rows:
        print(f"| {r['figure']} | {r['value']} |")


if __name__ == "__main__":
    main()

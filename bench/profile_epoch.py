#!/usr/bin/env python3
"""Where a training epoch's time goes: the loader (decode/cache, augmentation, collate) against the model's
forward, loss, backward + optimizer step and the rest of the loop, for a frozen and an unfrozen epoch.

    python bench/profile_epoch.py DATA [--size 224] [--bs 64] [--augment side_on] [--threads 2]

Stage times come from callbacks at the loop's own events (before_batch, after_pred, after_loss, after_step,
after_batch): "loader" is the time between one batch's end and the next one's start (the DataLoader producing
the batch: pixels from the cache, augmentation, collate, moving and normalizing it). The same train loader is
then iterated alone, with and without augmentation, to split the loader's share. Each phase runs one warm-up
epoch first (the image cache filled, allocator warm), then one timed epoch. Prints a markdown table and one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VISIONTUNE_QUIET", "1")
os.environ.setdefault("VISIONTUNE_HOME", tempfile.mkdtemp(prefix="vt-bench-profile-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import visiontune as vt  # noqa: E402
from visiontune.train import Callback  # noqa: E402
from _machine import cpu_times  # noqa: E402

STAGES = ("loader", "forward", "loss", "backward_step", "rest")


class StageTimer(Callback):
    """Seconds per stage of the training batches of each epoch (validation excluded)."""

    order = -100
    records = True

    def __init__(self):
        self.epochs: list[dict] = []

    def before_epoch(self):
        self.t = dict.fromkeys(STAGES, 0.0)
        self._last = None
        self._cpu = cpu_times()
        self._t0 = time.perf_counter()

    def before_train(self):
        self._last = time.perf_counter()

    def before_batch(self):
        now = time.perf_counter()
        if self.learn.training:
            self.t["loader"] += now - self._last
        self._mark = now

    def _lap(self, stage):
        now = time.perf_counter()
        if self.learn.training:
            self.t[stage] += now - self._mark
        self._mark = now

    def after_pred(self):
        self._lap("forward")

    def after_loss(self):
        self._lap("loss")

    def after_step(self):
        self._lap("backward_step")

    def after_batch(self):
        self._lap("rest")
        self._last = time.perf_counter()

    def before_validate(self):
        self.t["train_s"] = time.perf_counter() - self._t0
        user, system = (b - a for a, b in zip(self._cpu, cpu_times()))
        self.t["sys_frac"] = system / (user + system)
        self.epochs.append(self.t)


def loader_only(learn, augment: bool) -> float:
    """Seconds to iterate the train loader once, batches moved and normalized as in training (after one warm
    pass), with or without the augmentation."""
    dl = learn.dl("train", augment=augment)
    for _ in dl:
        pass
    t = time.perf_counter()
    for _ in dl:
        pass
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--augment", default="side_on")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = vt.ImageData.from_folder(a.data, size=a.size, bs=a.bs, augment=a.augment)
    learn = vt.vision_learner(data)
    timer = StageTimer()
    out = {"size": a.size, "bs": a.bs, "augment": a.augment, "n_train": len(data.train_ds) // a.bs * a.bs}
    for phase in ("frozen", "unfrozen"):
        if phase == "unfrozen":
            learn.unfreeze()
        learn.fit(1e-4, 2, cbs=[timer])  # epoch 1 warms up; epoch 2 is the figure
        out[phase] = timer.epochs[-1]
    out["loader_only_s"] = {a.augment: loader_only(learn, True), "no augmentation": loader_only(learn, False)}
    print("| phase | train s | img/s | " + " | ".join(STAGES) + " | sys share |")
    print("|---|---|---|" + "---|" * len(STAGES) + "---|")
    for phase in ("frozen", "unfrozen"):
        t = out[phase]
        shares = " | ".join(f"{t[s]:.1f} s ({t[s] / t['train_s']:.0%})" for s in STAGES)
        print(f"| {phase} | {t['train_s']:.1f} | {out['n_train'] / t['train_s']:.1f} | {shares} | {t['sys_frac']:.1%} |")
    print("loader alone over the train set: " + ", ".join(f"{k} {v:.1f} s" for k, v in out["loader_only_s"].items()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

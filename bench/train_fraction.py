#!/usr/bin/env python3
"""visiontune's training epoch against the bare loop in ONE process, epoch by epoch, A B A B.

    python bench/train_fraction.py DATA [--size 224] [--bs 64] [--rounds 4] [--phases frozen,unfrozen]

The suite (bench/compare.py) runs visiontune and the bare loop (bench/ceiling.py) in separate processes
minutes apart; on this shared 2-core machine the same model step runs 15-25% faster or slower from one process
to the next, which is as large as the gap being measured. Here both run in the same process, same allocator
setting, same threads, their epochs alternating (A B, then B A), so each round's ratio compares epochs seconds
apart. Arms, per phase:

  visiontune      Learner.fit_one_cycle(1) through the real loop: the image cache, `side_on` augmentation,
                  collate, normalization, callbacks, the recorder, one-cycle; frozen = `learn.freeze()`
                  (BatchNorm weights train, their statistics stay: freeze_bn_stats), unfrozen = fine_tune's
                  lrs slice(base_lr/lr_mult, base_lr)/2
  visiontune, no augmentation   the same with augment=None (a second Learner): the loop and loader without
                  the augmentation the bare loop does not do
  bare loop       bench/ceiling.py's train_epoch: timm's Lite0 + linear classifier, AdamW, channels_last,
                  pre-decoded normalized tensors, no augmentation; frozen = its `frozen_bn` variant (body
                  frozen except BatchNorm weights, BatchNorm in train mode: fastai's freeze())

Each phase starts with one untimed epoch per arm (the image cache filled, memory warm; the bare loop warms up as
bench/ceiling.py does). Figures are train passes only (validation excluded), 384 images at the default 400/bs 64.
Prints a markdown table, then everything as one JSON line (the last); writes bench/results/train-fraction-<time>.json.
bench/compare.py runs it after its rounds (--train-fraction-rounds).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

os.environ.setdefault("VISIONTUNE_QUIET", "1")
os.environ.setdefault("VISIONTUNE_HOME", tempfile.mkdtemp(prefix="vt-bench-fraction-"))
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import ceiling as C  # noqa: E402
import visiontune as vt  # noqa: E402
from _machine import CpuWatch, cpu_times, machine_info, wait_for_quiet  # noqa: E402
from profile_epoch import STAGES, StageTimer  # noqa: E402


def vt_arm(a, augment: str | None):
    data = vt.ImageData.from_folder(a.data, size=a.size, bs=a.bs, seed=0, augment=augment, min_scale=a.min_scale)
    return vt.vision_learner(data, "efficientnet_lite0")


def vt_epoch(learn, phase: str, a) -> dict:
    lrs = a.base_lr if phase == "frozen" else slice(a.base_lr / a.lr_mult / 2, a.base_lr / 2)
    timer = StageTimer()
    learn.fit_one_cycle(1, lrs, cbs=[timer])
    return timer.epochs[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--phases", default="frozen,unfrozen")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base-lr", type=float, default=2e-3)
    p.add_argument("--lr-mult", type=float, default=100)
    p.add_argument("--min-scale", type=float, default=1.0, help="as bench/visiontune_subject.py (the suite)")
    p.add_argument("--no-noaug-arm", action="store_true", help="leave out the arm without augmentation")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECS")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    arms = {"visiontune": vt_arm(a, "side_on")}
    if not a.no_noaug_arm:
        arms["visiontune, no augmentation"] = vt_arm(a, None)
    classes = list(arms["visiontune"].data.classes)
    xt, yt = C.load_split(a.data / "train", classes, a.size)
    xt = xt.contiguous(memory_format=torch.channels_last)
    n_train = len(xt) // a.bs * a.bs
    gen = torch.Generator().manual_seed(0)

    out: dict = {"size": a.size, "bs": a.bs, "threads": a.threads, "rounds": a.rounds, "n_train": n_train,
                 "data": str(a.data), "torch": torch.__version__, "visiontune": vt.__version__, **machine_info()}
    for phase in a.phases.split(","):
        bare = C.fresh_model(len(classes), "channels_last")
        opt = torch.optim.AdamW(C.set_variant(bare, "unfrozen" if phase == "unfrozen" else "frozen_bn"), lr=1e-3)
        C.train_epoch(bare, opt, xt[: 3 * a.bs], yt[: 3 * a.bs], a.bs, gen)  # ceiling.py's warm-up
        first = {}
        for name, learn in arms.items():
            if phase == "unfrozen":
                learn.unfreeze()
            first[name] = vt_epoch(learn, phase, a)["train_s"]  # untimed in the figures: cache fill, first touch
        runs: dict = {name: [] for name in [*arms, "bare loop"]}
        for r in range(a.rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for name in order:
                if a.wait_quiet:
                    wait_for_quiet(a.wait_quiet)
                c0 = cpu_times()
                with CpuWatch() as w:
                    if name == "bare loop":
                        secs = C.train_epoch(bare, opt, xt, yt, a.bs, gen)
                        runs[name].append({"train_s": secs})
                    else:
                        runs[name].append(vt_epoch(arms[name], phase, a))
                user, sys_ = (b - a_ for a_, b in zip(c0, cpu_times()))
                runs[name][-1].update(foreign_cpu=w.foreign_cpu, user_s=round(user, 2), sys_s=round(sys_, 2))
                print(f"[{phase}] round {r} {name}: {runs[name][-1]['train_s']:.2f} s", file=sys.stderr, flush=True)
        bare_s = [e["train_s"] for e in runs["bare loop"]]
        res: dict = {"first_epoch_s": first, "runs": runs}
        for name in arms:
            s = [e["train_s"] for e in runs[name]]
            med = statistics.median(s)
            res[name] = {
                "train_s": med, "img_s": n_train / med,
                "fraction_per_round": [round(b / v, 3) for b, v in zip(bare_s, s)],
                "fraction": statistics.median(b / v for b, v in zip(bare_s, s)),
                "stages_s": {k: statistics.median(e[k] for e in runs[name]) for k in STAGES},
            }
        res["bare loop"] = {"train_s": statistics.median(bare_s), "img_s": n_train / statistics.median(bare_s)}
        out[phase] = res

    print(f"| phase | arm | train s (median) | img/s | fraction of the bare loop (median of {a.rounds} rounds) "
          "| per round | loader s | forward s | backward + step s |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|")
    for phase in a.phases.split(","):
        res = out[phase]
        b = res["bare loop"]
        print(f"| {phase} | bare loop | {b['train_s']:.2f} | {b['img_s']:.1f} | 1.00 | | | | |")
        for name in arms:
            r = res[name]
            st = r["stages_s"]
            print(f"| {phase} | {name} | {r['train_s']:.2f} | {r['img_s']:.1f} | **{r['fraction']:.0%}** | "
                  f"{', '.join(f'{x:.2f}' for x in r['fraction_per_round'])} | {st['loader']:.2f} | "
                  f"{st['forward']:.2f} | {st['backward_step']:.2f} |")
    path = HERE / "results" / f"train-fraction-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"JSON: {path.relative_to(HERE.parent)}")
    print("fractions: " + json.dumps({p: {k: round(out[p][k]["fraction"], 3) for k in arms} for p in a.phases.split(",")}))
    print(json.dumps(out, default=str))  # last line: what bench/compare.py reads


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Lopsided and small data, on real photos and Fashion-MNIST: plain training vs visiontune's default (class
weights from the train counts on lopsided data) vs the balanced sampler, with balanced validation sets.

    python -m bench.imbalance [--dogscats /work/shared/data/dogscats] [--fmnist /tmp/fmnist] [--seeds 3]

Subsets (made by this script, fixed): dogscats at size 224 with cats:dogs at 10:1 and 50:1 (500 dogs), the
valid set 100 + 100; Fashion-MNIST at size 64 with ten classes falling geometrically from 500 to 10 per class,
the valid set 100 per class; small data: 10 and 30 photos per class of dogscats. Every run is Lite0's frozen
body with the head trained for 5 one-cycle epochs at batch size 16 on precomputed activations;
the features are computed once per subset and shared by the recipes. Prints a markdown table (medians over
seeds) and writes bench/results/imbalance-<time>.json. fastai is not run here (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("VISIONTUNE_QUIET", "1")
os.environ.setdefault("VISIONTUNE_HOME", str(Path(tempfile.gettempdir()) / "vt-bench-imbalance-home"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score  # noqa: E402

import visiontune as vt  # noqa: E402
from visiontune.runs.recipe import seed_everything  # noqa: E402

BS, EPOCHS = 16, 5  # enough steps that the head learns on the 20-image sets too (3 epochs at bs 64 is 3 steps)
RECIPES = {"plain": dict(class_weights=False), "default": dict(), "balanced": dict(class_weights=False,
                                                                                    sampler="balanced")}


def link(files, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.symlink(f, folder / Path(f).name)


def dogscats_subset(src: Path, out: Path, n_cats: int, n_dogs: int, n_valid: int = 100) -> Path:
    cats = sorted((src / "train").glob("cat.*.jpg"), key=lambda p: int(p.name.split(".")[1]))
    dogs = sorted((src / "train").glob("dog.*.jpg"), key=lambda p: int(p.name.split(".")[1]))
    link(cats[:n_cats], out / "train" / "cats")
    link(dogs[:n_dogs], out / "train" / "dogs")
    link(cats[-n_valid:], out / "valid" / "cats")
    link(dogs[-n_valid:], out / "valid" / "dogs")
    return out


def fmnist_longtail(src: Path, out: Path, top: int = 500, bottom: int = 10, n_valid: int = 100) -> Path:
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    ratio = (bottom / top) ** (1 / (len(classes) - 1))
    for i, c in enumerate(classes):
        n = int(round(top * ratio**i))
        link(sorted((src / "train" / c).iterdir())[:n], out / "train" / c)
        link(sorted((src / "valid" / c).iterdir())[:n_valid], out / "valid" / c)
    return out


def run(folder: Path, size: int, recipe: str, seed: int) -> dict:
    opts = dict(RECIPES[recipe])
    sampler = opts.pop("sampler", None)
    seed_everything(seed)
    data = vt.ImageData.from_folder(folder, size=size, bs=BS, seed=seed, sampler=sampler)
    learn = vt.vision_learner(data, precompute=True, **opts)
    t0 = time.perf_counter()
    learn.fit_one_cycle(EPOCHS)
    seconds = time.perf_counter() - t0
    probs, targets = learn.get_preds()
    y, pred = targets.numpy(), probs.argmax(1).numpy()
    counts = data.class_counts()
    rare = data.classes.index(min(counts, key=counts.get))
    return {"balanced_accuracy": balanced_accuracy_score(y, pred), "f1_macro": f1_score(y, pred, average="macro"),
            "rare_recall": recall_score(y, pred, labels=[rare], average="macro", zero_division=0),
            "accuracy": float((y == pred).mean()), "fit_seconds": seconds, "ratio": data.imbalance_ratio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dogscats", type=Path, default=Path("/work/shared/data/dogscats"))
    p.add_argument("--fmnist", type=Path, default=Path("/tmp/fmnist"))
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="vt-imb-data-"))
    cases = [("dogscats 10:1 (50 cats / 500 dogs), 224 px", dogscats_subset(a.dogscats, tmp / "dc10", 50, 500), 224),
             ("dogscats 50:1 (10 cats / 500 dogs), 224 px", dogscats_subset(a.dogscats, tmp / "dc50", 10, 500), 224),
             ("dogscats balanced (500 / 500), 224 px", dogscats_subset(a.dogscats, tmp / "dc1", 500, 500), 224),
             ("dogscats small: 10 per class, 224 px", dogscats_subset(a.dogscats, tmp / "s10", 10, 10), 224),
             ("dogscats small: 30 per class, 224 px", dogscats_subset(a.dogscats, tmp / "s30", 30, 30), 224)]
    if (a.fmnist / "train").is_dir():
        cases.append(("Fashion-MNIST 10 classes, 500 -> 10 per class, 64 px", fmnist_longtail(a.fmnist, tmp / "fm"),
                      64))
    results = []
    for name, folder, size in cases:
        for recipe in RECIPES:
            runs = [run(folder, size, recipe, seed) for seed in range(a.seeds)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            results.append({"case": name, "recipe": recipe, **med, "runs": runs})
            print(f"{name} | {recipe} | bal.acc {med['balanced_accuracy']:.3f} | F1 {med['f1_macro']:.3f} | "
                  f"rare recall {med['rare_recall']:.3f} | {med['fit_seconds']:.1f}s", file=sys.stderr, flush=True)
    out = HERE / "results" / f"imbalance-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"seeds": a.seeds, "results": results}, indent=2))
    print("| data | recipe | balanced accuracy | macro F1 | rare-class recall | accuracy | head fit (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['recipe']} | {r['balanced_accuracy']:.3f} | {r['f1_macro']:.3f} | "
              f"{r['rare_recall']:.3f} | {r['accuracy']:.3f} | {r['fit_seconds']:.1f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

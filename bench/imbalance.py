#!/usr/bin/env python3
"""Lopsided and small data, on real photos and Fashion-MNIST: plain training vs class weights vs the balanced
sampler vs visiontune's default (no flag), and fastai's default recipe, with balanced validation sets.

    python -m bench.imbalance [--seeds 3]                        # head on precomputed features (fast)
    python -m bench.imbalance --recipe cli [--fastai] [--seeds 3] # `visiontune train DATA` as a user runs it

Subsets (made by this script, fixed): dogscats at size 224 with cats:dogs at 10:1 and 50:1 (500 dogs), the
valid set 100 + 100; Fashion-MNIST at size 64 with ten classes falling geometrically from 500 to 10 per class,
the valid set 100 per class; small data: 10 and 30 photos per class of dogscats.
`--recipe head`: Lite0's frozen body with the head trained for 5 one-cycle epochs at batch size 16 on
precomputed activations (the features computed once per subset, shared by the recipes).
`--recipe cli`: `visiontune train DATA --seed S` with only the recipe's flags (plain: --no-balanced
--class-weights none; weights: --no-balanced --class-weights auto; balanced: --balanced; default: none), the
valid set then predicted with the exported model. `--fastai` adds fastai's default recipe
(bench/fastai_peer.py: `fine_tune(1)` with aug_transforms, batch size 64) from the throwaway venv.
Prints a markdown table (medians over seeds) and writes bench/results/imbalance-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
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
from visiontune.infer.batch import predict_files  # noqa: E402
from visiontune.runs.recipe import seed_everything  # noqa: E402

BS, EPOCHS = 16, 5  # enough steps that the head learns on the 20-image sets too (3 epochs at bs 64 is 3 steps)
RECIPES = {"plain": dict(sampler=None, class_weights=False), "weights": dict(sampler=None, class_weights="auto"),
           "balanced": dict(sampler="balanced", class_weights=False), "default": dict()}
CLI_FLAGS = {"plain": ["--no-balanced", "--class-weights", "none"],
             "weights": ["--no-balanced", "--class-weights", "auto"], "balanced": ["--balanced"], "default": []}


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


def scores(y: np.ndarray, pred: np.ndarray, rare: int) -> dict:
    return {"balanced_accuracy": balanced_accuracy_score(y, pred), "f1_macro": f1_score(y, pred, average="macro"),
            "rare_recall": recall_score(y, pred, labels=[rare], average="macro", zero_division=0),
            "accuracy": float((y == pred).mean())}


def rarest(folder: Path) -> str:
    counts = {d.name: len(list(d.iterdir())) for d in (folder / "train").iterdir()}
    return min(sorted(counts), key=counts.get)


def run(folder: Path, size: int, recipe: str, seed: int) -> dict:
    opts = dict(RECIPES[recipe])
    sampler = opts.pop("sampler", "auto")
    seed_everything(seed)
    data = vt.ImageData.from_folder(folder, size=size, bs=BS, seed=seed, sampler=sampler)
    learn = vt.vision_learner(data, precompute=True, **opts)
    t0 = time.perf_counter()
    learn.fit_one_cycle(EPOCHS)
    seconds = time.perf_counter() - t0
    probs, targets = learn.get_preds()
    y, pred = targets.numpy(), probs.argmax(1).numpy()
    return {**scores(y, pred, data.classes.index(rarest(folder))), "seconds": seconds,
            "ratio": data.imbalance_ratio, "sampler": data.sampler, "weighted": learn.class_weights is not None}


def run_cli(folder: Path, size: int, recipe: str, seed: int, work: Path) -> dict:
    out = work / f"runs-{folder.name}-{recipe}-{seed}"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "visiontune", "train", str(folder), "--size", str(size), "--seed",
                        str(seed), "--out", str(out), *CLI_FLAGS[recipe]], capture_output=True, text=True,
                       env={**os.environ, "VISIONTUNE_QUIET": "0", "COLUMNS": "200"})
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"visiontune train failed:\n{r.stderr[-3000:]}")
    (model,) = out.rglob("model.vt")
    learn = vt.load_learner(model)
    fp = predict_files(learn, [folder / "valid"])
    classes = sorted(d.name for d in (folder / "valid").iterdir())
    y = np.array([classes.index(Path(f).parent.name) for f in fp.files])
    pred = np.array([classes.index(p) for p in fp.labels()])
    said = [line for line in r.stderr.splitlines() if "lopsided" in line or "small data" in line]
    return {**scores(y, pred, classes.index(rarest(folder))), "seconds": seconds, "notices": said[:3]}


def run_fastai(folder: Path, size: int, seed: int, venv: Path) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([str(venv / "bin" / "python"), str(HERE / "fastai_peer.py"), str(folder), "--size", str(size),
                        "--bs", "64", "--epochs", "1", "--measure", "fine_tune", "--seed", str(seed), "--per-class"],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"fastai failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    recall = res["valid_recall"]
    rare = rarest(folder)
    vals = [v for v in recall.values() if v is not None]
    return {"balanced_accuracy": res["valid_balanced_accuracy"], "f1_macro": float("nan"),
            "rare_recall": recall[rare], "accuracy": res["final_valid_acc"], "seconds": seconds,
            "min_recall": min(vals)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dogscats", type=Path, default=Path("/work/shared/data/dogscats"))
    p.add_argument("--fmnist", type=Path, default=Path("/tmp/fmnist"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--recipe", choices=("head", "cli"), default="head")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma list of " + ",".join(RECIPES))
    p.add_argument("--cases", default="", help="comma list of case numbers (default: all)")
    p.add_argument("--fastai", action="store_true", help="also fastai's fine_tune")
    p.add_argument("--fastai-venv", type=Path, default=Path("/tmp/vt-bench-fastai-venv"))
    a = p.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="vt-imb-data-"))
    cases = [("dogscats 10:1 (50 cats / 500 dogs), 224 px", lambda: dogscats_subset(a.dogscats, tmp / "dc10", 50, 500), 224),
             ("dogscats 50:1 (10 cats / 500 dogs), 224 px", lambda: dogscats_subset(a.dogscats, tmp / "dc50", 10, 500), 224),
             ("dogscats balanced (500 / 500), 224 px", lambda: dogscats_subset(a.dogscats, tmp / "dc1", 500, 500), 224),
             ("dogscats small: 10 per class, 224 px", lambda: dogscats_subset(a.dogscats, tmp / "s10", 10, 10), 224),
             ("dogscats small: 30 per class, 224 px", lambda: dogscats_subset(a.dogscats, tmp / "s30", 30, 30), 224)]
    if (a.fmnist / "train").is_dir():
        cases.append(("Fashion-MNIST 10 classes, 500 -> 10 per class, 64 px", lambda: fmnist_longtail(a.fmnist, tmp / "fm"),
                      64))
    chosen = [int(x) for x in a.cases.split(",") if x] or range(len(cases))
    recipes = [r for r in a.recipes.split(",") if r]
    results = []
    out = HERE / "results" / f"imbalance-{a.recipe}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    for i in chosen:
        name, make, size = cases[i]
        folder = make()
        tools = [(r, "visiontune") for r in recipes] + ([("fastai fine_tune", "fastai")] if a.fastai else [])
        for recipe, tool in tools:
            runs = []
            for seed in range(a.seeds):
                if tool == "fastai":
                    runs.append(run_fastai(folder, size, seed, a.fastai_venv))
                elif a.recipe == "cli":
                    runs.append(run_cli(folder, size, recipe, seed, tmp))
                else:
                    runs.append(run(folder, size, recipe, seed))
            keys = [k for k in runs[0] if isinstance(runs[0][k], (int, float)) and not isinstance(runs[0][k], bool)]
            med = {k: statistics.median(r[k] for r in runs) for k in keys}
            results.append({"case": name, "recipe": recipe, **med, "runs": runs})
            out.write_text(json.dumps({"seeds": a.seeds, "recipe": a.recipe, "results": results}, indent=2,
                                      default=str))  # after each row: a run stopped early keeps what it measured
            print(f"{name} | {recipe} | bal.acc {med['balanced_accuracy']:.3f} | "
                  f"rare recall {med['rare_recall']:.3f} | {med['seconds']:.1f}s", file=sys.stderr, flush=True)
    print(f"Command: `python -m bench.imbalance {' '.join(sys.argv[1:])}`; medians of {a.seeds} seeds; {out.name}")
    print("| data | recipe | balanced accuracy | macro F1 | rare-class recall | accuracy | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['recipe']} | {r['balanced_accuracy']:.3f} | {r['f1_macro']:.3f} | "
              f"{r['rare_recall']:.3f} | {r['accuracy']:.3f} | {r['seconds']:.1f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

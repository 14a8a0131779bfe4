#!/usr/bin/env python3
"""How well `visiontune clean` finds planted label errors and copies, and what it costs next to one precompute pass.

    python bench/clean.py dogscats --train-per-class 150 --valid-per-class 50 --size 224 [--rounds 3]
    python bench/clean.py fmnist --train-per-class 300 --valid-per-class 100 --size 64 [--rounds 3]
    [--oracle /tmp/oracle/bin/python]  # cleanlab in a throwaway venv, on the same out-of-fold probabilities

Each round builds a fresh copy of the data (dogscats: `../shared/data/dogscats` photos laid out as
train/{cats,dogs} + valid/{cats,dogs} + a test1/ sample that holds its two byte-identical pairs; fmnist: Debian's
real Fashion-MNIST through `../shared/bench/make_fmnist.py`), then plants, with seed `--seed`:
- label errors: 5% of the train+valid images moved to another class folder (uniformly random other class);
- 20 near-duplicates: copies of 20 train images placed in valid (same class), in turn re-encoded as JPEG at
  another quality (q=50), resized to 90% and mirrored.
Then, with a fresh visiontune cache: one precompute pass (the frozen body over train, valid, test: decoding
included) is timed, and `find_issues` is timed with another fresh cache (so it pays for its own pass).

Reported: precision and recall of the flipped labels among the top-k label issues (k = number flipped), and of
everything flagged; recall of the planted copies (both in one group) and the groups no planted copy explains
(listed, to look at: real data has real near-duplicates); whether test1's two byte-identical pairs were found;
find time / precompute time; with --oracle, the overlap with cleanlab's `find_label_issues` on the same
probabilities. One JSON line per round on stdout, and a summary with medians.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("VISIONTUNE_QUIET", "1")

from _machine import CpuWatch, machine_info  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
if not SHARED.is_dir():
    SHARED = Path("/work/shared")
DOGSCATS = SHARED / "data" / "dogscats"
TEST_PAIRS = [("224.jpg", "267.jpg"), ("750.jpg", "789.jpg")]


# ---------------------------------------------------------------------------------------- data
def lay_out_dogscats(out: Path, n_train: int, n_valid: int, n_test: int) -> None:
    num = lambda f: int(re.search(r"(\d+)\.jpg$", f.name).group(1))  # noqa: E731
    for cls, folder in (("cat", "cats"), ("dog", "dogs")):
        files = sorted((DOGSCATS / "train").glob(f"{cls}.*.jpg"), key=num)
        for split, part in (("train", files[:n_train]), ("valid", files[n_train:n_train + n_valid])):
            d = out / split / folder
            d.mkdir(parents=True, exist_ok=True)
            for f in part:
                shutil.copyfile(f, d / f.name)
    test = out / "test1"
    test.mkdir(parents=True)
    wanted = {n for pair in TEST_PAIRS for n in pair}
    others = [f for f in sorted((DOGSCATS / "test1").glob("*.jpg"), key=num) if f.name not in wanted]
    for f in [DOGSCATS / "test1" / n for n in sorted(wanted)] + others[: max(0, n_test - len(wanted))]:
        shutil.copyfile(f, test / f.name)


def lay_out_fmnist(out: Path, n_train: int, n_valid: int) -> None:
    script = SHARED / "bench" / "make_fmnist.py"
    subprocess.run([sys.executable, str(script), str(out), "--train-per-class", str(n_train),
                    "--valid-per-class", str(n_valid)], check=True, capture_output=True)


def plant(root: Path, seed: int, flip_pct: float = 0.05, n_dupes: int = 20) -> dict:
    """Flip labels (move files to another class folder) and add near-duplicates across train/valid."""
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    labelled = sorted(p for s in ("train", "valid") for p in (root / s).glob("*/*") if p.is_file())
    k = int(round(flip_pct * len(labelled)))
    flip_idx = rng.choice(len(labelled), k, replace=False)
    flips = []
    for i in sorted(flip_idx):
        src = labelled[i]
        others = [c for c in classes if c != src.parent.name]
        dst = src.parent.parent / others[int(rng.integers(len(others)))] / src.name
        src.rename(dst)
        flips.append(dst.relative_to(root).as_posix())
    flipped = set(flips)
    train = sorted(p for p in (root / "train").glob("*/*") if p.relative_to(root).as_posix() not in flipped)
    dupes = []
    for j, i in enumerate(rng.choice(len(train), n_dupes, replace=False)):
        src = train[int(i)]
        im = Image.open(src).convert("RGB")
        how = ("jpeg50", "resize90", "mirror")[j % 3]
        if how == "resize90":
            im = im.resize((max(1, im.width * 9 // 10), max(1, im.height * 9 // 10)), Image.Resampling.LANCZOS)
        elif how == "mirror":
            im = ImageOps.mirror(im)
        dst = root / "valid" / src.parent.name / f"copy{j}-{how}-{src.stem}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, quality=50 if how == "jpeg50" else 92)
        dupes.append((src.relative_to(root).as_posix(), dst.relative_to(root).as_posix(), how))
    n_images = sum(1 for p in root.rglob("*") if p.is_file())
    return {"flips": flips, "dupes": dupes, "n_labelled": len(labelled) + n_dupes, "n_images": n_images}


# ---------------------------------------------------------------------------------------- runs
def precompute_pass(data_path: Path, size: int, bs: int, test: str | None) -> float:
    """Seconds of one precompute pass over train, valid and test (fresh cache: decoding included)."""
    import visiontune as vt
    from visiontune.train.precompute import ActivationCache

    data = vt.ImageData.from_folder(data_path, size=size, bs=bs, test=test)
    learn = vt.vision_learner(data, precompute=True)
    cache = ActivationCache(data.cache_dir / "activations")
    t0 = time.perf_counter()
    for ds in ("train", "valid") + (("test",) if test else ()):
        cache.get(learn, ds)
    return time.perf_counter() - t0


def oracle_overlap(python: str, probs: np.ndarray, labels: np.ndarray, ours: np.ndarray, work: Path) -> dict:
    np.save(work / "probs.npy", probs)
    np.save(work / "labels.npy", labels)
    code = ("import numpy as np, json, cleanlab; from cleanlab.filter import find_label_issues; "
            f"p = np.load({str(work / 'probs.npy')!r}); y = np.load({str(work / 'labels.npy')!r}); "
            "m = find_label_issues(y, p); print(json.dumps({'mask': m.tolist(), 'version': cleanlab.__version__}))")
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    theirs = np.asarray(out["mask"], dtype=bool)
    both, either = int((theirs & ours).sum()), int((theirs | ours).sum())
    return {"cleanlab": out["version"], "ours": int(ours.sum()), "theirs": int(theirs.sum()), "both": both,
            "jaccard": round(both / either, 4) if either else 1.0}


def one_round(args, round_no: int, work: Path) -> dict:
    from visiontune.clean import find_issues, load_data

    root = work / args.dataset
    if args.dataset == "dogscats":
        lay_out_dogscats(root, args.train_per_class, args.valid_per_class, args.test)
        test = "test1"
    else:
        lay_out_fmnist(root, args.train_per_class, args.valid_per_class)
        test = None
    planted = plant(root, args.seed + round_no)
    os.environ["VISIONTUNE_HOME"] = str(work / f"home-pre-{round_no}")
    with CpuWatch() as w_pre:
        t_pre = precompute_pass(root, args.size, args.bs, test)
    os.environ["VISIONTUNE_HOME"] = str(work / f"home-find-{round_no}")
    data = load_data(root, size=args.size, bs=args.bs, test=test)
    with CpuWatch() as w_find:
        t0 = time.perf_counter()
        issues = find_issues(data, folds=args.folds, seed=args.seed)
        t_find = time.perf_counter() - t0
    t1 = time.perf_counter()
    issues_warm = find_issues(load_data(root, size=args.size, bs=args.bs, test=test), folds=args.folds, seed=args.seed)
    t_warm = time.perf_counter() - t1

    flips = set(planted["flips"])
    ranked = [r.file for r in issues.label]
    k = len(flips)
    top = set(ranked[:k])
    label = {"flipped": k, "flagged": len(ranked), "precision_at_k": round(len(top & flips) / k, 4),
             "recall_at_k": round(len(top & flips) / k, 4),
             "precision_all": round(len(set(ranked) & flips) / max(1, len(ranked)), 4),
             "recall_all": round(len(set(ranked) & flips) / k, 4),
             "oof_accuracy": round(issues.summary["label"]["oof_accuracy"], 4),
             "noise_estimate": round(issues.summary["label"]["noise_rate"], 4)}
    groups: dict[int, set[str]] = {}
    for r in issues:
        if r.kind in ("leak", "duplicate"):
            groups.setdefault(r.group, set()).add(r.file)
    found_pairs = [any({a, b} <= g for g in groups.values()) for a, b, _ in planted["dupes"]]
    by_how = {}
    for (_, _, how), ok in zip(planted["dupes"], found_pairs):
        by_how.setdefault(how, []).append(ok)
    explained = []
    test_pairs = [{f"test1/{a}", f"test1/{b}"} for a, b in TEST_PAIRS] if test else []
    for g in groups.values():
        planted_here = any({a, b} <= g for a, b, _ in planted["dupes"]) or any(p <= g for p in test_pairs)
        explained.append(planted_here)
    unexplained = [sorted(g) for g, ok in zip(groups.values(), explained) if not ok]
    dup = {"planted": len(planted["dupes"]), "recall": round(sum(found_pairs) / len(found_pairs), 4),
           "recall_by_kind": {h: f"{sum(v)}/{len(v)}" for h, v in by_how.items()},
           "groups": len(groups), "unexplained_groups": len(unexplained),
           "unexplained_per_1000_images": round(1000 * len(unexplained) / planted["n_images"], 3),
           "unexplained": unexplained[:10]}
    if test:
        dup["test1_pairs_found"] = [any(p <= g for g in groups.values()) for p in test_pairs]
    out = {"round": round_no, "dataset": args.dataset, "size": args.size, "images": planted["n_images"],
           "labelled": planted["n_labelled"], "label": label, "duplicates": dup,
           "seconds": {"precompute_pass": round(t_pre, 2), "find": round(t_find, 2), "find_warm_cache": round(t_warm, 2),
                       "find_parts": issues.summary["timing"]},
           "find_over_precompute": round(t_find / t_pre, 3), "warm_find_over_precompute": round(t_warm / t_pre, 3),
           "foreign_cpu": {"precompute": w_pre.foreign_cpu, "find": w_find.foreign_cpu},
           "same_issues_warm": [r.file for r in issues_warm.label] == ranked}
    if args.oracle and issues.probs is not None:
        from visiontune.clean.confident import find_label_issues

        y = np.asarray([issues.data.classes.index(f.parent.name) for f in issues.oof_files])
        ours = find_label_issues(issues.probs, y).mask
        out["oracle"] = oracle_overlap(args.oracle, issues.probs, y, ours, work)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=("dogscats", "fmnist"))
    p.add_argument("--train-per-class", type=int, default=150)
    p.add_argument("--valid-per-class", type=int, default=50)
    p.add_argument("--test", type=int, default=200, help="dogscats: test1 photos (its two duplicate pairs included)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--oracle", default=None, help="python of a venv with cleanlab (never a visiontune dependency)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    rounds = []
    info = machine_info()
    for i in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="vt-bench-clean-"))
        try:
            r = one_round(args, i, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(r), flush=True)
        rounds.append(r)
    med = lambda xs: round(statistics.median(xs), 3)  # noqa: E731
    summary = {"summary": True, "dataset": args.dataset, "rounds": len(rounds), **info,
               "median_find_over_precompute": med([r["find_over_precompute"] for r in rounds]),
               "median_warm_find_over_precompute": med([r["warm_find_over_precompute"] for r in rounds]),
               "median_precompute_s": med([r["seconds"]["precompute_pass"] for r in rounds]),
               "median_find_s": med([r["seconds"]["find"] for r in rounds]),
               "precision_at_k": [r["label"]["precision_at_k"] for r in rounds],
               "dup_recall": [r["duplicates"]["recall"] for r in rounds],
               "unexplained_groups": [r["duplicates"]["unexplained_groups"] for r in rounds]}
    if any("oracle" in r for r in rounds):
        summary["oracle_jaccard"] = [r.get("oracle", {}).get("jaccard") for r in rounds]
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

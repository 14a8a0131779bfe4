#!/usr/bin/env python3
"""This checkout's visiontune against an earlier commit's, side by side on the same data, in one command.

    python -m bench.ab_versions --base 5cd88dd [--data /tmp/fmnist] [--rounds 3] [--size 64] [--epochs 2]

Checks out `--base` into a temporary git worktree and runs bench/visiontune_subject.py of each version (each
with its own library on PYTHONPATH) in A B A B order, `--rounds` times. Each figure is the median over rounds
and the ratio is taken between the two medians of this one invocation, so a shared, noisy machine slows both
alike. Writes bench/results/ab-<time>.json. This is how a refactor is checked to cost nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEYS = [("lr_find_s", False), ("frozen_epoch_s", False), ("precompute_build_s", False),
        ("precompute_epoch_s", False), ("unfrozen_epoch_s", False), ("unfrozen_train_img_s", True),
        ("get_preds_img_s", True), ("tta_img_s", True), ("final_valid_acc", True), ("peak_rss_mb", False)]


def run(root: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(root / "bench" / "visiontune_subject.py"), *args]
    print("$ PYTHONPATH=" + str(root), " ".join(cmd[1:]), file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if r.returncode != 0:
        raise SystemExit(f"failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the earlier commit to compare with")
    p.add_argument("--head", default=None, help="the later commit (default: this working tree as it is)")
    p.add_argument("--data", type=Path, default=Path("/tmp/fmnist"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--extra", default="", help="more arguments for visiontune_subject.py, e.g. '--infer-repeats 1'")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-ab-"))
    wt, head_root = tmp / "base", ROOT
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(wt), a.base], check=True)
    if a.head:
        head_root = tmp / "head"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(head_root), a.head], check=True)
    common = [str(a.data), "--size", str(a.size), "--epochs", str(a.epochs), "--wait-quiet", "0", *a.extra.split()]
    (HERE / "results").mkdir(exist_ok=True)
    partial = HERE / "results" / f"ab-{datetime.now():%Y%m%d-%H%M%S}.partial.json"
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    try:
        for i in range(a.rounds):
            print(f"round {i + 1}/{a.rounds}", file=sys.stderr, flush=True)
            runs["base"].append(run(wt, common))
            runs["head"].append(run(head_root, common))
            partial.write_text(json.dumps(runs, indent=2))  # what is done so far survives an interruption
    finally:
        for w in {wt, head_root} - {ROOT}:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(w)], check=False)
    head = a.head or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
    rows = []
    for key, higher in KEYS:
        b = [r[key] for r in runs["base"] if isinstance(r.get(key), (int, float))]
        h = [r[key] for r in runs["head"] if isinstance(r.get(key), (int, float))]
        if not b or not h:
            continue
        mb, mh = statistics.median(b), statistics.median(h)
        rows.append({"figure": key, "base": mb, "head": mh, "head_vs_base": (mh / mb if higher else mb / mh) if mb and mh else None})
    out = {"base": a.base, "head": head, "rounds": a.rounds, "args": common, "when": datetime.now().isoformat(),
           "rows": rows, "runs": runs}
    (HERE / "results").mkdir(exist_ok=True)
    path = HERE / "results" / f"ab-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2))
    partial.unlink(missing_ok=True)
    print(f"| figure | {a.base} | {head} | {head} speed vs {a.base} |\n|---|---|---|---|")
    for r in rows:
        ratio = f"{r['head_vs_base']:.2f}x" if r["head_vs_base"] else "—"
        print(f"| {r['figure']} | {r['base']:.4g} | {r['head']:.4g} | {ratio} |")
    print(f"(medians of {a.rounds} rounds, A B A B; {path.relative_to(ROOT)})", file=sys.stderr)


if __name__ == "__main__":
    main()

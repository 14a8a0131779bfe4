#!/usr/bin/env python3
"""visiontune vs fastai vs a bare PyTorch loop, side by side on real data, in one command.

    python -m bench.compare [--data /tmp/fmnist] [--rounds 3] [--size 64] [--epochs 2] [--append]

Runs visiontune (bench/visiontune_subject.py, this Python) and fastai (bench/fastai_peer.py, in a
throwaway venv made by bench/setup_fastai.sh) and the bare-loop ceiling (bench/ceiling.py) in A B C A B C
order, `--rounds` times each. Each figure is the median over rounds; ratios to fastai are taken between those
medians of the same invocation, fractions of the ceiling per round (against the ceiling of the same round),
then their median. Writes bench/results/compare-<time>.json and, with --append, a
markdown table at the end of BENCHMARKS.md.

Data: `apt-get install -y dataset-fashion-mnist` then `python /work/shared/bench/make_fmnist.py /tmp/fmnist`
(5,000 train / 1,000 valid, the default; `--full` there for 60,000 / 10,000).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (key, label, unit, higher_is_better)
FIGURES = [
    ("first_batch_s", "import -> first training batch", "s", False),
    ("lr_find_s", "lr_find (100 iterations)", "s", False),
    ("frozen_epoch_s", "frozen epoch (images, train + valid)", "s", False),
    ("precompute_epoch_s", "frozen epoch on precomputed activations", "s", False),
    ("precompute_build_s", "precompute: cold cache build", "s", False),
    ("unfrozen_epoch_s", "unfrozen epoch (train + valid)", "s", False),
    ("unfrozen_train_img_s", "unfrozen training throughput", "img/s", True),
    ("final_valid_acc", "valid accuracy after fine_tune", "", True),
    ("get_preds_img_s", "get_preds", "img/s", True),
    ("tta_img_s", "TTA (4 augmented + 1 plain)", "img/s", True),
    ("tta_acc", "valid accuracy with TTA", "", True),
    ("predict_img_s", "predict new JPEGs (test1, decoding included)", "img/s", True),
    ("peak_rss_mb", "peak RSS (main process, whole run)", "MiB", False),
    ("frozen_peak_rss_mb", "peak RSS, frozen epoch", "MiB", False),
    ("unfrozen_peak_rss_mb", "peak RSS, unfrozen epoch", "MiB", False),
    ("get_preds_peak_rss_mb", "peak RSS, get_preds", "MiB", False),
    ("predict_peak_rss_mb", "peak RSS, predict new JPEGs", "MiB", False),
    ("frozen_sys_frac", "kernel (sys) share of CPU time, frozen epoch", "", False),
    ("unfrozen_sys_frac", "kernel (sys) share of CPU time, unfrozen epoch", "", False),
    ("time_to_0.97_s", "time to valid accuracy 0.97 (fine_tune, from start)", "s", False),
]


# The ceiling runs under each allocator setting and keeps the best per figure: glibc's defaults, and what
# visiontune sets for its own process on the CPU (visiontune/_core/allocator.py: no mmap for malloc, and no trimming
# by glibc itself: 1 TiB stands for never). fastai runs with glibc's defaults, as its users get it.
MALLOC_SETTINGS = {"glibc default": {}, "no mmap, no trim": {"MALLOC_MMAP_MAX_": "0",
                                                            "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}}


# (name, subject figure, ceiling variant or None for inference, passes per image)
FRACTIONS = [("unfrozen", "unfrozen_train_img_s", "unfrozen", 1), ("frozen", "frozen_train_img_s", "frozen_bn", 1),
             ("get_preds", "get_preds_img_s", None, 1),
             ("tta", "tta_img_s", None, 5),  # TTA runs 5 passes (4 augmented + 1 plain) over each image
             ("predict", "predict_img_s", None, 1)]  # new JPEG files, decoding included, vs pre-decoded tensors
# (and, as predict_vs_decoding, vs the bare loop that decodes the same files: ceiling.py's predict_decode_img_s)


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    log("$ " + " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_of(runs: list[dict], key: str):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def fmt(v, unit="") -> str:
    if v is None:
        return "—"
    if unit == "" and isinstance(v, float) and v <= 1:
        return f"{v:.4f}"
    return f"{v:,.1f} {unit}".strip() if v < 100 else f"{v:,.0f} {unit}".strip()


def best_ceiling(runs: dict) -> dict:
    """Per figure, the fastest of the ceiling runs (one per allocator setting), with the setting that won."""
    best: dict = {}
    for name, run in runs.items():
        b = run["best"]
        if "infer_img_s" not in best or b["infer_img_s"] > best["infer_img_s"]:
            best.update(infer_img_s=b["infer_img_s"], infer_format=b.get("infer_format"), infer_malloc=name,
                        infer_model=b.get("infer_model", "eager"),
                        infer_peak_rss_mb=run[b.get("infer_format", "contiguous")].get("infer_peak_rss_mb"))
        eager = b.get("infer_eager_img_s", b["infer_img_s"])
        best["infer_eager_img_s"] = max(best.get("infer_eager_img_s", 0), eager)  # the model as defined
        if "predict_decode_img_s" in b:  # new JPEG files, decoding included
            best["predict_decode_img_s"] = max(best.get("predict_decode_img_s", 0), b["predict_decode_img_s"])
        for v, fig in b.items():
            if isinstance(fig, dict) and (v not in best or fig["train_img_s"] > best[v]["train_img_s"]):
                best[v] = {**fig, "malloc": name}
    return best


def median_ceiling(bests: list[dict]) -> dict:
    """Per figure, the median over rounds of each round's best ceiling (best_ceiling's), as that round measured it."""
    def median_round(value) -> int:
        return statistics.median_low([(value(b), i) for i, b in enumerate(bests)])[1]
    i = median_round(lambda b: b["infer_img_s"])
    out = {k: bests[i].get(k) for k in ("infer_img_s", "infer_format", "infer_malloc", "infer_model", "infer_peak_rss_mb")}
    out["infer_eager_img_s"] = bests[median_round(lambda b: b["infer_eager_img_s"])]["infer_eager_img_s"]
    if all("predict_decode_img_s" in b for b in bests):
        out["predict_decode_img_s"] = bests[median_round(lambda b: b["predict_decode_img_s"])]["predict_decode_img_s"]
    for v in (k for k, f in bests[0].items() if isinstance(f, dict)):
        out[v] = bests[median_round(lambda b: b[v]["train_img_s"])][v]
    return out


def ceiling_note(best: dict) -> str:
    model = "BatchNorm folded" if best.get("infer_model") == "folded" else "model as defined"
    parts = [f"inference: {best.get('infer_format')}, {best.get('infer_malloc')}, {model}"]
    parts += [f"{v}: {f.get('format')}, {f.get('malloc')}" for v, f in best.items() if isinstance(f, dict)]
    return "; ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/fmnist"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fastai-venv", type=Path, default=Path("/tmp/vt-bench-fastai-venv"))
    p.add_argument("--wait-quiet", type=float, default=120, help="each run first waits up to this for an idle CPU")
    p.add_argument("--skip-fastai", action="store_true")
    p.add_argument("--lr-find-iters", type=int, default=100)
    p.add_argument("--infer-repeats", type=int, default=3)
    p.add_argument("--ceiling-repeats", type=int, default=3)
    p.add_argument("--ceiling-each-round", action=argparse.BooleanOptionalAction, default=True,
                   help="run the bare-loop ceiling in every round, beside the tools, and take each round's fractions "
                        "against it (--no-ceiling-each-round: once, after the last round)")
    p.add_argument("--train-fraction-rounds", type=int, default=4,
                   help="rounds of bench/train_fraction.py after the suite: visiontune's training epochs against the "
                        "bare loop's in one process, alternating (0: skip)")
    p.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    a = p.parse_args()
    if not (a.data / "train").is_dir():
        raise SystemExit(f"{a.data} has no train/ folder: apt-get install -y dataset-fashion-mnist && "
                         f"python /work/shared/bench/make_fmnist.py {a.data}")
    common = [str(a.data), "--size", str(a.size), "--bs", str(a.bs), "--epochs", str(a.epochs),
              "--threads", str(a.threads), "--wait-quiet", str(a.wait_quiet), "--lr-find-iters", str(a.lr_find_iters),
              "--infer-repeats", str(a.infer_repeats)]
    fastai_py = a.fastai_venv / "bin" / "python"
    if not a.skip_fastai:
        subprocess.run(["bash", str(HERE / "setup_fastai.sh"), str(a.fastai_venv)], check=True)

    ceiling_cmd = [sys.executable, str(HERE / "ceiling.py"), str(a.data), "--size", str(a.size), "--bs", str(a.bs),
                   "--infer-bs", str(a.bs), "--threads", str(a.threads), "--repeats", str(a.ceiling_repeats),
                   "--wait-quiet", str(a.wait_quiet)]
    vt_runs, fa_runs, ceiling_rounds = [], [], []
    for i in range(a.rounds):
        log(f"round {i + 1}/{a.rounds}")
        vt_runs.append(run_json([sys.executable, str(HERE / "visiontune_subject.py"), *common]))
        if not a.skip_fastai:
            fa_runs.append(run_json([str(fastai_py), str(HERE / "fastai_peer.py"), *common]))
        if a.ceiling_each_round or i == a.rounds - 1:
            ceiling_rounds.append({name: run_json(ceiling_cmd, env=env) for name, env in MALLOC_SETTINGS.items()})
    in_process = None
    if a.train_fraction_rounds:
        in_process = run_json([sys.executable, str(HERE / "train_fraction.py"), str(a.data), "--size", str(a.size),
                               "--bs", str(a.bs), "--threads", str(a.threads), "--rounds", str(a.train_fraction_rounds),
                               "--wait-quiet", str(min(a.wait_quiet, 10))])
    ceilings = ceiling_rounds[-1]
    round_bests = [best_ceiling(c) for c in ceiling_rounds]
    best = median_ceiling(round_bests)  # the best this machine does, per figure (median over rounds)
    # the ceiling each round's figures are divided by: its own, or the one measured after the last round
    refs = round_bests if a.ceiling_each_round else round_bests * a.rounds

    rows = []
    for key, label, unit, higher in FIGURES:
        v, f = median_of(vt_runs, key), median_of(fa_runs, key)
        ratio = None
        if v and f and unit not in ("", "MiB"):
            ratio = (v / f) if higher else (f / v)  # > 1: visiontune faster
        rows.append({"figure": key, "label": label, "unit": unit, "visiontune": v, "fastai": f,
                     "speedup_vs_fastai": ratio})
    # precompute head epoch vs fastai's frozen epoch: the course's precompute claim
    pre, fa_frozen = median_of(vt_runs, "precompute_epoch_s"), median_of(fa_runs, "frozen_epoch_s")
    # Each round's figures against the ceiling measured in the same round (--ceiling-each-round), then the median:
    # a ratio taken side by side, so a machine that slows down for a while slows both sides of it.
    fractions = {}
    for tool, runs in (("visiontune", vt_runs), ("fastai", fa_runs)):
        if not runs:
            continue
        for name, key, variant, passes in FRACTIONS:
            per_round = [passes * run[key] / (rb[variant]["train_img_s"] if variant else rb["infer_img_s"])
                         for run, rb in zip(runs, refs) if isinstance(run.get(key), (int, float))]
            if not per_round:  # not measured (e.g. predict without DATA/test1): no figure rather than 0%
                continue
            fractions[f"{tool}_{name}"] = statistics.median(per_round)
            if variant is None:  # inference also against the model as defined, before folding its BatchNorms
                eager = [passes * run[key] / rb["infer_eager_img_s"]
                         for run, rb in zip(runs, refs) if isinstance(run.get(key), (int, float))]
                fractions[f"{tool}_{name}_vs_eager"] = statistics.median(eager)
            if name == "predict":  # against the bare loop that decodes the same new files too
                dec = [run[key] / rb["predict_decode_img_s"] for run, rb in zip(runs, refs)
                       if isinstance(run.get(key), (int, float)) and rb.get("predict_decode_img_s")]
                if dec:
                    fractions[f"{tool}_predict_vs_decoding"] = statistics.median(dec)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    report = {
        "date": stamp, "cpu": cpu_model(), "cores": os.cpu_count(), "args": {k: str(v) for k, v in vars(a).items()},
        "versions": {"visiontune": vt_runs[0].get("visiontune"), "fastai": fa_runs[0].get("fastai") if fa_runs else None,
                     "torch": vt_runs[0].get("torch")},
        "rows": rows, "precompute_vs_fastai_frozen": (fa_frozen / pre) if pre and fa_frozen else None,
        "fraction_of_ceiling": fractions, "train_fraction_in_process": in_process, "ceiling": best, "ceiling_runs": ceilings,
        "ceiling_rounds": round_bests, "visiontune_runs": vt_runs, "fastai_runs": fa_runs,
        "foreign_cpu": {"visiontune": [r.get("foreign_cpu") for r in vt_runs], "fastai": [r.get("foreign_cpu") for r in fa_runs]},
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"compare-{stamp}.json").write_text(json.dumps(report, indent=1))

    md = [f"\n### visiontune vs fastai vs bare loop — {datetime.now():%Y-%m-%d %H:%M}\n",
          f"`python -m bench.compare {' '.join(sys.argv[1:])}` on "
          f"{os.cpu_count()} cores ({cpu_model()}), torch {report['versions']['torch']}, fastai "
          f"{report['versions']['fastai']}, visiontune {report['versions']['visiontune']}; {a.data.name}: "
          f"{vt_runs[0].get('n_train_per_epoch')} train / {vt_runs[0].get('n_valid')} valid, Lite0 (embedded weights), "
          f"bs {a.bs}, {a.threads} threads, fine_tune(1 frozen + {a.epochs} unfrozen); medians of {a.rounds} rounds "
          f"run A B A B. Other processes' CPU share during the runs (0 = quiet): visiontune "
          f"{report['foreign_cpu']['visiontune']}, fastai {report['foreign_cpu']['fastai']}. visiontune keeps "
          f"freed memory in its process (glibc mallopt, as its Learner does on the CPU); fastai runs with glibc's "
          f"defaults, as its users get it; the ceiling is the best of glibc's defaults and visiontune's setting, "
          f"contiguous and channels_last, per figure ({ceiling_note(best)}).\n",
          "| figure | visiontune | fastai | visiontune speed-up |", "| --- | --- | --- | --- |"]
    for r in rows:
        if r["figure"] == "lr_find_s":
            r["label"] = f"lr_find ({a.lr_find_iters} iterations)"
        elif r["figure"].endswith("peak_rss_mb") and r["figure"] != "peak_rss_mb":
            r["label"] += " (what earlier phases keep included)"
        sp = f"{r['speedup_vs_fastai']:.2f}x" if r["speedup_vs_fastai"] else ""
        md.append(f"| {r['label']} | {fmt(r['visiontune'], r['unit'])} | {fmt(r['fastai'], r['unit'])} | {sp} |")
    if report["precompute_vs_fastai_frozen"]:
        md.append(f"| precomputed head epoch vs fastai's frozen epoch | | | {report['precompute_vs_fastai_frozen']:.1f}x |")
    md.append("")
    md.append("Peak RSS of the bare loop (its pre-decoded tensors, "
              f"{ceilings[next(iter(ceilings))].get('data_tensors_mb', 0):.0f} MiB, included): frozen with BatchNorm "
              f"training {best.get('frozen_bn', {}).get('peak_rss_mb')} MiB, unfrozen "
              f"{best.get('unfrozen', {}).get('peak_rss_mb')} MiB, inference {best.get('infer_peak_rss_mb')} MiB.\n")
    md.append(f"Fraction of the bare-loop ceiling ({best.get('unfrozen', {}).get('train_img_s', 0):.0f} img/s unfrozen, "
              f"{best.get('frozen_bn', {}).get('train_img_s', 0):.0f} img/s frozen with BatchNorm training, "
              f"{best.get('infer_img_s', 0):.0f} img/s inference, {best.get('infer_eager_img_s', 0):.0f} img/s with the "
              f"model as defined; `_vs_eager`: against that"
              + (f"; `predict vs decoding`: against the bare loop that decodes the same new files too, "
                 f"{best['predict_decode_img_s']:.0f} img/s" if best.get("predict_decode_img_s") else "") + "): "
              + ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in fractions.items()) + ".\n")
    if in_process:
        md.append(f"Training in one process (bench/train_fraction.py, {a.train_fraction_rounds} rounds, visiontune's epochs "
                  "and the bare loop's alternating, median of the per-round ratios): " + ", ".join(
                      f"{phase} {in_process[phase][arm]['fraction']:.0%}{'' if arm == 'visiontune' else ' without augmentation'}"
                      for phase in ("frozen", "unfrozen") if phase in in_process
                      for arm in ("visiontune", "visiontune, no augmentation") if arm in in_process[phase]) + ".\n")
    text = "\n".join(md)
    print(text)
    if a.append:
        with open(ROOT / "BENCHMARKS.md", "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

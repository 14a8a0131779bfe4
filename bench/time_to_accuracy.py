#!/usr/bin/env python3
"""Time to accuracy with each tool's documented default recipe: seconds from the command's start until the
valid accuracy first reaches the target (0.97), A B A B, medians.

    python -m bench.time_to_accuracy DATA [--size 224] [--rounds 2] [--target 0.97]

visiontune: `visiontune train DATA --size S` exactly as the README shows it (its defaults: 3 frozen epochs), the
clock started before the process and stopped when log.csv first shows a row at or above the target (polled
every 0.1 s). fastai: the docs' recipe, `vision_learner(...).fine_tune(1)` with `aug_transforms()` at batch size
64 (bench/fastai_peer.py in the throwaway venv of bench/setup_fastai.sh), or fine_tune(N) with
--fastai-epochs N, its clock started before its imports, stopped at the end of the epoch that reached the
target. Writes bench/results/time-to-acc-<time>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log_rows(out: Path) -> list[dict]:
    """The rows of the run's log.csv so far (none before the run folder exists)."""
    for log in out.rglob("log.csv"):
        with open(log) as f:
            return list(csv.DictReader(f))
    return []


def reached(rows: list[dict], target: float) -> bool:
    return any(r.get("accuracy") and float(r["accuracy"]) >= target for r in rows)


def visiontune_run(data: Path, size: int, target: float, work: Path) -> dict:
    out = work / f"runs-{time.time_ns()}"
    env = {**os.environ, "VISIONTUNE_QUIET": "1", "VISIONTUNE_HOME": str(work / "home")}
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe nobody reads while the run goes on
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "visiontune", "train", str(data), "--size", str(size),
                                 "--out", str(out)], stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
        when = None
        while proc.poll() is None:
            if when is None and reached(log_rows(out), target):
                when = time.perf_counter() - t0
            time.sleep(0.1)
        total = time.perf_counter() - t0
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"visiontune train failed:\n{err.read()[-3000:]}")
    rows = log_rows(out)
    if when is None and reached(rows, target):
        when = total  # the last epoch reached it between two polls of a finishing process
    return {"time_to_target_s": when, "total_s": total, "epochs": len(rows),
            "accuracies": [float(r["accuracy"]) for r in rows]}


def fastai_run(data: Path, size: int, venv: Path, epochs: int = 1) -> dict:
    r = subprocess.run([str(venv / "bin" / "python"), str(HERE / "fastai_peer.py"), str(data), "--size", str(size),
                        "--bs", "64", "--epochs", str(epochs), "--measure", "fine_tune"],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"fastai failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    epochs = res.get("frozen_epochs", []) + res.get("unfrozen_epochs", [])
    return {"time_to_target_s": res.get("time_to_0.97_s"), "total_s": res.get("total_s"), "epochs": len(epochs),
            "accuracies": [e.get("accuracy") for e in epochs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--target", type=float, default=0.97)
    p.add_argument("--fastai-venv", type=Path, default=Path("/tmp/vt-bench-fastai-venv"))
    p.add_argument("--fastai-epochs", type=int, default=1,
                   help="fine_tune(N): the docs' fine_tune(1) may never reach the target; N > 1 gives it more epochs")
    a = p.parse_args()
    if a.target != 0.97:
        raise SystemExit("fastai_peer.py reports time to 0.97 only")
    work = Path(tempfile.mkdtemp(prefix="vt-bench-tta-"))
    runs: dict[str, list] = {"visiontune": [], "fastai": []}
    for i in range(a.rounds):
        for tool in runs:
            r = visiontune_run(a.data, a.size, a.target, work) if tool == "visiontune" else \
                fastai_run(a.data, a.size, a.fastai_venv, a.fastai_epochs)
            runs[tool].append(r)
            print(f"round {i + 1} {tool}: {r}", file=sys.stderr, flush=True)

    def med(tool):
        vals = [r["time_to_target_s"] for r in runs[tool]]
        return statistics.median(vals) if all(v is not None for v in vals) else None

    report = {"command": "python -m bench.time_to_accuracy " + " ".join(sys.argv[1:]), "target": a.target,
              "median_s": {t: med(t) for t in runs}, "runs": runs}
    out = HERE / "results" / f"time-to-acc-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["median_s"]), out.name)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Folded BatchNorm for inference: speed and numerics, in one process, at 224 px.

    python bench/fold_bn.py DATA [--size 224] [--bs 64] [--rounds 4]

DATA is an ImageNet-style folder (DATA/train|valid/<class>/*). Builds a Learner (embedded Lite0, untrained
head unless --fine-tune), warms up with one get_preds, then, A B C per round:
  get_preds   learn.get_preds() over DATA/valid (loader, normalization and the folded copy: what users run)
  eager       a bare loop of learn.model over the same batches, pre-made (the model as defined)
  folded      the same loop over fold_batchnorm(learn.model) (visiontune/models/fold.py)
  folded_normalizing  the folded loop over the uint8 batches, normalized in the loop as the loader does
                      (what get_preds adds on top: reading the cache, resizing, stacking, the DataLoader)
and reports images/s and minor page faults per round and the median, plus the largest difference between the
two models' logits.
Prints ONE JSON line; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch

import visiontune as vt
from visiontune.models.fold import fold_batchnorm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--fine-tune", action="store_true", help="first fine_tune(1) as the suite does (trained weights)")
    a = p.parse_args()
    torch.set_num_threads(2)
    learn = vt.vision_learner(vt.ImageData.from_folder(a.data, size=a.size, bs=a.bs), device="cpu")
    if a.fine_tune:
        learn.fine_tune(1)
    learn.get_preds()
    batches = [x.clone() for x, _ in learn.dl("valid", augment=False)]
    raw = [x.clone() for x, *_ in learn.data.loader("valid", bs=a.bs, augment=False, device="cpu")]
    normalize = learn.dl("valid", augment=False).normalize
    n = sum(len(x) for x in batches)
    learn.model.eval()
    folded = fold_batchnorm(learn.model, batches[0])
    with torch.inference_mode():
        want = torch.cat([learn.model(x) for x in batches])
        got = torch.cat([folded(x) for x in batches])

    def bare(model):
        def run():
            with torch.inference_mode():
                for x in batches:
                    model(x)
        return run

    def normalized():
        with torch.inference_mode():
            for x in raw:
                folded(normalize(x))

    paths = {"get_preds": learn.get_preds, "eager": bare(learn.model), "folded": bare(folded),
             "folded_normalizing": normalized}
    runs: dict = {k: [] for k in paths}
    faults: dict = {k: [] for k in paths}
    for r in range(a.rounds):
        for k, fn in paths.items():
            f0, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            fn()
            runs[k].append(n / (time.perf_counter() - t))
            faults[k].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        figures = (f"{k} {v[-1]:.0f} img/s ({faults[k][-1]} faults)" for k, v in runs.items())
        print(f"round {r + 1}: " + ", ".join(figures), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({
        "size": a.size, "bs": a.bs, "fine_tune": a.fine_tune, "n": n, "torch": torch.__version__, "img_s_median": med,
        "img_s_runs": {k: [round(x, 1) for x in v] for k, v in runs.items()}, "minor_faults": faults,
        "folded_vs_eager": med["folded"] / med["eager"], "get_preds_vs_folded": med["get_preds"] / med["folded"],
        "get_preds_vs_eager": med["get_preds"] / med["eager"],
        "normalizing_vs_folded": med["folded_normalizing"] / med["folded"],
        "max_abs_logit_diff": (want - got).abs().max().item(), "max_abs_logit": want.abs().max().item(),
        "batchnorms": sum(isinstance(m, torch.nn.BatchNorm2d) for m in learn.model.modules()),
        "batchnorms_left": sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()),
    }))


if __name__ == "__main__":
    main()

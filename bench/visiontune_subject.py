#!/usr/bin/env python3
"""Time visiontune on an image folder with the same recipe as bench/fastai_peer.py: the subject of the suite.

    python bench/visiontune_subject.py DATA [--size 64] [--bs 64] [--epochs 2] [--base-lr 2e-3] [--threads 2]
        [--measure lr_find,precompute,fine_tune,get_preds,tta,predict] [--no-aug]

Same backbone (EfficientNet-Lite0, embedded weights), size, batch size, epochs, learning rates and thread
count as the peer; augmentation `side_on` stands for fastai's `aug_transforms()` (flip, rotate, zoom, warp,
lighting). Prints ONE JSON line with the peer's keys (see fastai_peer.py), plus:
  precompute_build_s      cold build of the activation cache (train + valid)
  precompute_epoch_s      median head epoch on cached activations (train + validation)
  predict_img_s           DATA/test1's new JPEGs predicted by `predict_files` (what `visiontune predict`
                          runs), decoding included (median of --infer-repeats; skipped without test1/)
"""
import time

T0 = time.perf_counter()

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

MEASURES = ("lr_find", "precompute", "fine_tune", "get_preds", "tta", "predict")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--freeze-epochs", type=int, default=1)
    p.add_argument("--base-lr", type=float, default=2e-3)
    p.add_argument("--lr-mult", type=float, default=100)
    p.add_argument("--lr-find-iters", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--no-aug", action="store_true")
    p.add_argument("--infer-repeats", type=int, default=3)
    p.add_argument("--measure", default=",".join(MEASURES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-scale", type=float, default=1.0,
                   help="random-resized crop's smallest area: 1.0 (the default here) = no crop, as the peer's "
                        "Resize + aug_transforms(); visiontune's own default is 0.5")
    p.add_argument("--two-group-lrs", action="store_true",
                   help="fine_tune with fastai's lrs for timm models: the whole body at base_lr/lr_mult")
    p.add_argument("--adapt-bn", action="store_true",
                   help="freeze_bn_stats=False: frozen BatchNorm layers update their statistics, as in fastai")
    p.add_argument("--wait-quiet", type=float, default=0)
    a = p.parse_args()
    a.measure = a.measure.split(",")
    return a


ARGS = parse_args()
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import (CpuWatch, cpu_times, machine_info, peak_rss_mb, peak_rss_since_reset_mb,  # noqa: E402
                      phase_figures, reset_peak_rss, time_to_accuracy, timed, wait_for_quiet)  # noqa: E402

WAITED_S = wait_for_quiet(ARGS.wait_quiet) if ARGS.wait_quiet else 0.0
if ARGS.wait_quiet:
    T0 = time.perf_counter()
WATCH = CpuWatch().__enter__()
MACHINE = machine_info()
os.environ.setdefault("VISIONTUNE_HOME", tempfile.mkdtemp(prefix="vt-bench-home-"))  # cold caches
os.environ.setdefault("VISIONTUNE_QUIET", "1")

import visiontune as vt  # noqa: E402

IMPORT_S = time.perf_counter() - T0

import torch  # noqa: E402
from visiontune.train import Callback  # noqa: E402


class FirstBatch:
    """When the first training batch reaches the model (lr_find included: it runs without callbacks, so this
    is a forward pre-hook on the model, not a callback; fastai's lr_find does run callbacks)."""

    def __init__(self):
        self.at = None
        self._handle = None

    def attach(self, model) -> None:
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        if module.training and self.at is None:
            self.at = time.perf_counter() - T0
            self._handle.remove()


class EpochTimer(Callback):
    """Train and validation seconds of each epoch, per fit (lr_find is a fit of the same loop, which this
    callback sits out, as the recorder does: `records = True`)."""

    order = -30
    records = True

    def __init__(self):
        self.fits, self.peaks = [], []

    def before_fit(self):
        self.fits.append([])
        reset_peak_rss()

    def after_fit(self):
        self.peaks.append(peak_rss_since_reset_mb())

    def before_epoch(self):
        self._watch = CpuWatch().__enter__()
        self._cpu = cpu_times()
        self._t0 = time.perf_counter()

    def before_validate(self):
        self._t1 = time.perf_counter()

    def after_epoch(self):
        t2 = time.perf_counter()
        self._watch.__exit__(None, None, None)
        user, sys_ = (b - a for a, b in zip(self._cpu, cpu_times()))
        self.fits[-1].append({"train_s": self._t1 - self._t0, "valid_s": t2 - self._t1,
                              "foreign_cpu": self._watch.foreign_cpu, "user_s": user, "sys_s": sys_,
                              "accuracy": self.learn.last_metrics.get("accuracy")})


def accuracy_of(probs, targs):
    return (probs.argmax(1) == targs).float().mean().item()


def make(a, first=None, precompute=False):
    from visiontune.runs.recipe import seed_everything

    seed_everything(a.seed)
    data = vt.ImageData.from_folder(a.data, size=a.size, bs=a.bs, seed=a.seed, num_workers=a.num_workers,
                                    augment=None if a.no_aug else "side_on",
                                    min_scale=a.min_scale)
    learn = vt.vision_learner(data, "efficientnet_lite0", precompute=precompute, freeze_bn_stats=not a.adapt_bn)
    if first is not None:
        first.attach(learn.model)
    return learn


def fine_tune(learn, a, timer) -> None:
    """learn.fine_tune, or with --two-group-lrs the same recipe with fastai's lrs for a timm model: fastai
    splits it into 2 groups (body, head), so the whole body gets base_lr/lr_mult; ours has 3 (early body,
    late body, head) and slice() gives the late body 10x more."""
    if not a.two_group_lrs:
        return learn.fine_tune(a.epochs, base_lr=a.base_lr, freeze_epochs=a.freeze_epochs, lr_mult=a.lr_mult,
                               cbs=[timer])
    learn.freeze()
    learn.fit_one_cycle(a.freeze_epochs, slice(a.base_lr), pct_start=0.99, cbs=[timer])
    hi = a.base_lr / 2
    learn.unfreeze()
    learn.fit_one_cycle(a.epochs, [hi / a.lr_mult, hi / a.lr_mult, hi], pct_start=0.3, div=5.0, cbs=[timer])


def run(a) -> dict:
    torch.set_num_threads(a.threads)
    first, timer = FirstBatch(), EpochTimer()
    learn = make(a, first)
    ready_s = time.perf_counter() - T0
    n_train = len(learn.data.train_ds) // a.bs * a.bs
    n_valid = len(learn.data.valid_ds)
    res = {"num_workers": learn.data.default_workers(learn.device), "n_train_per_epoch": n_train, "n_valid": n_valid,
           "ready_s": ready_s}

    if "lr_find" in a.measure:
        reset_peak_rss()
        secs, _, foreign, r = timed(lambda: learn.lr_find(num_it=a.lr_find_iters))
        res["lr_find_peak_rss_mb"] = peak_rss_since_reset_mb()
        res.update(lr_find_s=secs, lr_find_foreign_cpu=foreign[0], lr_find_iters=len(r.lrs), lr_find_valley=r.valley)

    if "precompute" in a.measure:
        pre = make(a, precompute=True)
        secs, _, foreign, _ = timed(lambda: (pre.dl("train"), pre.dl("valid")))
        ptimer = EpochTimer()
        pre.fit_one_cycle(3, slice(a.base_lr), cbs=[ptimer])
        res.update(precompute_build_s=secs, precompute_build_foreign_cpu=foreign[0],
                   precompute_acc_3_epochs=pre.recorder.last["accuracy"])
        res.update(phase_figures("precompute", ptimer.fits[0], n_train))

    if "fine_tune" in a.measure:
        res["fine_tune_s"] = timed(lambda: fine_tune(learn, a, timer))[0]
        frozen, unfrozen = (timer.fits + [[], []])[:2]
        res["frozen_peak_rss_mb"], res["unfrozen_peak_rss_mb"] = (timer.peaks + [None, None])[:2]
        res.update(time_to_accuracy(res["ready_s"], frozen + unfrozen))
        res.update(phase_figures("frozen", frozen, n_train))
        res.update(phase_figures("unfrozen", unfrozen, n_train))
        res["final_valid_acc"] = learn.recorder.last["accuracy"]

    if "get_preds" in a.measure:
        reset_peak_rss()
        learn.get_preds()  # the valid loader's first pass also fills the image cache
        med, runs, foreign, (p, t) = timed(learn.get_preds, a.infer_repeats)
        res.update(get_preds_s=med, get_preds_runs_s=runs, get_preds_foreign_cpu=foreign,
                   get_preds_peak_rss_mb=peak_rss_since_reset_mb(), get_preds_img_s=n_valid / med,
                   get_preds_acc=accuracy_of(p, t))

    if "tta" in a.measure and hasattr(learn, "tta"):
        reset_peak_rss()
        med, runs, foreign, (p, t) = timed(learn.tta, a.infer_repeats)
        res.update(tta_s=med, tta_runs_s=runs, tta_foreign_cpu=foreign, tta_peak_rss_mb=peak_rss_since_reset_mb(),
                   tta_img_s=n_valid / med,
                   tta_acc=accuracy_of(p, t))

    test_dir = a.data / "test1"
    if "predict" in a.measure and test_dir.is_dir():
        from visiontune.infer.batch import predict_files

        reset_peak_rss()
        med, runs, foreign, fp = timed(lambda: predict_files(learn, [test_dir]), a.infer_repeats)
        n = len(fp.probs)
        res.update(predict_s=med, predict_runs_s=runs, predict_foreign_cpu=foreign, n_predict=n,
                   predict_img_s=n / med, predict_peak_rss_mb=peak_rss_since_reset_mb())

    res["first_batch_s"] = first.at
    return res


def main():
    a = ARGS
    out = {"tool": "visiontune", "visiontune": vt.__version__, "torch": str(torch.__version__),
           "arch": "efficientnet_lite0", "data": str(a.data), "size": a.size, "bs": a.bs, "epochs": a.epochs,
           "freeze_epochs": a.freeze_epochs, "base_lr": a.base_lr, "lr_mult": a.lr_mult, "threads": a.threads,
           "aug": "none" if a.no_aug else f"side_on, min_scale={a.min_scale}", "measure": a.measure, "seed": a.seed,
           "waited_for_quiet_s": WAITED_S, "import_s": IMPORT_S, **MACHINE}
    out.update(run(a))
    out["total_s"] = time.perf_counter() - T0
    out.update(peak_rss_mb())
    WATCH.__exit__(None, None, None)
    out["foreign_cpu"] = WATCH.foreign_cpu
    print(json.dumps(out))


if __name__ == "__main__":
    main()

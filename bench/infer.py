#!/usr/bin/env python3
"""Inference throughput of visiontune's predict path vs a bare PyTorch loop and onnxruntime; TTA's effect.

    python bench/infer.py DATA [--size 64] [--bs 64] [--repeats 5] [--model model.vt] [--out DIR] [--default-malloc]

DATA is an ImageNet-style folder (DATA/train/<class>/*, DATA/valid/<class>/*), e.g. what
/work/shared/bench/make_fmnist.py writes. Without --model, a quick model is trained first (embedded
Lite0, augment side_on: 3 epochs on precomputed activations, then 1 epoch on augmented images with the
body frozen) and exported to OUT/model.vt. Then, interleaved over --repeats rounds, on DATA/valid:

  bare_*        the model's forward over pre-made, pre-normalized tensors in batches of --bs under
                inference_mode (channels_last, as the library runs it, and contiguous; bare_folded: the
                channels_last loop over the model with its BatchNorms folded, as the library's torch
                path now runs it): the ceiling is the fastest of them
  library       `predict_files` (what `visiontune predict` runs): finds the files, decodes, resizes,
                normalizes, runs the model, collects rows
  cli_total     `python -m visiontune predict MODEL DATA/valid --csv ...` wall time, process start,
                imports and model load included; cli_loop is the predict loop as the command reports it
  onnxruntime   the exported ONNX model (uint8 in, probabilities out) over the same pre-made images
  library_onnx  `predict_files(..., backend="onnx")` (`visiontune predict --backend onnx`): the library path
                with decoding, the model run by onnxruntime (its graph cached before the rounds)
  pipeline_*    the input pipeline alone (no model), batched as the library runs it and image by image

glibc's malloc is tuned in this process as `visiontune predict` tunes its own (visiontune/_core/allocator.py),
so every in-process figure, the ceiling included, gets the same allocator; --default-malloc leaves it as is.

Prints ONE JSON line (medians, all runs, ratios to the channels_last ceiling, foreign CPU load);
progress goes to stderr. It imports (and runs the CLI of) the visiontune of the checkout it sits in.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # _machine.py, and this checkout's visiontune
from _machine import CpuWatch, machine_info, peak_rss_mb  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import visiontune as vt  # noqa: E402
from visiontune.infer import files_dataset, predict_files  # noqa: E402
from visiontune.infer.predict import image_loader, item_to_tensor, prepare_batch  # noqa: E402
from visiontune.models.fold import fold_batchnorm  # noqa: E402


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def train_quick_model(data_dir: Path, size: int, bs: int, out: Path) -> tuple[Path, dict]:
    data = vt.ImageData.from_folder(data_dir, size=size, bs=bs, augment="side_on")
    learn = vt.vision_learner(data, precompute=True)
    t = time.perf_counter()
    learn.fit_one_cycle(3, 1e-2)
    learn.precompute = False
    learn.fit_one_cycle(1, 1e-3)
    info = {"train_s": round(time.perf_counter() - t, 1), **learn.validate()}
    log(f"trained in {info['train_s']} s: {info}")
    return learn.export(out / "model.vt"), info


def tta_accuracy(learn, valid: Path, targets: torch.Tensor) -> dict:
    """Accuracy on the valid folder: plain, and TTA at n=4 and n=8 (fastai's beta=0.25, scale=1.1)."""
    out = {}
    t = time.perf_counter()
    plain, _ = learn.get_preds(valid)
    out["plain_acc"] = (plain.argmax(1) == targets).float().mean().item()
    out["plain_s"] = round(time.perf_counter() - t, 2)
    for n in (4, 8):
        t = time.perf_counter()
        probs, _ = learn.tta(valid, n=n)
        out[f"tta{n}_acc"] = (probs.argmax(1) == targets).float().mean().item()
        out[f"tta{n}_s"] = round(time.perf_counter() - t, 2)
    log(f"accuracy: {out}")
    return out


def bare_loop(model, x: torch.Tensor, bs: int) -> float:
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), bs):
            model(x[i:i + bs])
    return time.perf_counter() - t


def pipeline(learn, files: list, bs: int, per_item: bool) -> float:
    """The input pipeline alone (decode, resize, normalize; no model): batched as the library runs it, or
    image by image through the plain ImageDataset path (`per_item`), for comparison."""
    t = time.perf_counter()
    ds = files_dataset(learn.data, files)
    if per_item:
        ds = ds.with_transform(ds.transform)  # a plain ImageDataset: one image at a time
    for _ in image_loader(learn, ds, bs).iter_with_index():
        pass
    return time.perf_counter() - t


def ort_loop(session, x: np.ndarray, bs: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(x), bs):
        session.run(["probs"], {"images": x[i:i + bs]})
    return time.perf_counter() - t


def library(learn, valid: Path, bs: int, backend: str = "torch") -> float:
    t = time.perf_counter()
    preds = predict_files(learn, [valid], bs=bs, backend=backend)
    s = time.perf_counter() - t
    assert preds.n_ok == len(preds), "every valid image should be predicted"
    return s


def cli(model: Path, valid: Path, bs: int, out: Path) -> tuple[float, float]:
    env = {**os.environ, "VISIONTUNE_QUIET": "0"}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "visiontune", "predict", str(model), str(valid), "--csv",
                        str(out / "preds.csv"), "--bs", str(bs)], capture_output=True, text=True, env=env, cwd=REPO)
    total = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    m = re.search(r" in ([\d.]+)s", r.stderr)
    return total, float(m.group(1)) if m else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", type=Path, default=None, help="an exported model.vt (skips training)")
    p.add_argument("--out", type=Path, default=Path("/tmp/vt-bench-infer"))
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc as it is in this process (the CLI subprocess still tunes its own)")
    a = p.parse_args()
    from visiontune._core.allocator import keep_freed_memory

    tuned = False if a.default_malloc else keep_freed_memory()
    a.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VISIONTUNE_QUIET", "1")
    valid = a.data / "valid"
    result: dict = {"tool": "bench/infer.py", "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "size": a.size, "bs": a.bs, "repeats": a.repeats, "malloc_tuned_in_process": tuned,
                    **machine_info()}

    with CpuWatch() as w_train:
        if a.model is None:
            model_path, result["training"] = train_quick_model(a.data, a.size, a.bs, a.out)
        else:
            model_path = a.model
    learn = vt.load_learner(model_path, device="cpu")
    assert learn.data.size == a.size, f"{model_path} was trained at size {learn.data.size}"
    classes = learn.data.classes
    files = sorted(f for f in valid.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    targets = torch.tensor([classes.index(f.parent.name) for f in files])
    with CpuWatch() as w_tta:
        result["accuracy"] = tta_accuracy(learn, valid, targets)
    result["foreign_cpu_training_and_tta"] = [w_train.foreign_cpu, w_tta.foreign_cpu]

    images = torch.stack([item_to_tensor(f, a.size, learn.data.presize) for f in files])  # uint8, decoded once
    x_cl = prepare_batch(learn, list(images))  # normalized, channels_last like the library
    x_contig = x_cl.contiguous()
    model = learn.model.eval()
    contig_model = vt.load_learner(model_path, device="cpu").model.eval().to(memory_format=torch.contiguous_format)
    folded = fold_batchnorm(model, x_cl[: a.bs])
    import onnxruntime as ort

    onnx_path = learn.export_onnx(a.out / "model.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    u8 = images.numpy()

    # warm-up: allocator, kernels, the file system cache
    bare_loop(model, x_cl[:2 * a.bs], a.bs), bare_loop(contig_model, x_contig[:2 * a.bs], a.bs)
    bare_loop(folded, x_cl[:2 * a.bs], a.bs)
    ort_loop(session, u8[:2 * a.bs], a.bs)
    library(learn, valid, a.bs)
    library(learn, valid, a.bs, backend="onnx")

    names = ("bare_channels_last", "bare_contiguous", "bare_folded", "library", "library_onnx", "onnxruntime",
             "cli_total", "cli_loop", "pipeline_batched", "pipeline_per_item")
    runs: dict[str, list[float]] = {k: [] for k in names}
    foreign = []
    with CpuWatch() as w:
        for r in range(a.repeats):
            with CpuWatch() as wr:
                runs["bare_channels_last"].append(bare_loop(model, x_cl, a.bs))
                runs["bare_contiguous"].append(bare_loop(contig_model, x_contig, a.bs))
                runs["bare_folded"].append(bare_loop(folded, x_cl, a.bs))
                runs["library"].append(library(learn, valid, a.bs))
                runs["library_onnx"].append(library(learn, valid, a.bs, backend="onnx"))
                runs["onnxruntime"].append(ort_loop(session, u8, a.bs))
                total, loop = cli(model_path, valid, a.bs, a.out)
                runs["cli_total"].append(total)
                runs["cli_loop"].append(loop)
                runs["pipeline_batched"].append(pipeline(learn, files, a.bs, per_item=False))
                runs["pipeline_per_item"].append(pipeline(learn, files, a.bs, per_item=True))
            foreign.append(wr.foreign_cpu)
            log(f"round {r + 1}/{a.repeats} (foreign cpu {wr.foreign_cpu}): "
                + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in runs.items()))
    # Other people's jobs on a shared 2-core machine slow 2-thread PyTorch many times over. Medians are taken over
    # the rounds in which other processes used under 10% of the CPU when there are at least 3 of them (all rounds
    # stay in runs_s, with their foreign_cpu); otherwise over all rounds.
    quiet = [i for i, f in enumerate(foreign) if f is not None and f < 0.1]
    keep = quiet if len(quiet) >= 3 else list(range(a.repeats))
    runs_all, runs = runs, {k: [v[i] for i in keep] for k, v in runs.items()}
    n = len(files)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result.update({
        "rounds_in_medians": [i + 1 for i in keep],
        "foreign_cpu_per_round": foreign,
        "n_images": n,
        "seconds_median": {k: round(v, 3) for k, v in med.items()},
        "images_per_s_median": {k: round(n / v, 1) for k, v in med.items()},
        "ratio_to_bare_channels_last": {k: round(med["bare_channels_last"] / v, 3) for k, v in med.items()},
        "ratio_to_bare_folded": {k: round(med["bare_folded"] / v, 3) for k, v in med.items()},
        # Ratios within each round (side by side), then their median: less sensitive to load drifting across rounds.
        "library_over_bare_per_round_median": round(statistics.median(
            b / l for b, l in zip(runs["bare_channels_last"], runs["library"])), 3),
        "runs_s": {k: [round(s, 3) for s in v] for k, v in runs_all.items()},
        "foreign_cpu": w.foreign_cpu,
        **peak_rss_mb(),
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Images/second of a train-epoch data pass (no model) with the image cache off vs warm, side by side.

    python bench/data_cache.py --fmnist /tmp/fmnist --jpegs /tmp/vt-jpegs [--repeats 5] [--augment none]

--fmnist: an ImageNet-style folder, e.g. `python /work/shared/bench/make_fmnist.py /tmp/fmnist`
(5,000 train images, 28x28 PNG), timed at --fmnist-size (64).
--jpegs: a folder of generated 500x375 JPEGs (made here if it does not exist: --n-jpegs, default 1,000,
random crops, flips and colour shifts of scikit-image's bundled real photos), timed at --jpeg-size (224).

For each data set: a fresh cache folder; the cold pass (decode + write the cache) is timed once;
then --repeats rounds, each timing one epoch with the cache off and one with it warm, alternating,
so both see the same machine load. An epoch = iterating `data.loader("train")` (shuffled, uint8
batches of --bs, the chosen augmentation, the default number of loader workers), nothing else.
Prints one JSON line (medians, ratio of medians, per-round figures, foreign CPU load) on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("VISIONTUNE_QUIET", "1")

from _machine import CpuWatch, machine_info  # noqa: E402

import visiontune as vt  # noqa: E402


def make_jpegs(out: Path, n: int, seed: int = 0) -> None:
    """n 500x375 JPEGs in out/train/<photo>/ and a few in out/valid/: real photo content, varied."""
    import skimage.data as sd

    photos = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera"):
        try:
            arr = getattr(sd, name)()
        except Exception:  # noqa: BLE001  some need a download; the bundled ones suffice
            continue
        im = Image.fromarray(arr).convert("RGB")
        photos[name] = im.resize((max(560, im.width), max(420, im.height)), Image.BICUBIC)
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    names = sorted(photos)
    for i in range(n + 2 * len(names)):
        name = names[i % len(names)]
        im = photos[name]
        scale = rng.uniform(1.0, 1.6)
        w, h = int(500 * scale), int(375 * scale)
        w, h = min(w, im.width), min(h, im.height)
        x, y = rng.integers(0, im.width - w + 1), rng.integers(0, im.height - h + 1)
        crop = im.crop((x, y, x + w, y + h)).resize((500, 375), Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.clip(np.asarray(crop, np.float32) * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        split = "train" if i < n else "valid"
        d = tmp / split / name
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(d / f"{i:05d}.jpg", quality=90)
    os.replace(tmp, out)


def epoch(data: vt.ImageData, k: int) -> tuple[float, int]:
    """Seconds and images of one train epoch through the loader (its creation fills the cache)."""
    t0 = time.perf_counter()
    dl = data.loader("train")
    dl.sampler.set_epoch(k)
    n = 0
    for x, _, _ in dl:
        n += len(x)
    return time.perf_counter() - t0, n


def measure(path: Path, size: int, bs: int, augment: str | None, repeats: int) -> dict:
    cache_dir = Path(tempfile.mkdtemp(prefix="vt-bench-cache-"))
    try:
        off = vt.ImageData.from_folder(path, size=size, bs=bs, augment=augment, cache="off")
        warm = vt.ImageData.from_folder(path, size=size, bs=bs, augment=augment, cache=cache_dir)
        cold_s, n = epoch(warm, 0)  # the loader builds the cache (each image decoded once), then reads it
        rounds = []
        for k in range(1, repeats + 1):
            with CpuWatch() as w_off:
                s_off, n_off = epoch(off, k)
            with CpuWatch() as w_warm:
                s_warm, n_warm = epoch(warm, k)
            rounds.append({"off_img_s": round(n_off / s_off, 1), "warm_img_s": round(n_warm / s_warm, 1),
                           "foreign_cpu_off": w_off.foreign_cpu, "foreign_cpu_warm": w_warm.foreign_cpu})
            print(f"  {path.name} round {k}: off {n_off / s_off:,.0f} img/s, warm {n_warm / s_warm:,.0f} img/s",
                  file=sys.stderr)
        med_off = statistics.median(r["off_img_s"] for r in rounds)
        med_warm = statistics.median(r["warm_img_s"] for r in rounds)
        cache_bytes = sum(p.stat().st_size for p in cache_dir.rglob("seg-*.bin"))
        return {
            "data": str(path), "train_images": len(off.train_ds), "size": size, "presize": off.presize, "bs": bs,
            "augment": augment, "loader_workers": off.default_workers(), "images_per_epoch": n,
            "cold_epoch_img_s": round(n / cold_s, 1), "cold_epoch_s": round(cold_s, 2),
            "median_off_img_s": med_off, "median_warm_img_s": med_warm, "ratio_warm_over_off": round(med_warm / med_off, 2),
            "cache_mb": round(cache_bytes / 2**20, 1), "rounds": rounds,
        }
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fmnist", type=Path, default=Path("/tmp/fmnist"))
    p.add_argument("--fmnist-size", type=int, default=64)
    p.add_argument("--jpegs", type=Path, default=Path("/tmp/vt-jpegs"))
    p.add_argument("--n-jpegs", type=int, default=1000)
    p.add_argument("--jpeg-size", type=int, default=224)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--augment", default="none", choices=["none", "side_on", "top_down"])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    augment = None if args.augment == "none" else args.augment
    if not args.jpegs.exists():
        print(f"making {args.n_jpegs} JPEGs in {args.jpegs}", file=sys.stderr)
        make_jpegs(args.jpegs, args.n_jpegs)
    out = {"bench": "data_cache", "machine": machine_info(), "results": []}
    for path, size in ((args.fmnist, args.fmnist_size), (args.jpegs, args.jpeg_size)):
        if not path.exists():
            print(f"skipping {path}: not found", file=sys.stderr)
            continue
        out["results"].append(measure(path, size, args.bs, augment, args.repeats))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

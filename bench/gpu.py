#!/usr/bin/env python3
"""Training and inference images/second of visiontune's loop vs a bare PyTorch loop, same model, same
synthetic uint8 batches already in memory (no decoding): what the library's loop costs on a GPU.

    python bench/gpu.py [--arch resnet34,efficientnet_lite0] [--size 224] [--bs 128] [--steps 50] [--device cuda]

Both loops use mixed precision (bf16 where supported, else fp16 + GradScaler), channels_last and the
same optimizer (AdamW); the bare loop normalizes on the device exactly as the library does. Prints one
JSON line per (arch, mode) and a markdown table. The aim: library >= 90% of the bare loop.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

os.environ.setdefault("VISIONTUNE_QUIET", "1")


class MemoryImages(Dataset):
    """n random uint8 images of one size, returned as (image, target, index) like ImageDataset."""

    def __init__(self, n: int, size: int, c: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        self.y = torch.randint(0, c, (n,), generator=g)
        self.targets = self.y.numpy()
        self.is_labelled = True

    def __len__(self):
        return len(self.x)

    def __getitems__(self, idx):
        i = torch.as_tensor(idx)
        return [(self.x[i], self.y[i], i)]

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


class MemoryData:
    """The data interface the Learner uses, over in-memory tensors (so only the loop is measured)."""

    def __init__(self, n: int, size: int, bs: int, c: int = 10):
        self.ds = MemoryImages(n, size, c)
        self.bs, self.size, self.path, self.seed = bs, size, None, 0
        self.classes = [str(i) for i in range(c)]
        self.c, self.is_multi_label = c, False

    def dataset(self, ds):
        return self.ds

    def loader(self, ds="train", bs=None, augment=True, device="cpu", shuffle=None, **kw):
        from visiontune.data.loader import EpochSampler

        train = ds == "train"
        return DataLoader(self.ds, batch_size=bs or self.bs, sampler=EpochSampler(len(self.ds), train),
                          drop_last=train, collate_fn=lambda b: b[0], pin_memory=torch.device(device).type == "cuda")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_train(model, x_all, y_all, bs, steps, device, amp_dtype, mean, std):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    model.train()
    n = len(x_all) // bs

    def step(i):
        xb = x_all[(i % n) * bs:(i % n + 1) * bs].to(device, non_blocking=True)
        yb = y_all[(i % n) * bs:(i % n + 1) * bs].to(device, non_blocking=True)
        xb = ((xb.float() / 255 - m) / s).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = nn.functional.cross_entropy(model(xb).float(), yb)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(5):
        step(i)
    sync(device)
    t = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    loss.item()
    sync(device)
    return steps * bs / (time.perf_counter() - t)


def bare_infer(model, x_all, bs, steps, device, amp_dtype, mean, std):
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    model.eval()
    n = len(x_all) // bs
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for i in range(3):
            model(((x_all[:bs].to(device).float() / 255 - m) / s).contiguous(memory_format=torch.channels_last))
        sync(device)
        t = time.perf_counter()
        for i in range(steps):
            xb = x_all[(i % n) * bs:(i % n + 1) * bs].to(device, non_blocking=True)
            out = model(((xb.float() / 255 - m) / s).contiguous(memory_format=torch.channels_last))
        out.float().softmax(1).cpu()
        sync(device)
    return steps * bs / (time.perf_counter() - t)


def library(arch, data, steps, device, mode):
    import visiontune as vt
    from visiontune.train import Callback

    class TrainTimer(Callback):
        """Seconds and images of the training part of each epoch (validation excluded)."""

        def __init__(self):
            self.seconds, self.images = 0.0, 0

        def before_train(self):
            sync(device)
            self._t = time.perf_counter()

        def after_batch(self):
            if self.learn.training:
                self.images += self.learn.batch_size

        def after_train(self):
            sync(device)
            self.seconds += time.perf_counter() - self._t

    learn = vt.vision_learner(data, arch, pretrained=False, device=device)
    learn.unfreeze()
    if mode == "train":
        learn.fit(1e-4, 1)  # warm-up epoch (cudnn autotuning, allocator)
        timer = TrainTimer()
        learn.fit(1e-4, max(1, steps * data.bs // len(data.ds)), cbs=[timer])
        return timer.images / timer.seconds
    learn.get_preds()
    sync(device)
    t = time.perf_counter()
    learn.get_preds()
    sync(device)
    return len(data.ds) / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet34,efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--bs", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": str(torch.__version__), "amp": str(amp), "size": a.size, "bs": a.bs}
    print(json.dumps({"machine": info}), flush=True)
    rows = []
    for arch in a.arch.split(","):
        import visiontune as vt

        n = a.bs * a.steps
        data = MemoryData(n, a.size, a.bs)
        model = vt.models.create_model(arch, data.c, pretrained=False).to(device).to(memory_format=torch.channels_last)
        mean, std = model.backbone.mean, model.backbone.std
        bare_tr = bare_train(model, data.ds.x, data.ds.y, a.bs, a.steps, device, amp, mean, std)
        bare_inf = bare_infer(model, data.ds.x, a.bs, a.steps, device, amp, mean, std)
        del model
        lib_tr = library(arch, data, a.steps, device, "train")
        lib_inf = library(arch, data, a.steps, device, "infer")
        for mode, lib, bare in (("train", lib_tr, bare_tr), ("infer", lib_inf, bare_inf)):
            row = {"arch": arch, "mode": mode, "visiontune_img_s": round(lib), "bare_img_s": round(bare),
                   "fraction_of_bare": round(lib / bare, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| arch | mode | visiontune img/s | bare loop img/s | fraction |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['arch']} | {r['mode']} | {r['visiontune_img_s']} | {r['bare_img_s']} | {r['fraction_of_bare']:.0%} |")


if __name__ == "__main__":
    main()

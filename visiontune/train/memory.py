"""Host memory for training on the CPU: what a training step at a batch size needs, and what the machine has free.

On a GPU an out-of-memory error is an exception that `oom.py` recovers from; on the CPU the kernel's OOM killer
ends the process without a word. So before training the step's memory is estimated from two tiny training
steps (2 and 4 images, forward only): the bytes autograd keeps for the backward pass (every saved tensor,
counted once per storage) per image, plus the largest activation twice (the gradient being formed and the one it comes from), times
BACKWARD_EXTRA for the backward pass's other temporaries, with the whole body trainable (the unfrozen phase, the
larger one).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .._core.allocator import freed_bytes_held
from .._core.errors import bad_value

if TYPE_CHECKING:
    from .learner import Learner

MEMORY_ENV = "VISIONTUNE_MEMORY"  # e.g. "8G": plan batch sizes for at most this much free memory
BACKWARD_EXTRA = 1.2  # saved + 2 x largest was 0.85 of the measured peak growth (Lite0, 224 px, bs 8-64)
HEADROOM = 0.8  # plan for 80% of what is free: the page cache, the loader and other processes move
SURELY_ENOUGH = 400  # a step's bytes per image over its input's float bytes: Lite0 at 224 needs ~170


def parse_bytes(text: str) -> int:
    """'8G', '512M', '3.5GB', '1000000' -> bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise bad_value(MEMORY_ENV, text, "a size such as 8G or 512M")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def _cgroup_free() -> int | None:
    """Free memory under this process's cgroup v2 limit (a container's), None when unlimited or unknown."""
    try:
        line = Path("/proc/self/cgroup").read_text().splitlines()[0]
        base = Path("/sys/fs/cgroup") / line.split("::", 1)[1].lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text())
    except (OSError, IndexError, ValueError):
        return None


def free_memory_bytes() -> int | None:
    """Memory this process can still take: the least of MemAvailable, the cgroup's room and VISIONTUNE_MEMORY
    (the person's own cap); None when none of them is known (not Linux). Memory malloc holds freed for this
    process (an earlier fit's activations, see `keep_freed_memory`) counts as free: the next step reuses it."""
    found = []
    held = freed_bytes_held()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024 + held)
    except OSError:
        pass
    room = _cgroup_free()
    if room is not None:
        found.append(room + held)
    if os.environ.get(MEMORY_ENV):
        found.append(parse_bytes(os.environ[MEMORY_ENV]))
    return min(found) if found else None


def _step_bytes(learn: "Learner", n: int) -> int:
    """Bytes autograd saves for backward in a training step on `n` images, plus twice the largest activation."""
    model = learn.model
    x = torch.zeros(n, 3, learn.data.size, learn.data.size, device=learn.device)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}
    largest = 0

    def pack(t: torch.Tensor):
        nonlocal largest
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
            largest = max(largest, t.numel() * t.element_size())
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return sum(seen.values()) + 2 * largest


def step_memory(learn: "Learner") -> tuple[int, int]:
    """(bytes per image, bytes whatever the batch size) of a training step of the whole (unfrozen) model at the
    data's size: saved tensors times BACKWARD_EXTRA, from steps on 2 and 4 images, plus `weight_bytes`. Weights,
    BatchNorm statistics, requires_grad flags, each module's train/eval mode and the random state are put back as
    they were."""
    model = learn.model
    flags = [p.requires_grad for p in model.parameters()]
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    modes = [(m, m.training) for m in model.modules()]  # a frozen body's BatchNorm may sit in eval mode
    try:
        for p in model.parameters():
            p.requires_grad_(True)
        model.train()
        with torch.random.fork_rng(devices=[]):  # dropout draws here must not move the run's random stream
            two, four = _step_bytes(learn, 2), _step_bytes(learn, 4)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    per_image = max(four - two, 0) / 2
    constant = BACKWARD_EXTRA * max(two - 2 * per_image, 0)
    return int(BACKWARD_EXTRA * per_image), weight_bytes(learn) + int(constant)


def weight_bytes(learn: "Learner") -> int:
    """Gradients and optimizer state of every weight (Adam keeps two moments): memory a fit adds whatever the
    batch size."""
    weights = sum(p.numel() * p.element_size() for p in learn.model.parameters())
    return 3 * weights


def memory_batch_size(learn: "Learner", bs: int, free: int | None = None) -> tuple[int, int, int | None]:
    """(batch size, bytes a step at `bs` needs, bytes free): `bs` when it fits in HEADROOM of the free memory,
    else the largest power of two below it that does (at least 2). The bytes needed are 0 when the free memory
    is so ample that the step was not measured."""
    free = free_memory_bytes() if free is None else free
    if free is None or weight_bytes(learn) + bs * SURELY_ENOUGH * 3 * learn.data.size ** 2 * 4 <= HEADROOM * free:
        return bs, 0, free  # plenty: no need to measure (the probe costs two forward passes)
    per_image, fixed = step_memory(learn)
    need = fixed + bs * per_image
    if need <= HEADROOM * free:
        return bs, need, free
    fit = 2
    while fit * 2 < bs and fixed + fit * 2 * per_image <= HEADROOM * free:
        fit *= 2
    return fit, need, free

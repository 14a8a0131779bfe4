"""Optimizers over layer groups: AdamW (decoupled weight decay) or SGD with momentum, no weight decay
on BatchNorm and bias parameters, and learning rates given per layer group."""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import nn

from .._core.errors import ConfigError, bad_value

Lrs = Union[float, Sequence[float], slice]
_NORM = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """`n` values from start to stop in equal ratios (geometric spread)."""
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step**i for i in range(n)]


def lr_per_group(lrs: Lrs, n_groups: int) -> list[float]:
    """float -> the same for every group; list -> one per group; slice(lo, hi) -> geometric spread,
    slice(hi) -> hi/10 for all but the last group (fastai's meaning)."""
    if isinstance(lrs, slice):
        if lrs.stop is None:
            raise ConfigError("slice(lo, hi) needs hi.")
        if lrs.start is None:
            out = [lrs.stop / 10] * (n_groups - 1) + [lrs.stop]
        else:
            out = even_mults(lrs.start, lrs.stop, n_groups)
    elif isinstance(lrs, (list, tuple)):
        if len(lrs) != n_groups:
            raise ConfigError(
                f"Got {len(lrs)} learning rates for {n_groups} layer groups; pass one per group "
                f"(early body, late body, head), a single float, or slice(lo, hi)."
            )
        out = [float(x) for x in lrs]
    else:
        out = [float(lrs)] * n_groups
    if not all(math.isfinite(x) and x > 0 for x in out):
        raise ConfigError(f"Learning rates must be positive numbers, got {out}.")
    return out


def split_decay(modules: Sequence[nn.Module]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters with weight decay, norm-layer and bias parameters without)."""
    decay, no_decay, seen = [], [], set()
    for top in modules:
        for m in top.modules():
            for name, p in m.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                (no_decay if isinstance(m, _NORM) or name == "bias" or p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def build_optimizer(
    layer_groups: Sequence[Sequence[nn.Module]],
    opt: str = "adamw",
    lr: float = 1e-3,
    wd: float = 0.01,
    mom: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.99),
    eps: float = 1e-5,
) -> torch.optim.Optimizer:
    """One pair of param groups per layer group (decay, no-decay), each tagged with `layer_group`."""
    groups = []
    for i, g in enumerate(layer_groups):
        decay, no_decay = split_decay(g)
        groups.append({"params": decay, "weight_decay": wd, "layer_group": i, "lr": lr})
        groups.append({"params": no_decay, "weight_decay": 0.0, "layer_group": i, "lr": lr})
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=mom, weight_decay=wd)
    raise bad_value("opt", opt, "'adamw' or 'sgd'")


def set_hyper(optimizer: torch.optim.Optimizer, name: str, values: Sequence[float]) -> None:
    """Set `lr` or `mom` per layer group; `mom` is momentum for SGD and beta1 for Adam."""
    for pg in optimizer.param_groups:
        v = values[pg["layer_group"]]
        if name == "mom":
            if "betas" in pg:
                pg["betas"] = (v, pg["betas"][1])
            elif "momentum" in pg:
                pg["momentum"] = v
        else:
            pg[name] = v


def get_hyper(optimizer: torch.optim.Optimizer, name: str) -> list[float]:
    """Current `lr` or `mom` per layer group."""
    out: dict[int, float] = {}
    for pg in optimizer.param_groups:
        if name == "mom":
            v = pg["betas"][0] if "betas" in pg else pg.get("momentum", 0.0)
        else:
            v = pg[name]
        out.setdefault(pg["layer_group"], v)
    return [out[k] for k in sorted(out)]

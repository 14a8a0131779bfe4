"""Freezing layer groups, and the train mode that keeps frozen BatchNorm statistics as they are."""

from __future__ import annotations

from typing import Sequence

from torch import nn

BN = (nn.modules.batchnorm._BatchNorm,)


def freeze_groups(groups: Sequence[Sequence[nn.Module]], n: int, train_bn: bool = True) -> int:
    """Freeze groups [0, n) (negative n counts from the end) and return n; with `train_bn` the BatchNorm
    layers of frozen groups keep trainable weights (fastai's default)."""
    n = n % len(groups) if n < 0 else min(n, len(groups))
    for i, g in enumerate(groups):
        for m in g:
            for p in m.parameters():
                p.requires_grad_(i >= n)
    if train_bn:
        for g in groups[:n]:
            for m in _bn_layers(g):
                for p in m.parameters(recurse=False):
                    p.requires_grad_(True)
    return n


def set_train_mode(model: nn.Module, groups: Sequence[Sequence[nn.Module]], frozen_to: int,
                   freeze_bn_stats: bool = True) -> None:
    """model.train(), except that BatchNorm layers in frozen groups keep their running statistics (eval mode)
    when `freeze_bn_stats`: the frozen body then computes exactly the features it computes at validation time
    (and that precompute caches), which small batches would otherwise distort."""
    model.train()
    if freeze_bn_stats:
        for m in _bn_layers(m for g in groups[:frozen_to] for m in g):
            m.eval()


def _bn_layers(modules):
    for top in modules:
        for m in top.modules():
            if isinstance(m, BN):
                yield m

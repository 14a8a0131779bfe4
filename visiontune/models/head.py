"""The classifier head put on a pretrained body: fastai's concat-pool + two BN/dropout/linear blocks."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class AdaptiveConcatPool2d(nn.Module):
    """Concatenate adaptive max and average pooling: twice the features, better heads (fastai)."""

    def __init__(self, size: int = 1):
        super().__init__()
        self.mp, self.ap = nn.AdaptiveMaxPool2d(size), nn.AdaptiveAvgPool2d(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mp(x), self.ap(x)], 1)


def create_pool(concat_pool: bool = True) -> nn.Sequential:
    """Pooling + flatten: turns body feature maps into the vectors that precompute caches."""
    return nn.Sequential(AdaptiveConcatPool2d() if concat_pool else nn.AdaptiveAvgPool2d(1), nn.Flatten())


def create_head(
    n_in: int,
    n_out: int,
    kind: str = "fastai",
    lin_ftrs: Sequence[int] = (512,),
    ps: float = 0.5,
) -> nn.Sequential:
    """The trainable head on pooled features of size `n_in`.

    kind="fastai": BN, dropout(ps/2), linear(512), ReLU, BN, dropout(ps), linear(n_out).
    kind="linear": a single linear layer (the course's linear model on features).
    """
    if kind == "linear":
        head = nn.Sequential(nn.Linear(n_in, n_out))
    elif kind == "fastai":
        sizes = [n_in, *lin_ftrs, n_out]
        drops = [ps / 2] * (len(sizes) - 2) + [ps]
        layers: list[nn.Module] = []
        for i, (ni, no, p) in enumerate(zip(sizes[:-1], sizes[1:], drops)):
            last = i == len(sizes) - 2
            layers += [nn.BatchNorm1d(ni)]
            if p:
                layers += [nn.Dropout(p)]
            layers += [nn.Linear(ni, no, bias=last)]
            if not last:
                layers += [nn.ReLU(inplace=True)]
        head = nn.Sequential(*layers)
    else:
        raise ValueError(f"head kind must be 'fastai' or 'linear', got {kind!r}")
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return head

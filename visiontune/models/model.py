"""VisionModel: a pretrained body, a pooling stage and a head, split into layer groups."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .head import create_head, create_pool
from .preprocess import Preprocess
from .registry import Backbone, create_body


@dataclass
class HeadConfig:
    """Everything needed to rebuild the head (stored in exports and run configs)."""

    kind: str = "fastai"
    lin_ftrs: tuple[int, ...] = (512,)
    ps: float = 0.5
    concat_pool: bool = True


@dataclass
class ModelConfig:
    """Everything needed to rebuild a VisionModel with pretrained=False and load its weights."""

    arch: str
    n_out: int
    head: HeadConfig = field(default_factory=HeadConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["head"]["lin_ftrs"] = list(self.head.lin_ftrs)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        h = dict(d.get("head", {}))
        if "lin_ftrs" in h:
            h["lin_ftrs"] = tuple(h["lin_ftrs"])
        return cls(arch=d["arch"], n_out=int(d["n_out"]), head=HeadConfig(**h))


class VisionModel(nn.Module):
    """`head(pool(body(x)))`; `features(x)` = `pool(body(x))` is what precompute caches. `preprocess` is how its
    images are normalized (the backbone's statistics, or what an exported file says)."""

    def __init__(self, backbone: Backbone, config: ModelConfig, preprocess: Preprocess | None = None):
        super().__init__()
        self.body = backbone.body
        n_feat = backbone.num_features * (2 if config.head.concat_pool else 1)
        self.pool = create_pool(config.head.concat_pool)
        self.head = create_head(n_feat, config.n_out, config.head.kind, config.head.lin_ftrs, config.head.ps)
        self.config = config
        self.backbone = backbone
        self.preprocess = preprocess or Preprocess.of(backbone.mean, backbone.std)
        self.n_features = n_feat
        self._body_groups = backbone.groups

    @property
    def layer_groups(self) -> list[list[nn.Module]]:
        """Early body, late body, head: the units of freezing and discriminative learning rates."""
        return [*self._body_groups, [self.pool, self.head]]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.body(x)))

    def reset_head(self, kind: str | None = None) -> None:
        """Replace the head with a fresh one (e.g. kind='linear' for a linear model on features)."""
        h = self.config.head
        if kind is not None:
            h.kind = kind
        device = next(self.head.parameters(), torch.empty(0)).device
        self.head = create_head(self.n_features, self.config.n_out, h.kind, h.lin_ftrs, h.ps).to(device)


def create_model(
    arch: str,
    n_out: int,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    head: HeadConfig | None = None,
    preprocess: Preprocess | None = None,
) -> VisionModel:
    """Body of `arch` (weights resolved by the registry) + a fresh head with `n_out` outputs; `preprocess`
    defaults to the backbone's normalization."""
    backbone = create_body(arch, pretrained=pretrained, weights=weights)
    return VisionModel(backbone, ModelConfig(arch=arch, n_out=n_out, head=head or HeadConfig()), preprocess)

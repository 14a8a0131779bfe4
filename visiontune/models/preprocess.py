"""Preprocess: how images are fed to a model (the normalization its backbone was pretrained with). The model
carries it, export writes it and load_learner reads it back, so one data object can serve many learners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..data.loader import Normalize


@dataclass(frozen=True)
class Preprocess:
    """uint8 RGB -> model input: x / 255, minus `mean`, over `std` (per channel), on the training device."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def normalizer(self, device: torch.device | str = "cpu", channels_last: bool = False) -> Normalize:
        """The batch transform that applies it (one fused op per batch)."""
        return Normalize(device, self.mean, self.std, channels_last)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(tuple(d["mean"]), tuple(d["std"]))

    @classmethod
    def of(cls, mean: Sequence[float], std: Sequence[float]) -> "Preprocess":
        return cls(tuple(mean), tuple(std))

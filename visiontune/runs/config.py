"""TrainConfig: every setting of a training run in one dataclass, so runs can be echoed, rerun and resumed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

SCHEDULES = ("one_cycle", "sgdr", "constant")


@dataclass
class TrainConfig:
    """What `visiontune train` does. Phase 1 trains the head (`epochs`, frozen body, optionally on
    precomputed activations); phase 2, when `unfreeze_epochs > 0`, trains every layer with `lrs`.
    `fine_tune=True` instead runs fastai's recipe: `freeze_epochs` frozen, then `epochs` unfrozen."""

    data: str = ""
    arch: str = "efficientnet_lite0"
    size: int = 224
    bs: int | str = 64
    epochs: int = 3
    lr: float | None = None
    valid_pct: float | None = None
    seed: int = 42
    out: str = "runs"
    weights: str | None = None
    pretrained: bool = True
    augment: str | None = None
    schedule: str = "one_cycle"
    cycle_len: int | None = None
    cycle_mult: int = 1
    precompute: bool = False
    unfreeze_epochs: int = 0
    lrs: list[float] | None = None
    lr_slice: list[float] | None = None
    fine_tune: bool = False
    freeze_epochs: int = 1
    lr_mult: float = 100.0
    wd: float = 0.01
    opt: str = "adamw"
    head: str = "fastai"
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "error_rate"])
    device: str | None = None
    num_workers: int | None = None
    mixed_precision: str | None = None
    sync_bn: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}.")
        if self.schedule == "sgdr" and self.cycle_len is None:
            self.cycle_len = 1
        if self.bs != "auto":
            try:
                self.bs = int(self.bs)
            except (TypeError, ValueError):
                raise ConfigError(f"bs must be a positive integer or 'auto', got {self.bs!r}.") from None
        for name in ("epochs", "size", "bs"):
            value = getattr(self, name)
            if value != "auto" and int(value) < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}.")
        if self.unfreeze_epochs < 0 or self.freeze_epochs < 0:
            raise ConfigError("unfreeze_epochs and freeze_epochs cannot be negative.")
        if self.lrs is not None and self.lr_slice is not None:
            raise ConfigError("Give either lrs (one per layer group) or lr_slice (lo, hi), not both.")
        if self.lr_slice is not None and len(self.lr_slice) != 2:
            raise ConfigError(f"lr_slice needs two numbers (lo, hi), got {self.lr_slice}.")

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping (e.g. a YAML file); unknown keys are an error listing the valid ones."""
        unknown = sorted(set(d) - set(cls.fields()))
        if unknown:
            raise ConfigError(f"Unknown config key(s): {', '.join(unknown)}. Valid keys: {', '.join(cls.fields())}.")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def unfreeze_lrs(self):
        """The phase-2 learning rates: `lrs`, `slice(*lr_slice)`, or slice(lr/100, lr) by default."""
        if self.lrs is not None:
            return list(self.lrs)
        if self.lr_slice is not None:
            return slice(*self.lr_slice)
        base = self.lr or 1e-3
        return slice(base / 100, base)

    @property
    def data_path(self) -> Path:
        return Path(self.data).expanduser()

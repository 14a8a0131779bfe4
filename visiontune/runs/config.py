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
    save_best: bool = False
    early_stop: int | None = None
    monitor: str = "valid_loss"
    tensorboard: bool = False
    keep_checkpoints: int = 2
    deterministic: bool = False

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
            least = 0 if name == "epochs" and self.unfreeze_epochs and not self.fine_tune else 1
            if value != "auto" and int(value) < least:
                raise ConfigError(f"{name} must be at least {least}, got {value}"
                                  + (" (0 frozen epochs works with --unfreeze-epochs)." if name == "epochs" else "."))
        if self.unfreeze_epochs < 0 or self.freeze_epochs < 0:
            raise ConfigError("unfreeze_epochs and freeze_epochs cannot be negative.")
        if self.lrs is not None and self.lr_slice is not None:
            raise ConfigError("Give either lrs (one per layer group) or lr_slice (lo, hi), not both.")
        if self.lr_slice is not None and len(self.lr_slice) != 2:
            raise ConfigError(f"lr_slice needs two numbers (lo, hi), got {self.lr_slice}.")
        if self.early_stop is not None and self.early_stop < 1:
            raise ConfigError(f"early_stop is a patience in epochs (at least 1), got {self.early_stop}.")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}.")

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping (e.g. a YAML file); unknown keys are an error listing the valid ones.

        Values are checked against the field types, so YAML's `lr: 1e-3` (a string to YAML) reads as a number."""
        unknown = sorted(set(d) - set(cls.fields()))
        if unknown:
            raise ConfigError(f"Unknown config key(s): {', '.join(unknown)}. Valid keys: {', '.join(cls.fields())}.")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        return cls(**{k: coerce(k, v, types[k]) for k, v in d.items()})

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML config: a file you wrote, or a run's config.yaml (its `_run` record is left aside)."""
        from .folder import read_config

        d = read_config(path)
        d.pop("_run", None)
        return cls.from_dict(d)

    def replace(self, overrides: dict[str, Any] | list[str]) -> "TrainConfig":
        """A copy with some settings changed: a dict, or `key=value` strings as `--set` gives them."""
        if isinstance(overrides, (list, tuple)):
            overrides = parse_overrides(overrides)
        return TrainConfig.from_dict({**self.to_dict(), **overrides})

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


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['epochs=5', 'lr=1e-3', 'lrs=1e-5,1e-4,1e-3'] -> {'epochs': '5', ...}; from_dict converts the types."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value (for example --set epochs=5); got {item!r}.")
        out[key.strip()] = value.strip()
    return out


def coerce(key: str, value: Any, type_text: str) -> Any:
    """Convert `value` (from YAML or the command line) to the field's type, or say clearly why not."""
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "") and "None" in type_text:
        return None
    try:
        if type_text.startswith("list"):
            if isinstance(value, str):
                value = [v for v in value.strip("[]").split(",") if v.strip()]
            if value is None:
                return None
            item = float if "float" in type_text else str
            return [item(v.strip() if isinstance(v, str) else v) for v in value]
        if value is None:
            return None
        if type_text.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if type_text.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if type_text.startswith("float"):
            return float(value)
        return str(value) if not isinstance(value, str) else value
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {type_text.replace(' | None', ' (or null)')}; got {value!r}.") from None

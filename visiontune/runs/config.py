"""TrainConfig: every setting of a training run in one dataclass, so runs can be echoed, rerun and resumed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._core.errors import ConfigError, bad_value, did_you_mean
from .._core.io import read_yaml_mapping
from ..data.transforms import AUGMENT_PRESETS
from ..models.registry import check_arch

SCHEDULES = ("one_cycle", "sgdr", "constant")
HEADS = ("fastai", "linear")
OPTIMIZERS = ("adamw", "sgd")
DEFAULT_BS = 64  # the CPU default is lowered when a training step would not fit in free memory


def setting(default: Any = None, help: str = "", flags: tuple[str, ...] = (), factory=None) -> Any:
    """A TrainConfig field with its command-line help: `visiontune train` builds its options from these, so a
    new setting is declared once. `flags` overrides typer's default `--name/--no-name` for booleans."""
    meta = {"help": help, "flags": flags}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """What `visiontune train` does. Phase 1 trains the head (`epochs`, frozen body, optionally on
    precomputed activations); phase 2, when `unfreeze_epochs > 0`, trains every layer with `lrs`.
    `fine_tune=True` instead runs fastai's recipe: `freeze_epochs` frozen, then `epochs` unfrozen."""

    data: str = setting("", "Image folder: DATA/train/CLASS/ images (+ DATA/valid/CLASS/), or DATA/CLASS/ images.")
    arch: str = setting("efficientnet_lite0", "Backbone: efficientnet_lite0 (embedded), resnet18/34/50, or any timm name.")
    size: int = setting(224, "Image size (pixels, square).")
    bs: int | str = setting(DEFAULT_BS, "Batch size per process (on a CPU the default is lowered, with a notice, when a "
                            "training step would not fit in free memory), or 'auto' (largest that fits on the GPU).")
    epochs: int = setting(3, "Epochs of the first phase (head only, body frozen); with --fine-tune, unfrozen epochs.")
    lr: float | None = setting(None, "Learning rate (max lr for one-cycle). Default: 3e-3 frozen, 1e-3 unfrozen.")
    valid_pct: float | None = setting(None, "Fraction of train to hold out when there is no valid/ folder (default 0.2).")
    train: str | None = setting(None, "Training folder under DATA (default: train/, or DATA's class folders).")
    valid: str | None = setting(None, "Validation folder under DATA (default: valid/, val/, validation/ or dev/).")
    test: str | None = setting(None, "Unlabelled test folder under DATA, predicted at the end (default: test/, "
                               "test1/ or testing/).")
    label_re: str | None = setting(None, "Regular expression whose first group is the class in each file's path, "
                                   r"e.g. '/([^/]+?)[._-]\d+\.jpg$' (default: guessed for flat folders).")
    labels: str | None = setting(None, "Labels CSV under DATA (default: labels.csv or train.csv when present).")
    fname_col: str | None = setting(None, "With --labels: the column of file names (default: guessed).")
    label_col: str | None = setting(None, "With --labels: the column of labels (default: guessed).")
    label_delim: str | None = setting(None, "With --labels: split labels on this (multi-label), e.g. ' '.")
    suffix: str | None = setting(None, "With --labels: appended to the file names, e.g. .jpg (default: guessed).")
    folder: str | None = setting(None, "With --labels: the image folder under DATA (default: train/ or DATA).")
    clip: float | None = setting(None, "Bound the test predictions in submission.csv to [c, 1-c], e.g. 0.05.")
    seed: int = setting(42, "Random seed (split, shuffling, initialisation).")
    out: str = setting("runs", "Folder that receives the run folder.")
    weights: str | None = setting(None, "Pretrained weights file (.safetensors or state dict .pth) for the backbone.")
    pretrained: bool = setting(True, "Start from pretrained weights (--no-pretrained: random, on purpose).")
    augment: str | None = setting(None, "Augmentation preset: side_on (photos) or top_down (satellite, microscopy).")
    schedule: str = setting("one_cycle", "one_cycle | sgdr | constant.")
    cycle_len: int | None = setting(None, "SGDR: epochs in the first cycle.")
    cycle_mult: int = setting(1, "SGDR: each cycle is this many times longer than the last.")
    precompute: bool = setting(False, "Train the head on precomputed body activations (seconds per epoch).")
    unfreeze_epochs: int = setting(0, "Then unfreeze and train every layer for this many epochs.")
    lrs: list[float] | None = setting(None, "Unfrozen lrs per layer group, e.g. 1e-4,1e-3,1e-2.")
    lr_slice: list[float] | None = setting(None, "Unfrozen lrs spread geometrically from lo to hi, e.g. 1e-5,1e-3.")
    fine_tune: bool = setting(False, "fastai's recipe: 1 frozen epoch, then --epochs unfrozen.", ("--fine-tune",))
    freeze_epochs: int = setting(1, "With --fine-tune: frozen epochs before unfreezing.")
    lr_mult: float = setting(100.0, "With --fine-tune: the body's lr is the head's divided by this.")
    class_weights: str | None = setting(None, "auto (inverse class frequency), none, or class=weight pairs like "
                                        "ok=1,defect=20 (default: auto when the classes are lopsided, > 5:1).")
    balanced: bool | None = setting(None, "Sample every class equally often (an epoch keeps the data's length). "
                                    "Default: on when single-label classes are lopsided (> 5:1) and no "
                                    "--class-weights are given.", ("--balanced/--no-balanced",))
    wd: float = setting(0.01, "Weight decay (decoupled).")
    opt: str = setting("adamw", "Optimizer: adamw or sgd.")
    head: str = setting("fastai", "Head: fastai (pool, BN, dropout, 512, classes) or linear (one layer).")
    metrics: list[str] = setting(help="Metrics shown each epoch, e.g. accuracy,error_rate.",
                                 factory=lambda: ["accuracy", "error_rate"])
    device: str | None = setting(None, "cpu, cuda, cuda:1 or mps (default: best available).")
    num_workers: int | None = setting(None, "Data loader worker processes (default: sized to the machine).")
    mixed_precision: str | None = setting(None, "bf16 | fp16 | off (default: bf16/fp16 on GPUs, off on CPU).")
    sync_bn: bool = setting(False, "Synchronise BatchNorm statistics across torchrun processes.", ("--sync-bn",))
    compile: bool = setting(False, "torch.compile the model (faster steps after a slow first one).", ("--compile",))
    save_best: bool = setting(False, "Keep the weights of the best epoch (by --monitor) and end each phase with them.",
                              ("--save-best",))
    early_stop: int | None = setting(None, "Stop a phase after this many epochs without improvement in --monitor.")
    monitor: str = setting("valid_loss", "What --save-best and --early-stop watch: valid_loss or a metric.")
    tensorboard: bool = setting(False, "Also log to TensorBoard (RUN/tensorboard; needs the tensorboard extra).",
                                ("--tensorboard",))
    keep_checkpoints: int = setting(2, "Checkpoints kept in RUN/models (the newest and fallbacks).")
    deterministic: bool = setting(False, "Ask PyTorch for deterministic GPU kernels (slower); CPU runs repeat "
                                  "exactly without it.", ("--deterministic",))

    def __post_init__(self) -> None:
        for name, choices in (("schedule", SCHEDULES), ("head", HEADS), ("opt", OPTIMIZERS)):
            value = getattr(self, name)
            if value not in choices:
                raise bad_value(name, value, "one of " + ", ".join(choices), did_you_mean(value, choices))
        if self.augment is not None and self.augment not in AUGMENT_PRESETS:
            raise bad_value("augment", self.augment, "side_on, top_down or null",
                            did_you_mean(self.augment, AUGMENT_PRESETS[1:]))
        check_arch(self.arch)
        if self.schedule == "sgdr" and self.cycle_len is None:
            self.cycle_len = 1
        if self.bs != "auto":
            try:
                self.bs = int(self.bs)
            except (TypeError, ValueError):
                raise bad_value("bs", self.bs, "a positive integer or 'auto'") from None
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
            raise bad_value("keep_checkpoints", self.keep_checkpoints, "at least 1")

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
        from .rundir import RunDir

        path = Path(path)
        return cls.from_dict(RunDir.of(path).settings if path.is_dir() or path.name == RunDir.CONFIG
                             else _read_yaml(path))

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


SAYS_NONE = {"class_weights"}  # settings for which the word "none" is a value, not "unset"


def coerce(key: str, value: Any, type_text: str) -> Any:
    """Convert `value` (from YAML or the command line) to the field's type, or say clearly why not."""
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "") and "None" in type_text:
        if key in SAYS_NONE and value.strip().lower() == "none":
            return "none"  # a choice of its own ("no class weights"), not the unset default
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


def _read_yaml(path: Path) -> dict:
    """A YAML settings file that is not a run's config.yaml."""
    if not path.is_file():
        raise ConfigError(f"{path} does not exist. Pass a YAML file of settings, a run folder or its config.yaml.")
    d = read_yaml_mapping(path)
    d.pop("_run", None)
    return d

"""An inference learner from what training leaves behind: an exported .vt file, a weights file saved by
`learn.save`, or a run folder holding one (what `visiontune export` and `visiontune predict` accept)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from safetensors import safe_open

from ..errors import ExportError
from .export import load_learner

RUN_WEIGHTS = ("models/final.safetensors",)


def find_checkpoint(path: str | os.PathLike) -> tuple[Path, dict]:
    """(model or weights file, run config or {}) for a .vt/.safetensors file or a run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "model.vt").is_file():
            return path / "model.vt", _run_config(path)
        for rel in RUN_WEIGHTS:
            if (path / rel).is_file():
                return path / rel, _run_config(path)
        saved = sorted((path / "models").glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        if saved:
            return saved[-1], _run_config(path)
        raise ExportError(f"{path} holds no model: expected {path}/model.vt or {path}/models/*.safetensors "
                          f"(a run folder written by `visiontune train`).")
    if not path.is_file():
        raise ExportError(f"No model, weights file or run folder at {path}.")
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.yaml").is_file():
            return path, _run_config(folder)
    return path, {}


def _run_config(folder: Path) -> dict:
    p = folder / "config.yaml"
    if not p.is_file():
        return {}
    try:
        cfg = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ExportError(f"{p} cannot be read ({e}).") from e
    return cfg if isinstance(cfg, dict) else {}


def _file_format(path: Path) -> tuple[str | None, dict]:
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - not a safetensors file: load_learner explains what it is
        return None, {}
    return meta.get("format"), meta


def learner_from_checkpoint(path: str | os.PathLike, size: int | None = None, device=None,
                            multi_label: bool | None = None):
    """An inference Learner from a .vt file, a `learn.save` weights file, or a run folder.

    A weights file knows its classes and model; the image size (and augmentation, for TTA) come from
    the run's config.yaml next to it, or from `size`."""
    from ..data.transforms import AugmentConfig
    from ..models import ModelConfig, create_model
    from ..train.learner import Learner
    from .data import InferenceData
    from .export import load_weights

    file, run = find_checkpoint(path)
    fmt, meta = _file_format(file)
    if fmt != "visiontune-weights":  # a .vt file, or something load_learner explains it cannot read
        return load_learner(file, device=device)
    try:
        classes = json.loads(meta["classes"])
        mc = ModelConfig.from_dict(json.loads(meta["model"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{file} lacks the classes or model description visiontune writes ({e}); "
                          f"it cannot be turned into a model.") from None
    size = size or run.get("size")
    if not size:
        raise ExportError(f"{file} does not say which image size the model was trained at, and no config.yaml "
                          f"was found next to it: pass the size (--size 224).")
    model = create_model(mc.arch, mc.n_out, pretrained=False, head=mc.head)
    load_weights(model, file)
    multi = bool(run.get("multi_label", False)) if multi_label is None else multi_label
    known = set(AugmentConfig.__dataclass_fields__)
    aug = AugmentConfig(**{k: v for k, v in run.items() if k in known})
    data = InferenceData(classes, int(size), model.backbone.mean, model.backbone.std, multi, aug=aug, path=file.parent)
    learn = Learner(data, model, device=device)
    learn.model.eval()
    return learn

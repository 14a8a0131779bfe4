"""Learners from what training leaves behind: a run folder (its config.yaml, data and weights), an exported
.vt file, or a weights file saved by `learn.save` (what `visiontune predict`, `export` and `report` accept)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from .._core import console as _console
from .._core.errors import CheckpointError, DataError, ExportError
from .rundir import RunDir

if TYPE_CHECKING:
    from ..train.learner import Learner


def find_checkpoint(path: str | os.PathLike) -> tuple[Path, dict]:
    """(model or weights file, run settings or {}) for a .vt/.safetensors file or a run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        run = RunDir(path)
        try:
            file = run.model_source()
        except CheckpointError as e:
            raise ExportError(str(e)) from None
        return file, _settings(run)
    if not path.is_file():
        raise ExportError(f"No model, weights file or run folder at {path}.")
    run = RunDir.containing(path)
    return path, _settings(run) if run is not None else {}


def _settings(run: RunDir) -> dict:
    if not run.config_file.is_file():
        return {}
    try:
        return run.settings
    except Exception as e:  # noqa: BLE001 - a damaged config.yaml
        raise ExportError(f"{run.config_file} cannot be read ({e}).") from e


def _file_format(path: Path) -> tuple[str | None, dict]:
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 - not a safetensors file: load_learner explains what it is
        return None, {}
    return meta.get("format"), meta


def learner_from_checkpoint(path: str | os.PathLike, size: int | None = None, device=None,
                            multi_label: bool | None = None) -> "Learner":
    """An inference Learner from a .vt file, a `learn.save` weights file, or a run folder.

    A weights file knows its classes and model; the image size (and augmentation, for TTA) come from
    the run's config.yaml next to it, or from `size`."""
    from ..data.transforms import AugmentConfig
    from ..infer import InferenceData, load_learner
    from ..models import ModelConfig, create_model
    from ..models.weights import load_weights
    from ..train.learner import Learner

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
    data = InferenceData(classes, int(size), multi, aug=aug, path=file.parent)
    learn = Learner(data, model, device=device)
    learn.model.eval()
    return learn


def load_run(run_dir: str | os.PathLike, device: str | None = None) -> "Learner":
    """The learner of a `visiontune train` run folder with its final (or latest checkpointed) weights and its
    training data, ready to predict and interpret. The run's data must still be on disk."""
    from .build import build_data, build_learner
    from .config import TrainConfig

    run = RunDir.of(run_dir)
    if run.from_python:
        raise CheckpointError(
            f"{run.path} was trained from Python, so only your script knows how its data was built. In the script, "
            f"after training: `from visiontune.interpret.report import write_report; "
            f"write_report(learn, {str(run.report_file)!r})` (a run made with runs= writes it already).")
    cfg = TrainConfig.from_dict(run.settings)
    bs = 64 if cfg.bs == "auto" else int(cfg.bs)
    cfg = cfg.replace({"device": device, "precompute": False, "compile": False, "sync_bn": False, "bs": bs})
    if not cfg.data_path.is_dir():
        raise DataError(
            f"The report needs the run's validation pictures, but its data folder {cfg.data_path} is not on disk "
            f"any more. Put the data back at that path (or link it there) and run `visiontune report {run.path}` "
            f"again; the run's log.csv, results.json and models/ are untouched.")
    data = build_data(cfg)
    if run.info.get("data_fingerprint") and data.fingerprint() != run.info["data_fingerprint"]:
        _console.notice(f"the data in {cfg.data_path} changed since this run trained (files added, removed or "
                        f"modified): the report shows the model on the data as it is now.")
    learn = build_learner(cfg.replace({"pretrained": False}), data)
    _load_weights(learn, run)
    return learn


def _load_weights(learn: "Learner", run: RunDir) -> None:
    from .checkpoint import checkpoint_paths, read_checkpoint

    final = run.final_weights
    if final.is_file():
        with safe_open(str(final), framework="pt") as f:
            classes = (f.metadata() or {}).get("classes")
        if classes is not None and json.loads(classes) != list(learn.data.classes):
            raise DataError(f"{final} was trained on the classes {json.loads(classes)}, but {learn.data.path} now "
                            f"has {learn.data.classes}. Put the data back as it was to report on this run.")
        learn.load(final)
        return
    for p in checkpoint_paths(run.models):
        try:
            ckpt = read_checkpoint(p)
        except CheckpointError:
            continue
        learn.model.load_state_dict(ckpt.state["model"])
        learn.recorder.load_state_dict(ckpt.state.get("callbacks", {}).get("recorder", {}))
        _console.notice(f"{run.path} has not finished: the report shows the model at its last checkpoint "
                        f"({ckpt.position.describe()}).")
        return
    raise CheckpointError(f"{run.path} has no trained weights yet (no {final.relative_to(run.path)} and no readable "
                          f"checkpoint). Continue it with `visiontune resume {run.path}`.")

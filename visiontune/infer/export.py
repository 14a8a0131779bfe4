"""The one-file exported model without pickle (`learn.export` / `load_learner`), written atomically."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._core.checksum import tensor_digest, text_digest
from .._core.errors import ExportError, VisiontuneError
from .._core.io import atomic_write


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- the .vt model file
#
# One safetensors file: the weights as tensors, and in the header's string metadata
#   format = "visiontune-model", format_version = "1", visiontune = <version>, config = <JSON>,
#   config_sha256 = SHA-256 of config, sha256 = SHA-256 of the tensors (names, dtypes, shapes, bytes).
# Reading it parses JSON and raw tensor bytes only: nothing in it can run code. The two digests make a
# bit flip or a cut-short copy an error instead of a model that predicts wrong (files written before the
# digests were added have none and are read as before).

MODEL_FORMAT = "visiontune-model"
MODEL_FORMAT_VERSION = 1
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def export_learner(learn, path: str | os.PathLike) -> Path:
    """Write `learn`'s model and everything needed to predict with it into ONE safe file (see `load_learner`)."""
    from .._core.version import __version__
    from .data import InferenceData

    model = learn.model
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict") or learn.preprocess is None:
        raise ExportError("export needs a model built by vision_learner (its config says how to rebuild it).")
    data = InferenceData.from_data(learn.data)
    multi = isinstance(learn.loss_func, torch.nn.BCEWithLogitsLoss)
    info = {
        "model": config.to_dict(),
        **data.to_dict(),
        **learn.preprocess.to_dict(),
        "is_multi_label": data.is_multi_label or multi,
        "thresh": learn.thresh if isinstance(learn.thresh, list) else float(learn.thresh),
        "decision": getattr(learn, "decision", None),
        "activation": "sigmoid" if multi else "softmax",
        "metrics": {k: v for k, v in learn.recorder.last.items()
                    if k not in ("phase", "epoch", "lr", "time") and isinstance(v, float) and math.isfinite(v)},
        "torch": torch.__version__.split("+")[0],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    state = _plain_state(model)
    config_text = json.dumps(info)
    meta = {"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION), "visiontune": __version__,
            "config": config_text, "config_sha256": text_digest(config_text), "sha256": tensor_digest(state)}
    need = sum(t.numel() * t.element_size() for t in state.values()) + len(config_text) + 4096
    return atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata=meta), failpoints="export",
                        size_hint=need)


def _kind_of(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return ("a zip archive (perhaps a torch.save checkpoint or a fastai export.pkl); visiontune never "
                "unpickles files, so it cannot read those")
    if head[:1] == b"\x80":
        return "a Python pickle; visiontune never unpickles files, so it cannot read it"
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return "an image (the model file comes first: visiontune predict MODEL IMAGES...)"
    return "not a visiontune model file"


def read_model_header(path: str | os.PathLike) -> dict:
    """The JSON config of a .vt file, after checking it is one, complete, and of a format this version reads."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ExportError(f"{path} is a folder. Pass an exported model file (learn.export('model.vt')), "
                          f"or make one from a run folder with `visiontune export {path}`.")
    if not path.is_file():
        raise ExportError(f"No model file at {path}.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ExportError(f"{path} is {'empty' if size == 0 else 'too short'} ({size} bytes): not a visiontune "
                              f"model file, or a copy that was cut short. Export or copy it again.")
        n = int.from_bytes(head, "little")
        first = f.read(1)
        if n > size - 8:
            if first == b"{" and n < _MAX_HEADER:
                raise ExportError(f"{path} is truncated ({size} bytes, its header alone needs {n + 8}). "
                                  f"Copy or export it again.")
            raise ExportError(f"Cannot open {path}: it is {_kind_of(head + first)}. Export models with "
                              f"learn.export('model.vt').")
        raw = first + f.read(n - 1)
    try:
        header = json.loads(raw)
        meta = header.get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise ExportError(f"Cannot open {path}: it is {_kind_of(head)}. Export models with "
                          f"learn.export('model.vt').") from None
    fmt = meta.get("format")
    if fmt == "visiontune-weights":
        raise ExportError(f"{path} holds weights saved by learn.save(), not an exported model: load them with "
                          f"learn.load(), or turn them into one with `visiontune export {path}`.")
    if fmt != MODEL_FORMAT:
        raise ExportError(f"Cannot open {path}: it is a safetensors file but not a visiontune model "
                          f"(format {fmt!r}). Export models with learn.export('model.vt').")
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        version = -1
    if version > MODEL_FORMAT_VERSION:
        raise ExportError(f"{path} was written by visiontune {meta.get('visiontune', '?')} in model format "
                          f"{version}; this visiontune reads format {MODEL_FORMAT_VERSION} and older. "
                          f"Upgrade: pip install -U visiontune.")
    if version < 1:
        raise ExportError(f"{path} has an unknown model format version {meta.get('format_version')!r}.")
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    if 8 + n + max(ends, default=0) > size:
        raise ExportError(f"{path} is truncated ({size} of {8 + n + max(ends)} bytes). Copy or export it again.")
    if "config_sha256" in meta and text_digest(str(meta.get("config", ""))) != meta["config_sha256"]:
        raise ExportError(f"{path} is damaged: its model description does not match its checksum. Export or copy "
                          f"it again.")
    try:
        config = json.loads(meta["config"])
        for key, kind in (("model", dict), ("classes", list), ("size", int), ("mean", list), ("std", list)):
            if not isinstance(config[key], kind):
                raise TypeError(key)
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path} is damaged: its model description is incomplete ({e}). Export it again.") from None
    config["visiontune"] = meta.get("visiontune")
    config["weights_sha256"] = meta.get("sha256")  # checked by load_learner once the tensors are read
    return config


def load_learner(path: str | os.PathLike, device=None):
    """Rebuild an inference Learner from a file written by `learn.export`: no training data, no network,
    and no pickle (the file holds JSON and raw tensors). Predict with `.predict`, `.get_preds`, `.tta`."""
    from ..models import HeadConfig, ModelConfig, Preprocess, create_model
    from ..train.learner import Learner
    from .data import InferenceData

    path = Path(path).expanduser()
    config = read_model_header(path)
    try:
        mc = ModelConfig.from_dict(config["model"])
        head = HeadConfig(**vars(mc.head))
        model = create_model(mc.arch, mc.n_out, pretrained=False, head=head, preprocess=Preprocess.from_dict(config))
    except VisiontuneError as e:
        raise ExportError(f"{path} needs architecture {config['model'].get('arch')!r}, which cannot be built "
                          f"here: {e}") from e
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{path} is damaged: its model description is invalid ({e}). Export it again.") from None
    if mc.n_out != len(config["classes"]):
        raise ExportError(f"{path} is damaged: {len(config['classes'])} classes for {mc.n_out} model outputs.")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ExportError(f"{path} is damaged: its weights cannot be read ({e}). Export it again.") from e
    if config.get("weights_sha256") and tensor_digest(state) != config["weights_sha256"]:
        raise ExportError(f"{path} is damaged: its weights do not match their checksum (a bit flip or a bad copy). "
                          f"Export or copy it again.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(f"{path}: the weights do not fit the {mc.arch} model it describes ({str(e)[:300]}).") from e
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ExportError(f"{path} is damaged: its weights cannot be read ({e}). Export it again.") from e
    data = InferenceData.from_dict(config, path=path.parent)
    loss = torch.nn.BCEWithLogitsLoss() if config.get("activation") == "sigmoid" else torch.nn.CrossEntropyLoss()
    thresh = config.get("thresh", 0.5)
    learn = Learner(data, model, loss_func=loss, device=device,
                    thresh=[float(t) for t in thresh] if isinstance(thresh, list) else float(thresh))
    learn.decision = config.get("decision")
    learn.model.eval()
    learn.export_info = config
    return learn

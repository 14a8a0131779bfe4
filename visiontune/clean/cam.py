"""Grad-CAM for the review page, on demand: the model of the clean folder (the stock body with the head fitted on
every labelled image, or the learner that was passed in), built on the first request, one picture at a time."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .._core.errors import DataError
from ..runs.cleandir import CleanDir

if TYPE_CHECKING:
    from torch import nn

    from ..train.learner import Learner


class CamModel:
    """`png(path, label)` -> PNG bytes of the picture as the model sees it, overlaid with Grad-CAM for `label`."""

    def __init__(self, clean: CleanDir, learn: "Learner | None" = None):
        self.clean, self.learn = clean, learn
        self._model: "nn.Module | None" = None
        self._spec: dict | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.learn is not None or self.clean.model_json.is_file()

    def _load(self) -> tuple["nn.Module", dict]:
        if self._model is not None:
            return self._model, self._spec
        if self.learn is not None:
            learn = self.learn
            pre = learn.model.preprocess
            spec = {"size": learn.data.size, "presize": learn.data.presize, "classes": list(learn.data.classes),
                    "preprocess": pre.to_dict() if pre is not None else None}
            self._model, self._spec = learn.model, spec
            return self._model, spec
        from safetensors.torch import load_file

        from ..models import HeadConfig, create_model
        from ..models.weights import load_into

        try:
            spec = json.loads(self.clean.model_json.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{self.clean.model_json} cannot be read ({e}): Grad-CAM is not available for this "
                            f"clean folder.") from None
        h = dict(spec["head"])
        h["lin_ftrs"] = tuple(h.get("lin_ftrs", (512,)))
        if spec["weights"] == "head":
            model = create_model(spec["arch"], spec["n_out"], pretrained=True, weights=spec.get("body_weights"),
                                 head=HeadConfig(**h))
            load_into(model.head, load_file(str(self.clean.head_weights)), source=str(self.clean.head_weights))
        else:
            model = create_model(spec["arch"], spec["n_out"], pretrained=False, head=HeadConfig(**h))
            load_into(model, load_file(str(self.clean.model_weights)), source=str(self.clean.model_weights))
        model.eval()
        self._model, self._spec = model, spec
        return model, spec

    def png(self, path: Path, label: str | None) -> bytes:
        """The overlay for `label` (a class name; None or unknown: the model's own prediction)."""
        from ..data.loader import Normalize
        from ..infer.predict import item_to_tensor
        from ..interpret.figures import overlay
        from ..interpret.gradcam import grad_cam

        with self._lock:
            model, spec = self._load()
            device = next(model.parameters()).device
            x = item_to_tensor(path, spec["size"], spec.get("presize"))
            pre = spec.get("preprocess") or {}
            xn = Normalize(device, pre.get("mean"), pre.get("std"))(x[None])
            classes = spec["classes"]
            if label in classes:
                k = classes.index(label)
            else:
                with torch.inference_mode():
                    k = int(model(xn).float().argmax(1)[0])
            cam = grad_cam(model, xn, [k])[0].numpy()
        pic = overlay(x.permute(1, 2, 0).numpy(), cam)
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pic)).save(buf, format="PNG")
        return buf.getvalue()

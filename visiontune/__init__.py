"""visiontune: train world-class image classifiers from a folder of pictures by transfer learning.

    import visiontune as vt
    data = vt.ImageData.from_folder("data/dogscats", size=224)
    learn = vt.vision_learner(data, "efficientnet_lite0")
    learn.fine_tune(3)
    vt.find_issues(data)                      # label errors, duplicates, leaks: review and fix with undo
    vt.serve(learn.export("model.vt"))        # an HTTP prediction server (pip install "visiontune[serve]")
"""

from ._core.errors import (
    ConfigError,
    DataError,
    ExportError,
    VisiontuneError,
    WeightsError,
)
from ._core.version import __version__
from .data import ImageData
from .infer import load_learner, write_submission
from .interpret import ClassificationInterpretation
from .models import create_body, list_backbones
from .train import Callback, Learner, vision_learner

__all__ = [
    "Callback",
    "ClassificationInterpretation",
    "ConfigError",
    "DataError",
    "ExportError",
    "ImageData",
    "Learner",
    "VisiontuneError",
    "WeightsError",
    "__version__",
    "create_body",
    "find_issues",
    "list_backbones",
    "load_learner",
    "review",
    "serve",
    "vision_learner",
    "write_submission",
]


_LAZY = {"find_issues": "visiontune.clean.find", "review": "visiontune.clean.review", "serve": "visiontune.serving"}


def __getattr__(name: str):
    """`vt.find_issues`, `vt.review`, `vt.serve` and `vt.serving` import the clean and serving floors (and their
    web servers) only when first used, so `import visiontune` stays light."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "serving":
        return importlib.import_module(".serving", __name__)
    raise AttributeError(f"module 'visiontune' has no attribute {name!r}")

"""visiontune: train world-class image classifiers from a folder of pictures by transfer learning.

    import visiontune as vt
    data = vt.ImageData.from_folder("data/dogscats", size=224)
    learn = vt.vision_learner(data, "efficientnet_lite0")
    learn.fine_tune(3)
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
    "list_backbones",
    "load_learner",
    "serve",
    "vision_learner",
    "write_submission",
]


def __getattr__(name: str):
    """`vt.serve` and `vt.serving` load on first use, so `import visiontune` does not import the server's parts."""
    if name == "serve":
        from .serving import serve

        return serve
    if name == "serving":
        import importlib

        return importlib.import_module(".serving", __name__)
    raise AttributeError(f"module 'visiontune' has no attribute {name!r}")

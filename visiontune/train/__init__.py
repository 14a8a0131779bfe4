"""Training: Learner, callbacks, schedules, lr_find, precompute, metrics, optimizers."""

from .callbacks import (
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
)
from .learner import Learner
from .lr_find import LRFindResult
from .metrics import Metric, accuracy, accuracy_multi, error_rate, fbeta
from .recorder import Recorder
from .tracking import CSVLogger, EarlyStopping, SaveBest, TensorBoardLogger
from .vision import vision_learner

__all__ = [
    "CSVLogger",
    "Callback",
    "CancelBatchException",
    "CancelEpochException",
    "CancelFitException",
    "EarlyStopping",
    "LRFindResult",
    "Learner",
    "Metric",
    "Recorder",
    "SaveBest",
    "TensorBoardLogger",
    "accuracy",
    "accuracy_multi",
    "error_rate",
    "fbeta",
    "vision_learner",
]

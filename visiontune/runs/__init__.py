"""Runs: configs, the train / resume / rerun pipelines, run folders, checkpoints."""

from .autosave import RunCallback, TrainingInterrupted, attach_run
from .checkpoint import Checkpoint, latest_checkpoint, read_checkpoint
from .config import TrainConfig
from .listing import list_runs
from .recipe import rerun, resume, train

__all__ = [
    "Checkpoint",
    "RunCallback",
    "TrainConfig",
    "TrainingInterrupted",
    "attach_run",
    "latest_checkpoint",
    "list_runs",
    "read_checkpoint",
    "rerun",
    "resume",
    "train",
]

"""Runs: configs, the train / resume / rerun pipelines, run folders (RunDir), the RunFolder and Resume callbacks,
checkpoints, loading a run, and the report of a run."""

from .._core import failpoints
from .callback import Resume, RunCallback, RunFolder, TrainingInterrupted, attach_run
from .checkpoint import Checkpoint, latest_checkpoint, read_checkpoint
from .config import TrainConfig
from .listing import list_runs
from .load import learner_from_checkpoint, load_run
from .recipe import rerun, resume, train
from .report import report_run
from .rundir import RunDir

__all__ = [
    "Checkpoint",
    "Resume",
    "RunCallback",
    "RunDir",
    "RunFolder",
    "TrainConfig",
    "TrainingInterrupted",
    "attach_run",
    "failpoints",
    "latest_checkpoint",
    "learner_from_checkpoint",
    "list_runs",
    "load_run",
    "read_checkpoint",
    "report_run",
    "rerun",
    "resume",
    "train",
]

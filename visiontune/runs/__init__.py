"""Runs: configs, the train pipeline, run folders."""

from .config import TrainConfig
from .recipe import train

__all__ = ["TrainConfig", "train"]

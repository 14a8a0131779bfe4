"""Inference: get_preds, tta, predict, the safe model file (export / load_learner), ONNX and submissions."""

from .batch import FilePredictions, predict_files
from .data import InferenceData, files_dataset, image_files
from .export import export_learner, load_learner, read_model_header
from .onnx_export import export_onnx
from .predict import get_preds, predict
from .submission import write_submission
from .tta import tta

__all__ = [
    "FilePredictions",
    "InferenceData",
    "export_learner",
    "export_onnx",
    "files_dataset",
    "get_preds",
    "image_files",
    "load_learner",
    "predict",
    "predict_files",
    "read_model_header",
    "tta",
    "write_submission",
]

"""Inference: get_preds, predict, and the safe weights/export formats."""

from .predict import get_preds, predict

__all__ = ["get_preds", "predict"]

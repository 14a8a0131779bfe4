"""Seeing what the model sees: training plots, the interpretation of predictions (confusion matrix, top
losses with Grad-CAM, the five views) and the HTML run report."""

from .interpretation import ClassificationInterpretation

__all__ = ["ClassificationInterpretation"]

"""The JSON a prediction is answered with, and the schema of it (for /openapi.json)."""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, Field


class TopK(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    """One image's answer. `labels` (multi-label models only): every class over its threshold."""

    file: str | None = Field(None, description="The uploaded file's name, when the client sent one.")
    label: str = Field(description="The most probable class.")
    index: int = Field(description="Its position in /info's classes.")
    probability: float
    top_k: list[TopK]
    labels: list[str] | None = None


class Error(BaseModel):
    error: str = Field(description="A short code: too_large, not_an_image, truncated_image, overloaded, ...")
    detail: str = Field(description="What is wrong, and the way out.")


class FileError(Error):
    """A file of a multi-file request that could not be predicted, in its place in `predictions`."""

    file: str | None = None
    status: int = Field(description="The status this file alone would have been answered with.")


class Predictions(BaseModel):
    predictions: list[Prediction | FileError]


def prediction(probs: Sequence[float], classes: Sequence[str], top_k: int, multi_label: bool, thresh: float,
               filename: str | None = None) -> dict:
    """{label, index, probability, top_k: [{label, probability}, ...]} (+ labels over `thresh` for multi-label)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    best = order[0]
    out: dict = {"file": filename} if filename is not None else {}
    out.update(label=classes[best], index=best, probability=probs[best],
               top_k=[{"label": classes[i], "probability": probs[i]} for i in order[:top_k]])
    if multi_label:
        out["labels"] = [classes[i] for i in range(len(probs)) if probs[i] > thresh]
    return out

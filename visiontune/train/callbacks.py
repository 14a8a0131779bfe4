"""The callback protocol (fastai's event names) and the cancel exceptions callbacks may raise.

Events, in order: before_fit, before_epoch, before_train, before_batch, after_pred, after_loss,
before_backward, after_backward, after_step, after_batch, after_train, before_validate,
after_validate, after_epoch, after_fit. A callback implements the methods it needs; `learn` is
set on it before the first event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .learner import Learner

EVENTS = (
    "before_fit",
    "before_epoch",
    "before_train",
    "before_batch",
    "after_pred",
    "after_loss",
    "before_backward",
    "after_backward",
    "after_step",
    "after_batch",
    "after_train",
    "before_validate",
    "after_validate",
    "after_epoch",
    "after_fit",
    "after_cancel_batch",
    "after_cancel_epoch",
    "after_cancel_fit",
)


class CancelBatchException(Exception):
    """Skip the rest of this batch."""


class CancelEpochException(Exception):
    """Skip the rest of this epoch (validation still runs)."""


class CancelFitException(Exception):
    """Stop training now; after_fit still runs."""


class Callback:
    """Base class: override the event methods you need. Lower `order` runs first."""

    order: int = 0
    learn: "Learner"

    @property
    def name(self) -> str:
        n = type(self).__name__
        return n[:-8].lower() if n.endswith("Callback") and len(n) > 8 else n.lower()

    def __repr__(self) -> str:
        return type(self).__name__

"""The callback protocol (fastai's event names) and the cancel exceptions callbacks may raise.

Events of a fit, in order: before_fit, before_epoch, before_train, before_batch, after_pred, after_loss,
before_backward, after_backward, after_step, after_batch, after_train, before_validate, (the validation
batches: before_batch ... after_batch), after_validate, after_epoch, after_fit. A `Cancel*Exception` raised
by a callback skips the rest of its stage, fires `after_cancel_<stage>` and then `after_<stage>`; any other
exception fires `after_fail` and propagates. `after_create` fires when a callback is added to a learner,
`before_save` before `learn.save` writes (raise CancelSaveException to keep the file as it is).

A callback implements the methods it needs; `learn` is set on it before its first event. Callbacks that
keep the run's records (`records = True`: the recorder, loggers, checkpoints, trackers) sit out fits that
leave no trace, such as `lr_find`; every other callback sees every batch of those too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .learner import Learner

EVENTS = (
    "after_create",
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
    "after_cancel_train",
    "after_cancel_validate",
    "after_cancel_epoch",
    "after_cancel_fit",
    "after_fail",
    "before_save",
)


class CancelBatchException(Exception):
    """Skip the rest of this batch (no backward pass or step when raised before them)."""


class CancelTrainException(Exception):
    """Skip the rest of this epoch's training batches; validation still runs."""


class CancelValidException(Exception):
    """Skip this epoch's validation."""


class CancelEpochException(Exception):
    """Skip the rest of this epoch, validation included; the next epoch starts."""


class CancelFitException(Exception):
    """Stop training now; after_cancel_fit and after_fit still run."""


class SkipFitException(Exception):
    """Raised in before_fit by a callback that runs first (lowest `order`): this fit does not run at all and
    no other event of it fires (a resumed run skips the fits that had finished before the interruption)."""


class CancelSaveException(Exception):
    """Raised in before_save: `learn.save` keeps the file on disk as it is."""


class Callback:
    """Base class: override the event methods you need. Lower `order` runs first."""

    order: int = 0
    records: bool = False  # True: keeps the run's records, so it sits out fits that leave no trace (lr_find)
    learn: "Learner"

    @property
    def name(self) -> str:
        n = type(self).__name__
        return n[:-8].lower() if n.endswith("Callback") and len(n) > 8 else n.lower()

    def __repr__(self) -> str:
        return type(self).__name__

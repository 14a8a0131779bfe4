"""The callback protocol: the event order of a fit and of lr_find (one loop for both), the cancel exceptions
with their after_cancel_* events, and a user callback that sees every batch of lr_find."""

from __future__ import annotations

import pytest
import torch

import visiontune as vt
from visiontune.train import Callback
from visiontune.train.callbacks import (
    EVENTS,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelTrainException,
    CancelValidException,
)

TRAIN_BATCH = ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward", "after_step",
               "after_batch"]
VALID_BATCH = ["before_batch", "after_pred", "after_loss", "after_batch"]


class Spy(Callback):
    """Records every event it is sent, and the lr of each training batch."""

    def __init__(self, raise_at: dict | None = None):
        self.events, self.lrs, self.raise_at, self.seen = [], [], raise_at or {}, {}
        for name in EVENTS:
            if name != "after_create":
                setattr(self, name, self._recorder(name))

    def _recorder(self, name):
        def fn():
            self.events.append(name)
            if name == "after_pred" and self.learn.training:
                self.lrs.append(self.learn.opt.param_groups[-1]["lr"])
            self.seen[name] = self.seen.get(name, 0) + 1
            exc = self.raise_at.get((name, self.seen[name]))
            if exc is not None:
                raise exc()
        return fn


@pytest.fixture
def learn(image_folder):
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(image_folder, size=32, bs=16)  # 32 train images: 2 batches; 12 valid: 1
    return vt.vision_learner(data, metrics=("accuracy",))


def test_event_order_of_a_fit(learn):
    spy = Spy()
    learn.fit(1e-3, 1, cbs=[spy])
    assert spy.events == ["before_fit", "before_epoch", "before_train", *TRAIN_BATCH * 2, "after_train",
                          "before_validate", *VALID_BATCH, "after_validate", "after_epoch", "after_fit"]


def test_lr_find_is_a_fit_of_the_same_loop_and_a_user_callback_sees_its_batches(learn):
    spy = Spy()
    learn.add_cbs([spy])
    res = learn.lr_find(num_it=3)
    # epoch 1: two batches, validation cancelled by the finder; epoch 2: the third batch ends the fit
    assert spy.events == ["before_fit", "before_epoch", "before_train", *TRAIN_BATCH * 2, "after_train",
                          "after_cancel_validate", "after_validate", "after_epoch", "before_epoch", "before_train",
                          *TRAIN_BATCH[:-1], "after_cancel_fit", "after_fit"]
    assert spy.lrs == pytest.approx(res.lrs)  # the user's callback saw each lr the finder tried
    assert learn.recorder.rows == []  # a fit that leaves no trace: no epoch recorded


def test_lr_find_leaves_no_trace_in_a_run_folder(image_folder, tmp_path):
    data = vt.ImageData.from_folder(image_folder, size=32, bs=16)
    learn = vt.vision_learner(data, run_dir=tmp_path / "run")
    learn.lr_find(num_it=3)
    assert not list((tmp_path / "run" / "models").glob("checkpoint-*"))  # no checkpoint of lr_find's weights
    learn.fit(1e-3, 1)
    assert [r["phase"] for r in learn.recorder.rows] == [0]  # lr_find did not count as a phase
    assert learn.run.fits and learn.run.fit_index == 0


@pytest.mark.parametrize("exc, at, expect_absent, expect_present", [
    (CancelBatchException, ("after_loss", 1), ["before_backward"], ["after_cancel_batch"]),
    (CancelTrainException, ("before_batch", 1), ["before_backward"], ["after_cancel_train", "before_validate"]),
    (CancelValidException, ("before_validate", 1), [], ["after_cancel_validate"]),
    (CancelEpochException, ("before_train", 1), ["before_batch", "before_validate"], ["after_cancel_epoch"]),
    (CancelFitException, ("before_epoch", 2), [], ["after_cancel_fit"]),
])
def test_cancel_exceptions_skip_their_stage_and_fire_after_cancel(learn, exc, at, expect_absent, expect_present):
    spy = Spy({at: exc})
    learn.fit(1e-3, 2, cbs=[spy])
    first_epoch = spy.events[: spy.events.index("after_epoch") + 1]
    for name in expect_absent:
        if exc is CancelBatchException:
            assert first_epoch[:9].count(name) == 0, name  # the first batch stopped after its loss
        else:
            assert name not in first_epoch, name
    for name in expect_present:
        assert name in spy.events, name
    assert spy.events[-1] == "after_fit"
    n_epochs = spy.events.count("after_epoch")
    assert n_epochs == (1 if exc is CancelFitException else 2)
    if exc is CancelBatchException:  # the cancelled batch still ends with after_batch, and no step was taken
        assert spy.events[:6] == ["before_fit", "before_epoch", "before_train", "before_batch", "after_pred",
                                  "after_loss"]
        assert spy.events[6:8] == ["after_cancel_batch", "after_batch"]


def test_fit_refuses_an_integer_learning_rate_and_shows_both_orders(learn):
    with pytest.raises(vt.ConfigError, match=r"fit\(lr, n_cycle\).*fit_one_cycle\(epochs, max_lr\)"):
        learn.fit(3)
    with pytest.raises(vt.ConfigError, match="n_cycle=3"):
        learn.fit(3)
    with pytest.raises(vt.ConfigError, match="epochs=5"):
        learn.fit_one_cycle(1, 5)
    with pytest.raises(vt.ConfigError, match=r"fit_one_cycle\(1, max_lr=0.001\)"):
        learn.fit_one_cycle(1e-3)
    assert learn.recorder.rows == []  # nothing trained

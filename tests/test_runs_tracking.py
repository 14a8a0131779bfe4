"""SaveBest, EarlyStopping, CSVLogger and TensorBoardLogger in the real training loop, on scripted
validation losses so the expected epochs are known in advance."""

from __future__ import annotations

import csv

import pytest
import torch

import visiontune as vt
from visiontune.train import Callback, CSVLogger, EarlyStopping, SaveBest, TensorBoardLogger
from visiontune.train.tracking import tensorboard_available


class ScriptedValidation(Callback):
    """Replaces the measured validation loss (or a metric) of epoch i with values[i]."""

    def __init__(self, values, key="valid_loss"):
        self.values, self.key = list(values), key

    def after_validate(self):
        v = self.values[self.learn.epoch]
        if self.key == "valid_loss":
            self.learn.valid_loss = v
        else:
            self.learn.last_metrics[self.key] = v


class WeightsPerEpoch(Callback):
    """Keeps a copy of the head weights at the end of every epoch."""

    order = 50

    def __init__(self):
        self.snapshots = []

    def after_epoch(self):
        self.snapshots.append({k: v.detach().clone() for k, v in self.learn.model.head.state_dict().items()})


@pytest.fixture
def learn(image_folder, tmp_path):
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(image_folder, size=32, bs=8)
    learn = vt.vision_learner(data, metrics=("accuracy", "error_rate"), precompute=True)
    learn.path = tmp_path  # saved models go to tmp_path/models
    return learn


@pytest.mark.parametrize(
    "losses, patience, min_delta, epochs_run",
    [
        ([1.0, 0.8, 0.85, 0.9, 0.7, 0.6, 0.5, 0.4], 2, 0.0, 4),  # best at 1; 2 and 3 worse -> stop before 4
        ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], 2, 0.0, 6),  # always improving: runs to the end
        ([1.0, 0.99, 0.98, 0.97, 0.5, 0.4], 3, 0.05, 4),  # improvements smaller than min_delta do not count
        ([1.0, 0.9, 0.8, 1.2, 0.1], 1, 0.0, 4),  # patience 1: the first epoch without improvement stops it
    ],
)
def test_early_stopping_stops_at_the_right_epoch(learn, losses, patience, min_delta, epochs_run):
    es = EarlyStopping(patience=patience, min_delta=min_delta)
    learn.fit(1e-3, len(losses), cbs=[ScriptedValidation(losses), es])
    rows = learn.recorder.rows
    assert [r["epoch"] for r in rows] == list(range(epochs_run))
    assert [r["valid_loss"] for r in rows] == losses[:epochs_run]
    assert es.stopped_epoch == (epochs_run if epochs_run < len(losses) else None)


def test_early_stopping_on_a_metric_where_higher_is_better(learn):
    es = EarlyStopping(monitor="accuracy", patience=2)
    learn.fit(1e-3, 6, cbs=[ScriptedValidation([0.5, 0.7, 0.6, 0.65, 0.9, 0.95], key="accuracy"), es])
    assert len(learn.recorder.rows) == 4 and es.best == 0.7 and es.best_epoch == 1
    es = EarlyStopping(monitor="error_rate", patience=1)  # error_rate: lower is better
    learn.fit(1e-3, 4, cbs=[ScriptedValidation([0.5, 0.3, 0.4, 0.1], key="error_rate"), es])
    assert [r["error_rate"] for r in learn.recorder.rows[4:]] == [0.5, 0.3, 0.4]


def test_unknown_monitor_lists_the_valid_names(learn):
    with pytest.raises(vt.ConfigError, match="valid_loss.*accuracy.*error_rate"):
        learn.fit(1e-3, 1, cbs=[SaveBest(monitor="acuracy")])
    with pytest.raises(vt.ConfigError, match="patience"):
        EarlyStopping(patience=0)


def test_save_best_saves_the_best_epoch_and_loads_it_at_the_end(learn, tmp_path):
    snaps = WeightsPerEpoch()
    sb = SaveBest()
    learn.fit(1e-2, 4, cbs=[ScriptedValidation([0.9, 0.5, 0.7, 0.6]), snaps, sb])
    assert sb.best_epoch == 1 and sb.best == 0.5
    assert (tmp_path / "models" / "best.safetensors").exists()
    final = learn.model.head.state_dict()
    assert not all(torch.equal(final[k], snaps.snapshots[3][k]) for k in final)  # the last epoch differs...
    assert all(torch.equal(final[k], snaps.snapshots[1][k]) for k in final)  # ...and epoch 1's weights are back


def test_save_best_without_loading_keeps_the_last_weights(learn, tmp_path):
    snaps = WeightsPerEpoch()
    learn.fit(1e-2, 3, cbs=[ScriptedValidation([0.5, 0.7, 0.9]), snaps, SaveBest(load_best=False, fname="b")])
    final = learn.model.head.state_dict()
    assert all(torch.equal(final[k], snaps.snapshots[2][k]) for k in final)
    other = vt.vision_learner(learn.data).load(tmp_path / "models" / "b")
    assert all(torch.equal(other.model.head.state_dict()[k].cpu(), snaps.snapshots[0][k].cpu()) for k in final)


def test_csv_logger_writes_every_epoch_of_every_fit(learn, tmp_path):
    learn.fit(1e-3, 2, cbs=[CSVLogger("log.csv")])
    learn.fit(1e-3, 1, cbs=[CSVLogger("log.csv")])
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["phase", "epoch", "lr", "train_loss", "valid_loss", "accuracy", "error_rate", "seconds"]
    assert [(r["phase"], r["epoch"]) for r in rows] == [("0", "0"), ("0", "1"), ("1", "0")]
    for r, rec in zip(rows, learn.recorder.rows):
        assert float(r["valid_loss"]) == rec["valid_loss"] and float(r["accuracy"]) == rec["accuracy"]


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed (pip install 'visiontune[tensorboard]')")
def test_tensorboard_logger_writes_scalars(learn, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    learn.fit(1e-3, 2, cbs=[TensorBoardLogger("tb")])
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "valid/valid_loss", "valid/accuracy"} <= set(tags)
    n_batches = len(learn.recorder.batch_history)
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, n_batches + 1))
    assert [e.value for e in acc.Scalars("valid/valid_loss")] == pytest.approx([r["valid_loss"] for r in learn.recorder.rows])


def test_tensorboard_logger_without_tensorboard_is_a_clear_error(monkeypatch):
    import visiontune.train.tracking as tracking

    monkeypatch.setattr(tracking, "tensorboard_available", lambda: False)
    with pytest.raises(vt.ConfigError, match=r"pip install .*visiontune\[tensorboard\]"):
        TensorBoardLogger()

"""Run folders from the Python API, checkpoints (round trip, damage, fallback) and an in-process resume
after Ctrl-C in the middle of an epoch that ends with exactly the uninterrupted run's weights."""

from __future__ import annotations

import csv
import json
import re
import struct

import pytest
import torch
import yaml

import visiontune as vt
from visiontune.errors import CheckpointError
from visiontune.runs import TrainingInterrupted, failpoints, latest_checkpoint, read_checkpoint
from visiontune.runs.config import TrainConfig

from conftest import make_image_folder


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "colors", n_train=8, n_valid=4)


def two_phase_script(folder, run_dir, resume=False):
    """A user's script: head for 1 epoch, then the whole model for 2 (3 epochs of 4 batches)."""
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(folder, size=32, bs=4)
    learn = vt.vision_learner(data, run_dir=run_dir, resume=resume)
    learn.fit_one_cycle(1)
    learn.unfreeze()
    learn.fit_one_cycle(2, slice(1e-4, 1e-3))
    return learn


def rows_without_time(learn):
    return [{k: v for k, v in r.items() if k != "time"} for r in learn.recorder.rows]


@pytest.fixture(scope="module")
def reference(small_folder, tmp_path_factory):
    return two_phase_script(small_folder, tmp_path_factory.mktemp("ref") / "run")


def test_api_run_folder_has_config_log_events_results(small_folder, tmp_path):
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(small_folder, size=32, bs=4)
    learn = vt.vision_learner(data, metrics=("accuracy", "error_rate"), runs=tmp_path / "runs", precompute=True)
    run = learn.run.path
    assert run.parent == tmp_path / "runs" / "colors"
    assert re.fullmatch(r"\d{8}-\d{6}-efficientnet_lite0-32-bs4", run.name)
    learn.fit(1e-2, 2)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"] == str(small_folder.resolve()) and cfg["arch"] == "efficientnet_lite0" and cfg["size"] == 32
    assert cfg["_run"]["data_fingerprint"] == data.fingerprint() and cfg["_run"]["torch"] == str(torch.__version__)
    with open(run / "log.csv", newline="") as f:
        log = list(csv.DictReader(f))
    assert [(r["phase"], r["epoch"]) for r in log] == [("0", "0"), ("0", "1")]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == list(range(1, 9)) and all(e["loss"] > 0 for e in events)
    res = json.loads((run / "results.json").read_text())
    probs, targets = learn.get_preds()
    assert res["classes"] == ["blue", "red"] and res["epochs"] == 2
    from sklearn.metrics import confusion_matrix

    assert res["confusion_matrix"] == confusion_matrix(targets, probs.argmax(1)).tolist()
    assert res["metrics"]["accuracy"] == pytest.approx((probs.argmax(1) == targets).float().mean().item())
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert (run / "models" / "final.safetensors").exists()
    learn.save("mine")  # the user's own saves land in the run folder too
    assert (run / "models" / "mine.safetensors").exists()


def test_run_dir_that_holds_files_is_not_overwritten(small_folder, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    data = vt.ImageData.from_folder(small_folder, size=32, bs=4)
    with pytest.raises(CheckpointError, match="already holds files.*resume=True"):
        vt.vision_learner(data, run_dir=tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_checkpoint_holds_the_whole_training_state(reference):
    run = reference.run.path
    ckpt = latest_checkpoint(run / "models")
    assert ckpt.position.fit_index == 2 and not ckpt.position.inside_fit  # written when the last fit ended
    with open(ckpt.path, "rb") as f:  # a safetensors file: 8-byte header length, then JSON (no pickle)
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    assert header["__metadata__"]["format"] == "visiontune-checkpoint"
    torch.manual_seed(123)
    other = vt.vision_learner(reference.data)
    other.unfreeze()
    ckpt.restore(other)
    for k, v in reference.model.state_dict().items():
        assert torch.equal(v, other.model.state_dict()[k]), k
    a, b = reference.opt.state_dict(), other.opt.state_dict()
    assert a["state"].keys() == b["state"].keys() and len(a["state"]) > 100  # body + head moments
    for pid, s in a["state"].items():
        for name, t in s.items():
            assert torch.equal(t, b["state"][pid][name]), (pid, name)
    assert [g["lr"] for g in a["param_groups"]] == [g["lr"] for g in b["param_groups"]]
    assert other.recorder.rows == reference.recorder.rows
    assert torch.equal(torch.get_rng_state(), ckpt.rng[0]["rng/torch"])


@pytest.mark.parametrize("damage", ["truncate", "flip_a_byte", "garbage"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_with_a_warning(head_run, tmp_path, damage):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(head_run.run.path / "models", models)
    newest, previous = sorted(models.glob("checkpoint-*.safetensors"))[::-1]
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_a_byte":
        data[len(data) // 2] ^= 0x01  # inside the tensor data: only the checksum notices
    else:
        data = b"\0" * 64
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=rf"{newest.name}.*falling back to the previous checkpoint"):
        ckpt = latest_checkpoint(models)
    assert ckpt.path == previous
    assert not newest.exists() and newest.with_name(newest.name + ".damaged").exists()
    with pytest.raises(CheckpointError):
        read_checkpoint(newest.with_name(newest.name + ".damaged"))


def test_no_readable_checkpoint_says_how_to_start_again(tmp_path):
    (tmp_path / "checkpoint-00001.safetensors").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="visiontune rerun"):
        latest_checkpoint(tmp_path)


@pytest.mark.slow
def test_ctrl_c_mid_epoch_then_resume_gives_the_uninterrupted_weights(small_folder, reference, tmp_path, monkeypatch,
                                                                        capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(failpoints, "_passes", {})
    monkeypatch.setenv("VISIONTUNE_FAILPOINT", "batch:6:SIGINT")  # a real SIGINT after batch 2 of phase 1
    with pytest.raises(TrainingInterrupted):
        two_phase_script(small_folder, run)
    monkeypatch.delenv("VISIONTUNE_FAILPOINT")
    assert "resume=True" in capsys.readouterr().err
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["position"] == "phase 1, epoch 0, batch 2 of 4"
    ckpt = latest_checkpoint(run / "models")
    assert (ckpt.position.fit_index, ckpt.position.epoch, ckpt.position.iter) == (1, 0, 2)

    with pytest.raises(CheckpointError, match="same config"):  # resuming with another schedule is refused
        torch.manual_seed(0)
        learn = vt.vision_learner(vt.ImageData.from_folder(small_folder, size=32, bs=4), run_dir=run, resume=True)
        learn.fit_one_cycle(1)
        learn.unfreeze()
        learn.fit_one_cycle(3, slice(1e-4, 1e-3))

    learn = two_phase_script(small_folder, run, resume=True)
    for k, v in reference.model.state_dict().items():
        assert torch.equal(v, learn.model.state_dict()[k]), k
    assert rows_without_time(learn) == rows_without_time(reference)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events] == list(range(1, 13))  # no batch twice, none missing
    ref_events = [json.loads(line) for line in (reference.run.path / "events.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in events] == [e["loss"] for e in ref_events]


def test_config_reads_yaml_strings_as_numbers_and_rejects_unknown_keys():
    cfg = TrainConfig.from_dict({"data": "x", "lr": "1e-3", "lrs": "1e-5,1e-4,1e-3", "early_stop": "3",
                                 "save_best": "true", "valid_pct": "null"})
    assert cfg.lr == 1e-3 and cfg.lrs == [1e-5, 1e-4, 1e-3] and cfg.early_stop == 3 and cfg.save_best is True
    assert cfg.valid_pct is None
    assert cfg.replace(["epochs=5", "metrics=accuracy"]).epochs == 5
    with pytest.raises(vt.ConfigError, match="Unknown config key.*epoch.*Valid keys:.*epochs"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(vt.ConfigError, match="bs must be int"):
        TrainConfig.from_dict({"bs": "sixty"})
    with pytest.raises(vt.ConfigError, match="key=value"):
        cfg.replace(["epochs"])

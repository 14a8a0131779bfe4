"""`visiontune train | resume | rerun | runs` as a user runs them, in subprocesses: killed with SIGKILL in the
middle of an epoch or while writing a checkpoint, or stopped with Ctrl-C, a run resumes to the same epochs
and exactly the weights of an uninterrupted run (deterministic CPU case); rerun repeats the metrics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from visiontune.cli.app import app
from visiontune.runs import latest_checkpoint, list_runs, resume

from conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]
TRAIN = ("--size", "32", "--bs", "4", "--epochs", "1", "--unfreeze-epochs", "2")  # 3 epochs of 4 batches


def cli(*args, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "VISIONTUNE_QUIET": "1"}
    env.pop("VISIONTUNE_FAILPOINT", None)
    if failpoint:
        env["VISIONTUNE_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "visiontune", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=900)


def only_run(out: Path) -> Path:
    runs = [p for p in (out / "colors").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def assert_same_as_reference(run: Path, ref: Path) -> None:
    a, b = load_file(str(run / "models" / "final.safetensors")), load_file(str(ref / "models" / "final.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert log_rows(run) == log_rows(ref)  # the same 3 epochs, none repeated or missing, same losses
    ev, ref_ev = events(run), events(ref)
    assert [e["step"] for e in ev] == list(range(1, 13))
    assert [(e["phase"], e["epoch"], e["iter"], e["loss"], e["lr"]) for e in ev] == \
           [(e["phase"], e["epoch"], e["iter"], e["loss"], e["lr"]) for e in ref_ev]
    res, ref_res = json.loads((run / "results.json").read_text()), json.loads((ref / "results.json").read_text())
    assert res["metrics"] == ref_res["metrics"] and res["confusion_matrix"] == ref_res["confusion_matrix"]
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "colors", n_train=8, n_valid=4)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    r = cli("train", data, *TRAIN, "--out", out)
    assert r.returncode == 0, r.stderr
    return only_run(out)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(data, reference, tmp_path, capsys):
    r = cli("train", data, *TRAIN, "--out", tmp_path, failpoint="batch:7")  # kill -9 in batch 3 of epoch 0, phase 1
    assert r.returncode == -9
    run = only_run(tmp_path)
    assert [x["status"] for x in list_runs(tmp_path)] == ["interrupted"]  # "running", but its process is gone
    assert len(events(run)) == 7 and not (run / "results.json").exists()
    r = cli("resume", run)
    assert r.returncode == 0, r.stderr
    assert f"resuming {run} from start of phase 1" in r.stdout
    assert_same_as_reference(run, reference)
    assert resume(run) is None and "finished already" in capsys.readouterr().err  # nothing left to do


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_then_resume(data, reference, tmp_path):
    # the 3rd checkpoint (end of epoch 0 of phase 1) is half written when the process dies
    r = cli("train", data, *TRAIN, "--out", tmp_path, failpoint="checkpoint-partial:3")
    assert r.returncode == -9
    run = only_run(tmp_path)
    models = run / "models"
    assert len(list(models.glob(".checkpoint-*.partial"))) == 1
    assert latest_checkpoint(models).position.describe() == "start of phase 1"  # the torn file is never read
    r = cli("resume", run)
    assert r.returncode == 0, r.stderr
    assert not list(models.glob(".*.partial"))
    assert_same_as_reference(run, reference)


@pytest.mark.slow
def test_ctrl_c_stops_after_the_batch_saves_and_prints_the_resume_command(data, tmp_path):
    # (that resuming from such a mid-epoch checkpoint is exact: test_runs_checkpoint.py, in-process)
    r = cli("train", data, *TRAIN, "--out", tmp_path, failpoint="batch:6:SIGINT")
    run = only_run(tmp_path)
    assert r.returncode == 130
    assert f"visiontune resume {run}" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    assert [x["status"] for x in list_runs(tmp_path)] == ["interrupted"]
    pos = latest_checkpoint(run / "models").position
    assert (pos.fit_index, pos.epoch, pos.iter) == (1, 0, 2)  # saved right after the batch it stopped at
    assert len(events(run)) == 6


@pytest.mark.slow
def test_rerun_reproduces_the_metrics(reference):
    r = cli("rerun", reference / "config.yaml")
    assert r.returncode == 0, r.stderr
    (new,) = [p for p in reference.parent.iterdir() if p != reference]
    a, b = json.loads((new / "results.json").read_text()), json.loads((reference / "results.json").read_text())
    for k, v in b["metrics"].items():
        assert abs(a["metrics"][k] - v) <= 1e-6, k
    assert log_rows(new) == log_rows(reference)
    cfg = yaml.safe_load((new / "config.yaml").read_text())
    assert {k: v for k, v in cfg.items() if k != "_run"} == \
           {k: v for k, v in yaml.safe_load((reference / "config.yaml").read_text()).items() if k != "_run"}


def test_rerun_with_an_unknown_setting_lists_the_valid_keys(tmp_path):
    (tmp_path / "config.yaml").write_text("data: nowhere\nepochs: 1\n")
    r = cli("rerun", tmp_path / "config.yaml", "--set", "epoch=2")
    assert r.returncode == 1 and "Unknown config key(s): epoch" in r.stderr and "epochs" in r.stderr
    assert "Traceback" not in r.stderr


def test_train_from_a_config_file_with_flags_overriding_it(data, tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text(yaml.safe_dump({"data": str(data), "size": 32, "bs": 4, "epochs": 3, "precompute": True,
                                   "lr": "1e-2", "out": str(tmp_path / "runs"), "early_stop": 5}))
    result = CliRunner().invoke(app, ["train", "--config", str(cfg), "--epochs", "1", "--seed", "7"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = only_run(tmp_path / "runs")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["epochs"], saved["seed"], saved["size"], saved["lr"], saved["precompute"], saved["early_stop"]) == \
           (1, 7, 32, 0.01, True, 5)
    assert saved["wd"] == 0.01 and saved["metrics"] == ["accuracy", "error_rate"]  # defaults are written too
    assert len(log_rows(run)) == 1

    cfg.write_text("data: somewhere\nepoch: 3\n")
    result = CliRunner().invoke(app, ["train", "--config", str(cfg)])
    assert "Unknown config key(s): epoch. Valid keys:" in str(result.exception)


def _fake_run(root: Path, name: str, status: dict | None, log: list[dict], created: str) -> Path:
    run = root / "colors" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": "/data/colors", "arch": "resnet34", "epochs": 2,
                                                     "unfreeze_epochs": 1, "metrics": ["accuracy"],
                                                     "_run": {"created": created}}))
    if log:
        with open(run / "log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(log[0]))
            w.writeheader()
            w.writerows(log)
    if status is not None:
        (run / "status.json").write_text(json.dumps(status))
    return run


def test_runs_lists_date_dataset_arch_epochs_best_and_status(tmp_path):
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    log = [{"phase": 0, "epoch": 0, "valid_loss": 0.5, "accuracy": 0.8},
           {"phase": 0, "epoch": 1, "valid_loss": 0.4, "accuracy": 0.9}]
    _fake_run(tmp_path, "a", {"status": "finished"}, log * 1 + [{"phase": 1, "epoch": 0, "valid_loss": 0.45,
                                                                  "accuracy": 0.85}], "2024-01-01T10:00:00")
    _fake_run(tmp_path, "b", {"status": "failed", "error": "RuntimeError: boom"}, log[:1], "2024-01-02T10:00:00")
    _fake_run(tmp_path, "c", {"status": "running", "pid": gone.pid, "host": host}, log, "2024-01-03T10:00:00")
    _fake_run(tmp_path, "d", {"status": "running", "pid": os.getpid(), "host": host}, [], "2024-01-04T10:00:00")
    rows = list_runs(tmp_path)
    assert [(r["name"], r["status"], r["epochs"], r["planned"]) for r in rows] == [
        ("a", "finished", 3, 3), ("b", "failed", 1, 3), ("c", "interrupted", 2, 3), ("d", "running", 0, 3)]
    assert rows[0]["best"] == ("accuracy", 0.9) and rows[3]["best"] is None
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["date", "dataset", "run", "arch", "epochs", "best", "status"]
    assert lines[1].split() == ["2024-01-01", "10:00", "colors", "a", "resnet34", "3/3", "accuracy", "0.9000", "finished"]
    assert lines[3].split()[-1] == "interrupted"

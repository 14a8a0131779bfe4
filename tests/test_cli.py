"""The `visiontune` command: complete help, and user errors as one message without a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from visiontune.cli.app import app


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "visiontune", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def command_names() -> list[str]:
    import typer

    return sorted(typer.main.get_command(app).commands)


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in command_names():
        assert name in r.stdout


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help(name):
    r = run_cli(name, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and len(r.stdout.splitlines()) > 5


def test_missing_data_path_is_one_clear_error(tmp_path):
    r = run_cli("train", tmp_path / "nope", "--out", tmp_path / "runs")
    assert r.returncode == 1
    assert "does not exist" in r.stderr and str(tmp_path / "nope") in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_debug_shows_the_traceback(tmp_path):
    r = run_cli("--debug", "train", tmp_path / "nope", "--out", tmp_path / "runs")
    assert r.returncode != 0 and "Traceback" in r.stderr and "DataError" in r.stderr


def test_bad_lrs_option(image_folder, tmp_path):
    r = run_cli("train", image_folder, "--lrs", "1e-3,abc", "--out", tmp_path / "runs")
    assert r.returncode == 1 and "--lrs takes comma-separated numbers" in r.stderr

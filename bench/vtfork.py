"""Start `visiontune` CLI processes as forks of a server that has already imported visiontune, torch and timm.

The fault campaign (bench/faults.py) starts two or three visiontune processes per trial; a fresh interpreter
spends about 6 of a tiny run's 11 seconds importing torch, torchvision and timm. Each process started here is
still a real, separate OS process running `visiontune.cli.main(argv)` with its own environment, its own
stdout/stderr and its own exit status, and `kill -9` reaches it like any other; only the imports are shared,
done once, before any tensor is made (so no thread pool exists to be broken by the fork).
`bench/faults.py --exec` starts fresh interpreters instead.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import visiontune.cli  # noqa: F401  (the point of this module: imported once in the fork server)
import visiontune.runs.recipe  # noqa: F401
import visiontune.infer  # noqa: F401


def run_cli(argv: list[str], env: dict, out: str, err: str) -> None:
    """The child: its own environment and output files, then the CLI, exactly as `python -m visiontune`."""
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["visiontune", *argv]
    from visiontune.cli import main

    main(argv)


class ForkServer:
    """Starts ForkedProcess objects from one multiprocessing fork server that preloaded this module."""

    def __init__(self, work: Path) -> None:
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload([__name__])
        # The server is a fresh interpreter that ignores the preparation's sys.path (Python 3.11): without
        # this folder and the repository on PYTHONPATH the preload fails silently and every child imports all.
        here = Path(__file__).resolve().parent
        paths = [str(here), str(here.parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        self.work = work
        self.count = 0

    def start(self, argv: list[str], env: dict) -> "ForkedProcess":
        self.count += 1
        out, err = self.work / f"p{self.count}.out", self.work / f"p{self.count}.err"
        proc = self.ctx.Process(target=run_cli, args=(argv, env, str(out), str(err)), daemon=False)
        proc.start()
        return ForkedProcess(proc, argv, out, err)


class ForkedProcess:
    """The part of subprocess.Popen the campaign uses: pid, poll, wait, send_signal, kill, communicate."""

    def __init__(self, proc, argv: list[str], out: Path, err: Path) -> None:
        self.proc, self.args, self.out, self.err = proc, ["python", "-m", "visiontune", *argv], out, err
        self.pid = proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.exitcode

    def poll(self) -> int | None:
        return self.proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self.proc.exitcode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(9)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        read = lambda p: p.read_text(errors="replace") if p.exists() else ""  # noqa: E731
        out, err = read(self.out), read(self.err)
        for p in (self.out, self.err):
            p.unlink(missing_ok=True)
        return out, err

"""The `visiontune` command: one verb per job, each a thin layer over the Python API.

Errors the user can fix (VisiontuneError) print as one message without a traceback; `--debug` shows it.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from . import clean as _clean  # noqa: F401  (registers clean)
from . import data as _data  # noqa: F401  (registers split-valid, sample)
from . import predict as _predict  # noqa: F401  (registers predict, export)
from . import report as _report  # noqa: F401  (registers report)
from . import runs as _runs  # noqa: F401  (registers resume, rerun, runs)
from . import serve as _serve  # noqa: F401  (registers serve)
from . import train as _train  # noqa: F401  (registers train, lr-find, demo)
from .app import app


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from .._core import console as _console
    from .._core.errors import VisiontuneError

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"visiontune: {message}\n"  # one line, no source
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("VISIONTUNE_DEBUG") == "1"
    try:
        app(args=argv, prog_name="visiontune")
    except VisiontuneError as e:
        if debug:
            raise
        from rich.markup import escape

        _console.err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, highlight=False)  # names may hold [...]
        _console.err.print("[dim](run with --debug for the full traceback)[/]", markup=True)
        sys.exit(1)
    except OSError as e:
        from .._core.io import disk_full_error, is_disk_full

        if debug or not is_disk_full(e):
            raise
        where = e.filename or "a file"
        _console.err.print(f"[bold red]error:[/] {disk_full_error(Path(where))}", markup=True, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        _console.err.print("interrupted")
        sys.exit(130)

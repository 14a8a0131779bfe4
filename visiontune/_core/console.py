"""Where visiontune talks to the person: one rich console on stderr for notices, stdout for tables.

Set VISIONTUNE_QUIET=1 (or `Learner(..., quiet=True)`) to silence progress output.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def quiet() -> bool:
    return os.environ.get("VISIONTUNE_QUIET", "") not in ("", "0")


def notice(msg: str) -> None:
    """A one-line notice about something visiontune decided for the user (not an error)."""
    from .distributed import is_main_process

    if not quiet() and is_main_process():
        err.print(f"[yellow]visiontune:[/] {msg}", markup=True, highlight=False)


def interactive() -> bool:
    return sys.stderr.isatty() and not quiet()

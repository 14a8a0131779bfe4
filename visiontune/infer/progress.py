"""A transient progress bar (images and images/second) for long prediction runs, on stderr."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from .._core import console as _console

MIN_IMAGES = 8  # fewer than this finish before a bar is worth drawing


def show_progress(learn, n_images: int) -> bool:
    """Whether a prediction run over `n_images` should draw a bar for this learner."""
    return not learn.quiet and _console.interactive() and n_images > MIN_IMAGES


@contextlib.contextmanager
def image_progress(total: int, desc: str, enabled: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n_images)`; draws a bar only when a terminal is attached and output is not quiet."""
    if enabled is None:
        enabled = _console.interactive()
    if not enabled or total <= 0:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[speed]}"), TimeRemainingColumn(), console=_console.err, transient=True)
    task = bar.add_task(desc, total=total, speed="")
    t0, done = time.perf_counter(), 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.update(task, advance=n, speed=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f} img/s")

    with bar:
        yield advance

"""Deliberate crashes at named points, for the crash-safety tests (the way databases test with failpoints).

`VISIONTUNE_FAILPOINT=<point>:<n>[:<SIGNAL>]` sends SIGNAL (default SIGKILL, which nothing can catch: the
same as `kill -9` or a power cut) to the process the n-th time it passes `<point>`. Points:
`batch` (after a training batch), `checkpoint-partial` (checkpoint half written to its temporary file),
`checkpoint-written` (temporary file complete and synced, not yet renamed), `checkpoint-renamed`
(renamed, older checkpoints not yet pruned), the same three for `export-*` (model.vt), `image-cache` (after
each image appended to a cache segment being built), `precompute` (after each batch of activations) and
`clean-move` (after each file `clean --apply` or `--undo` moved).
Unset, `failpoint()` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from typing import Callable

_passes: dict[str, int] = {}


def failpoint(point: str, before: Callable[[], None] | None = None) -> None:
    """Crash here if VISIONTUNE_FAILPOINT names this point and pass; `before` runs first (e.g. truncate a file)."""
    spec = os.environ.get("VISIONTUNE_FAILPOINT")
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    count, _, sig = rest.partition(":")
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] != int(count or 1):
        return
    if before is not None:
        before()
    os.kill(os.getpid(), getattr(signal, sig or "SIGKILL", signal.SIGTERM))

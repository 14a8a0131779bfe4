"""Where visiontune keeps what it caches: weights, decoded images, precomputed activations, data sets."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """The visiontune cache folder: $VISIONTUNE_HOME, else $XDG_CACHE_HOME/visiontune, else ~/.cache/visiontune."""
    if os.environ.get("VISIONTUNE_HOME"):
        return Path(os.environ["VISIONTUNE_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "visiontune"

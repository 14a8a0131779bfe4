"""The figure every visiontune plot returns: a matplotlib Figure drawn without pyplot (no display needed) that
shows itself inline in Jupyter and writes a PNG with `.save(path)`."""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure


class PlotFigure(Figure):
    """A matplotlib Figure that shows itself in Jupyter as a PNG even when pyplot (and with it the inline
    backend's display hook) was never imported, and saves itself with `.save(path)`."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the figure as a PNG to `path` (folders created) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.savefig(path, format="png")
        return path


def figure(w: float, h: float) -> PlotFigure:
    """An empty figure of `w` x `h` inches with constrained layout, drawn without pyplot."""
    return PlotFigure(figsize=(w, h), dpi=100, layout="constrained")


def new_figure(w: float = 6.0, h: float = 4.0, ncols: int = 1, nrows: int = 1):
    """A figure and its (nrows, ncols) array of axes."""
    fig = figure(w, h)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def finish(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Write `fig` as PNG to `path` when given (folders created) and return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    return fig

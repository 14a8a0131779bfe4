"""`review(...)`: the review page from Python. In a notebook the returned session shows the page inline (an
iframe to the local server, which runs on a background thread of the kernel); elsewhere it prints the URL."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .._core.errors import ConfigError
from ..data import ImageData
from ..runs.cleandir import CleanDir
from .issues import Issues
from .server import ReviewServer

if TYPE_CHECKING:
    from ..train.learner import Learner


class ReviewSession:
    """A running review page: `url` (with its token), `folder` (the clean folder), `stop()`. Displays itself
    inline in Jupyter (`_repr_html_`)."""

    def __init__(self, server: ReviewServer, height: int = 720):
        self.server, self.height = server, height

    url = property(lambda self: self.server.url)
    port = property(lambda self: self.server.port)
    folder = property(lambda self: self.server.clean)

    def stop(self) -> None:
        """Stop serving the page (the decisions are in the journal already)."""
        self.server.stop()

    def apply(self, create_classes: bool = False, dry_run: bool = False):
        """`apply_decisions` on this session's clean folder."""
        from .fix import apply_decisions

        return apply_decisions(self.server.clean, create_classes=create_classes, dry_run=dry_run)

    def __repr__(self) -> str:
        return f"ReviewSession({self.url}, folder={str(self.server.clean.path)!r})"

    def _repr_html_(self) -> str:
        url = html.escape(self.url, quote=True)
        return (f'<iframe src="{url}" width="100%" height="{int(self.height)}" style="border:1px solid #ddd" '
                f'title="visiontune review"></iframe><p style="font-size:12px">Review page: <a href="{url}" '
                f'target="_blank" rel="noopener">{url}</a> &middot; decisions go to '
                f"{html.escape(str(self.server.clean.journal))}; apply with "
                f"<code>visiontune clean --apply {html.escape(str(self.server.clean.path))}</code></p>")


def review(source: "ImageData | Issues | str | os.PathLike | CleanDir", learn: "Learner | None" = None,
           runs: str | os.PathLike = "runs", host: str = "127.0.0.1", port: int = 0, folds: int = 5,
           height: int = 720) -> ReviewSession:
    """Open the review page for `source`: an ImageData (its issues are found first and saved to a new clean
    folder under `runs/<dataset>/`), an `Issues` table (saved the same way unless it was saved already), or an
    existing clean folder (reopened where it was). Returns the running session; in Jupyter it shows inline.

    Decisions are written to the clean folder's journal at once; the data folder changes only with
    `session.apply()` / `visiontune clean --apply FOLDER`."""
    if isinstance(source, ImageData):
        from .find import find_issues

        issues = find_issues(source, learn=learn, folds=folds)
        clean = issues.save(runs=runs)
    elif isinstance(source, Issues):
        clean = source.folder or source.save(runs=runs)
        learn = learn if learn is not None else (None if source.own_learner else source.learn)
    elif isinstance(source, (str, os.PathLike, CleanDir)):
        clean = source if isinstance(source, CleanDir) else CleanDir.open(Path(source))
    else:
        raise ConfigError(f"review takes an ImageData, the Issues of find_issues, or a clean folder; got "
                          f"{type(source).__name__}.")
    server = ReviewServer(clean, host=host, port=port, learn=learn).start()
    session = ReviewSession(server, height=height)
    if not _in_notebook():
        print(f"Review page: {session.url}")
    return session


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"

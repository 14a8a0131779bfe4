"""The typer application object shared by the command modules."""

from __future__ import annotations

import typer

from .._core.version import __version__

app = typer.Typer(
    name="visiontune",
    help="Train world-class image classifiers from a folder of pictures by transfer learning.\n\n"
    "Start with `visiontune demo`, then `visiontune train DATA` on your own folder "
    "(`DATA/train/CLASS/*.jpg` with `valid/` or `val/`, `DATA/CLASS/*.jpg`, Kaggle-style `train/cat.0.jpg`, "
    "or a `labels.csv`; the layout is detected and printed).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"visiontune {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """visiontune: transfer learning for image classification, the fast.ai way."""


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """'1e-4,1e-3,1e-2' -> [1e-4, 1e-3, 1e-2]; a clear error naming the option otherwise."""
    from .._core.errors import ConfigError

    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated numbers like 1e-4,1e-3,1e-2; got {text!r}.") from None

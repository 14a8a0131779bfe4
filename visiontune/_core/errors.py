"""The exception family: every error a user can fix derives from `VisiontuneError`.

The CLI prints these without a traceback (``--debug`` shows it); anything else is a bug.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CheckpointError", "ConfigError", "DataError", "DiskFullError", "ExportError", "RunLockedError",
           "VisiontuneError", "WeightsError",
           "bad_value", "did_you_mean"]


class VisiontuneError(Exception):
    """An error the user can fix; the message says what went wrong and the way out."""


class DataError(VisiontuneError, ValueError):
    """The data on disk (folders, labels, images) is not what was expected."""


class WeightsError(VisiontuneError):
    """Pretrained weights could not be found, downloaded or loaded."""


class ConfigError(VisiontuneError, ValueError):
    """An argument or configuration value is invalid."""


class ExportError(VisiontuneError):
    """An exported model file cannot be written or read."""


class CheckpointError(VisiontuneError):
    """A checkpoint or run folder cannot be read or resumed."""


class RunLockedError(CheckpointError):
    """Another live process trains or resumes this run folder (it holds RUN/.lock)."""


class DiskFullError(VisiontuneError, OSError):
    """A file could not be written: its disk is full (or over quota). Also an OSError, so code that already
    falls back on any OSError (the image cache turning itself off) keeps doing so."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "No space left on the disk."


def bad_value(name: str, value: Any, expected: str, fix: str = "", cls: type[VisiontuneError] = ConfigError
              ) -> VisiontuneError:
    """The one message template for a wrong argument or setting: what it must be, what it got, the way out.

    `raise bad_value("opt", "adam", "'adamw' or 'sgd'", "Did you mean 'adamw'?")` ->
    "opt must be 'adamw' or 'sgd'; got 'adam'. Did you mean 'adamw'?"
    """
    text = f"{name} must be {expected}; got {value!r}."
    return cls(f"{text} {fix}".rstrip() if fix else text)


def did_you_mean(value: str, choices, n: int = 3) -> str:
    """' Did you mean X or Y?' for the closest of `choices` to `value` (empty when none is close)."""
    import difflib

    close = difflib.get_close_matches(str(value), list(dict.fromkeys(str(c) for c in choices)), n=n, cutoff=0.6)
    if not close:
        return ""
    return "Did you mean " + " or ".join(repr(c) for c in close) + "?"

"""The exception family: every error a user can fix derives from `VisiontuneError`.

The CLI prints these without a traceback (``--debug`` shows it); anything else is a bug.
"""

from __future__ import annotations


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

"""Public alias of `visiontune._core.errors`: the exception family (`from visiontune.errors import DataError`)."""

from ._core.errors import *  # noqa: F401,F403
from ._core.errors import __all__  # noqa: F401

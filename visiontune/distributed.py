"""Public alias of `visiontune._core.distributed`: device choice and torchrun facts."""

from ._core.distributed import *  # noqa: F401,F403
from ._core.distributed import __all__  # noqa: F401

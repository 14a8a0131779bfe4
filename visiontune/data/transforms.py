"""Item transforms on uint8 CHW tensors (torchvision.transforms.v2) and the augmentation presets.

Images enter as a tensor whose short side is `presize(size)`; train transforms crop and augment
to `size x size`, valid transforms resize and center-crop. Normalization happens later, per batch,
on the training device (see `loader.py`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .._core.errors import ConfigError, bad_value

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
    """Augmentation settings: the preset plus fastai's knobs (`get_transforms` meanings).

    max_zoom: zoom in by up to this factor; max_rotate: rotate by up to this many degrees either way;
    max_lighting: change brightness and contrast by up to this fraction; max_warp: move the corners by
    up to this fraction of half the image (a perspective warp); flip: horizontal flips (side_on) or
    the flips among the 8 dihedral views (top_down). Rotate+zoom and warp each happen with probability
    `p_affine`, lighting with `p_lighting`; the random-resized crop keeps at least `min_scale` of the area.
    """

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
            raise bad_value("augment", self.augment, "one of None, 'side_on', 'top_down'")
        checks = [
            ("min_scale", 0 < self.min_scale <= 1, "in (0, 1]"),
            ("max_zoom", self.max_zoom >= 1, "at least 1 (1 = no zoom)"),
            ("max_rotate", 0 <= self.max_rotate <= 180, "between 0 and 180 degrees"),
            ("max_lighting", 0 <= self.max_lighting < 1, "in [0, 1)"),
            ("max_warp", 0 <= self.max_warp < 1, "in [0, 1)"),
            ("p_affine", 0 <= self.p_affine <= 1, "a probability in [0, 1]"),
            ("p_lighting", 0 <= self.p_lighting <= 1, "a probability in [0, 1]"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ConfigError(f"{name} must be {what}, got {getattr(self, name)}.")

    def to_dict(self) -> dict:
        return asdict(self)


class RandomDihedral(v2.Transform):
    """One of the 8 flips/rotations of the square, uniformly (satellite and microscope images);
    with `flip=False`, one of the 4 rotations by multiples of 90 degrees."""

    def __init__(self, flip: bool = True):
        super().__init__()
        self.flip = flip

    def make_params(self, flat_inputs):  # torchvision >= 0.21 name
        return {"k": int(torch.randint(4, ()).item()), "flip": self.flip and bool(torch.randint(2, ()).item())}

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


def reflect_padding(size: int, max_rotate: float, max_warp: float) -> int:
    """Border (pixels) to reflect-pad a `size` crop by so that rotating it by `max_rotate` degrees and
    warping it by `max_warp` never brings empty (black) corners into the center `size` crop."""
    a = math.radians(min(max_rotate, 45.0))
    rotate = 0.5 * (math.cos(a) + math.sin(a) - 1)  # a rotated square's corners reach this far out, per side
    warp = max_warp / (2 * (1 - max_warp))  # torchvision moves corners inward by up to max_warp/2 of the padded side
    return min(size - 1, math.ceil(size * (rotate + warp)) + 1)


def train_transform(size: int, aug: AugmentConfig) -> v2.Transform:
    """The preset's random augmentation at `size`; without a preset, the valid transform.

    Random-resized crop, then flips (side_on) or dihedral views (top_down), then rotate+zoom and a
    perspective warp on a reflection-padded image (fastai's padding_mode='reflection': no black
    corners), then brightness/contrast.
    """
    if aug.augment is None:
        return valid_transform(size)
    tfms: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=(aug.min_scale, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)
    ]
    if aug.augment == "top_down":
        tfms.append(RandomDihedral(flip=aug.flip))
    elif aug.flip:
        tfms.append(v2.RandomHorizontalFlip())
    geometric: list[v2.Transform] = []
    if aug.max_rotate or aug.max_zoom > 1:
        affine = v2.RandomAffine(degrees=aug.max_rotate, scale=(1.0, aug.max_zoom))
        geometric.append(v2.RandomApply([affine], p=aug.p_affine))
    if aug.max_warp:
        geometric.append(v2.RandomPerspective(distortion_scale=aug.max_warp, p=aug.p_affine))
    if geometric and aug.p_affine > 0:
        pad = reflect_padding(size, aug.max_rotate, aug.max_warp)
        tfms += [v2.Pad(pad, padding_mode="reflect"), *geometric, v2.CenterCrop(size)]
    if aug.max_lighting and aug.p_lighting > 0:
        jitter = v2.ColorJitter(brightness=aug.max_lighting, contrast=aug.max_lighting)
        tfms.append(v2.RandomApply([jitter], p=aug.p_lighting))
    return v2.Compose(tfms)

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
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .._core.errors import ConfigError, bad_value

AUGMENT_PRESETS = (None, "side_on", "top_down")
PRESIZE_FACTOR = 1.15


def presize(size: int) -> int:
    """Short side images are stored at before cropping: a little larger than `size` (fastai's data.resize)."""
    return int(round(size * PRESIZE_FACTOR))


def pil_to_uint8(im: Image.Image, short_side: int | None = None) -> torch.Tensor:
    """RGB PIL image -> uint8 (3, H, W) tensor, resized so its short side is `short_side`.

    Shrinking runs torch's antialiased bilinear kernel for uint8 (Pillow's BILINEAR to a level, ~5x faster on
    photos here: it was most of the cost of preparing a new photo for the model); enlarging, cheap on the small
    images that need it, stays Pillow's BILINEAR."""
    w, h = im.size
    s = 1 if short_side is None else short_side / min(w, h)
    new = (max(1, round(w * s)), max(1, round(h * s)))
    if s > 1:
        im = im.resize(new, Image.BILINEAR)
    x = TF.pil_to_tensor(im)
    return TF.resize(x, [new[1], new[0]], antialias=True) if s < 1 else x


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


class RandomAffineWarp(v2.Transform):
    """Rotate + zoom (with probability `p`) and a perspective warp (with probability `p`) in ONE bilinear
    resampling of the image, reflecting it at the borders (fastai's padding_mode='reflection': no black corners).

    Two torchvision transforms on a reflection-padded copy cost two full resamplings of an image about 1.4x
    the crop's side (~28 ms per 224-pixel photo, single-threaded): the slowest part of training on a CPU. The
    rotation, zoom and the perspective's homography compose into one 3x3 matrix from output to input
    coordinates, so one `grid_sample` at the output size does it (fastai composes its batch transforms the same
    way). The warp moves each corner by up to `max_warp` of half the side along each axis, in or out: in the
    middle of the picture about as far as the padded RandomPerspective it replaces (rotate, zoom and warp at 64 px
    move its pixels by 2.1 px, median, against 1.9 before)."""

    def __init__(self, max_rotate: float = 10.0, max_zoom: float = 1.1, max_warp: float = 0.2, p: float = 0.75):
        super().__init__()
        self.max_rotate, self.max_zoom, self.max_warp, self.p = max_rotate, max_zoom, max_warp, p

    def make_params(self, flat_inputs):  # torchvision >= 0.21 name
        m = torch.eye(3, dtype=torch.float64)
        if (self.max_rotate or self.max_zoom > 1) and torch.rand(()) < self.p:
            angle = math.radians(float(torch.empty(()).uniform_(-self.max_rotate, self.max_rotate)))
            zoom = float(torch.empty(()).uniform_(1.0, self.max_zoom))
            c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
            m = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        if self.max_warp and torch.rand(()) < self.p:
            corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
            moved = corners + torch.empty(4, 2, dtype=torch.float64).uniform_(-self.max_warp, self.max_warp)
            m = m @ homography(corners, moved)
        return {"matrix": None if torch.equal(m, torch.eye(3, dtype=torch.float64)) else m}

    def _get_params(self, flat_inputs):  # older torchvision name
        return self.make_params(flat_inputs)

    def transform(self, inpt, params):
        if not isinstance(inpt, torch.Tensor) or params["matrix"] is None:
            return inpt
        h, w = inpt.shape[-2:]
        ys = ((torch.arange(h, dtype=torch.float32) + 0.5) * (2 / h) - 1)[:, None]  # pixel centres in [-1, 1]
        xs = ((torch.arange(w, dtype=torch.float32) + 0.5) * (2 / w) - 1)[None, :]
        (a, b, c), (d, e, f), (g, k, n) = params["matrix"].tolist()
        den = xs * g + ys * k + n
        grid = torch.stack([(xs * a + ys * b + c) / den, (xs * d + ys * e + f) / den], -1)[None]
        x = inpt.float()[None] if inpt.ndim == 3 else inpt.float()
        out = torch.nn.functional.grid_sample(x, grid.expand(len(x), -1, -1, -1), mode="bilinear",
                                              padding_mode="reflection", align_corners=False)
        out = out.round_().clamp_(0, 255).to(inpt.dtype) if not inpt.is_floating_point() else out
        return _like(out[0] if inpt.ndim == 3 else out, inpt)

    def _transform(self, inpt, params):
        return self.transform(inpt, params)


def _like(out: torch.Tensor, inpt: torch.Tensor) -> torch.Tensor:
    """`out` as the same tensor type as `inpt` (a torchvision tv_tensor stays one)."""
    return out if type(inpt) is torch.Tensor else tv_tensors.wrap(out, like=inpt)


def homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The 3x3 projective matrix that maps the 4 points `src` (4, 2) onto `dst` (4, 2)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src.tolist(), dst.tolist()):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    h = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))
    return torch.cat([h, torch.ones(1, dtype=torch.float64)]).view(3, 3)


def valid_transform(size: int) -> v2.Transform:
    """Resize the short side to `size`, then center crop: deterministic, used for valid/test/precompute."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def train_transform(size: int, aug: AugmentConfig) -> v2.Transform:
    """The preset's random augmentation at `size`; without a preset, the valid transform.

    Random-resized crop, then flips (side_on) or dihedral views (top_down), then rotate+zoom and a
    perspective warp in one resampling that reflects at the borders (fastai's padding_mode='reflection':
    no black corners), then brightness/contrast.
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
    if (aug.max_rotate or aug.max_zoom > 1 or aug.max_warp) and aug.p_affine > 0:
        tfms.append(RandomAffineWarp(aug.max_rotate, aug.max_zoom, aug.max_warp, aug.p_affine))
    if aug.max_lighting and aug.p_lighting > 0:
        jitter = v2.ColorJitter(brightness=aug.max_lighting, contrast=aug.max_lighting)
        tfms.append(v2.RandomApply([jitter], p=aug.p_lighting))
    return v2.Compose(tfms)

"""Augmentation presets (fastai meanings), reflection padding, and seeded, reproducible augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from visiontune import ConfigError, ImageData
from visiontune.data.transforms import AugmentConfig, RandomDihedral, pil_to_uint8, train_transform, valid_transform

from conftest import make_image_folder

NO_JITTER = dict(max_lighting=0.0)
PHOTO = Path("/work/shared/data/dogscats/train/cat.0.jpg")


@pytest.fixture(autouse=True)
def _one_thread():
    """Per-image ops as the dataset runs them (single-threaded; see dataset.single_thread)."""
    from visiontune.data.dataset import single_thread

    with single_thread():
        yield


def marked_square(n: int = 48) -> torch.Tensor:
    """A uint8 square whose top-left quadrant is bright, so flips and rotations are visible."""
    x = torch.full((3, n, n), 30, dtype=torch.uint8)
    x[:, : n // 2, : n // 2] = 230
    return x


def quadrant(y: torch.Tensor) -> str:
    """Which quadrant of y is brightest: 'tl', 'tr', 'bl' or 'br'."""
    h, w = y.shape[-2] // 2, y.shape[-1] // 2
    q = {"tl": y[:, :h, :w], "tr": y[:, :h, w:], "bl": y[:, h:, :w], "br": y[:, h:, w:]}
    return max(q, key=lambda k: q[k].float().mean().item())


def test_dihedral_gives_all_eight_views_and_rotations_only_without_flip():
    torch.manual_seed(0)
    x = torch.arange(9, dtype=torch.uint8).view(1, 3, 3)
    views = {tuple(RandomDihedral()(x).flatten().tolist()) for _ in range(200)}
    assert len(views) == 8
    rots = {tuple(RandomDihedral(flip=False)(x).flatten().tolist()) for _ in range(200)}
    assert len(rots) == 4 and rots <= views


@pytest.mark.parametrize("preset, corners", [("side_on", {"tl", "tr"}), ("top_down", {"tl", "tr", "bl", "br"})])
def test_presets_flip_the_right_way(preset, corners):
    torch.manual_seed(0)
    tfm = train_transform(32, AugmentConfig(preset, min_scale=0.9, **NO_JITTER))
    seen = {quadrant(tfm(marked_square())) for _ in range(80)}
    assert seen == corners  # side_on never turns a photo upside down; top_down shows every view


def test_flip_false_keeps_orientation():
    torch.manual_seed(0)
    tfm = train_transform(32, AugmentConfig("side_on", flip=False, min_scale=0.9, **NO_JITTER))
    assert {quadrant(tfm(marked_square())) for _ in range(40)} == {"tl"}


@pytest.mark.parametrize("preset", ["side_on", "top_down"])
@pytest.mark.parametrize("size", [32, 64])
def test_rotate_zoom_warp_never_bring_in_black_corners(preset, size):
    """fastai pads by reflection; zero padding would leave black wedges in ~75% of training images."""
    torch.manual_seed(0)
    tfm = train_transform(size, AugmentConfig(preset, max_rotate=20, max_warp=0.3, p_affine=1.0, **NO_JITTER))
    x = torch.full((3, int(size * 1.15), int(size * 1.5)), 128, dtype=torch.uint8)
    outs = torch.stack([tfm(x) for _ in range(60)])
    assert outs.shape[1:] == (3, size, size)
    assert outs.min() >= 126 and outs.max() <= 130


def test_geometric_augmentation_changes_images():
    torch.manual_seed(0)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 37, 50), dtype=np.uint8))
    tfm = train_transform(32, AugmentConfig("side_on", flip=False, min_scale=1.0, p_affine=1.0, **NO_JITTER))
    outs = [tfm(x) for _ in range(5)]
    assert all(not torch.equal(outs[0], o) for o in outs[1:])


def test_lighting_changes_brightness_within_max_lighting():
    torch.manual_seed(0)
    cfg = AugmentConfig("side_on", max_rotate=0, max_zoom=1.0, max_warp=0, flip=False, min_scale=1.0,
                        max_lighting=0.2, p_lighting=1.0)
    tfm = train_transform(16, cfg)
    x = torch.full((3, 16, 16), 100, dtype=torch.uint8)
    means = [tfm(x).float().mean().item() for _ in range(100)]
    assert min(means) >= 80 - 1 and max(means) <= 120 + 1  # brightness factor in [0.8, 1.2]
    assert max(means) - min(means) > 20


def test_no_preset_is_the_valid_transform():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 37, 50), dtype=np.uint8))
    assert torch.equal(train_transform(32, AugmentConfig(None))(x), valid_transform(32)(x))


@pytest.mark.parametrize("kw, msg", [(dict(augment="sideways"), "augment must be"), (dict(max_zoom=0.9), "max_zoom"),
                                     (dict(max_warp=1.0), "max_warp"), (dict(p_affine=2), "p_affine"),
                                     (dict(max_lighting=-0.1), "max_lighting")])
def test_bad_augment_settings(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        AugmentConfig(**kw)


# ---------------------------------------------------------------------------------------- seeding


@pytest.fixture
def aug_data_folder(tmp_path):
    return make_image_folder(tmp_path / "d", n_train=8, n_valid=2)


def first_batch(data: ImageData, epoch: int | None = 0) -> torch.Tensor:
    dl = data.loader("train", bs=16)
    if epoch is not None:
        dl.sampler.set_epoch(epoch)
    return next(iter(dl))[0]


def test_augmentation_is_reproducible_and_independent_of_global_rng(aug_data_folder):
    a = ImageData.from_folder(aug_data_folder, size=32, augment="side_on", seed=7)
    b = ImageData.from_folder(aug_data_folder, size=32, augment="side_on", seed=7)
    torch.manual_seed(1)
    xa = first_batch(a)
    torch.manual_seed(999)
    state = torch.get_rng_state()
    xb = first_batch(b)
    assert torch.equal(xa, xb)
    assert torch.equal(torch.get_rng_state(), state)  # the data pass did not consume the global generator


def test_epochs_passes_and_seeds_give_new_augmentations(aug_data_folder):
    data = ImageData.from_folder(aug_data_folder, size=32, augment="side_on", seed=7)
    dl = data.loader("train", bs=16, shuffle=False)
    dl.sampler.set_epoch(0)
    e0 = next(iter(dl))[0]
    again = next(iter(dl))[0]  # a second pass in the same epoch (TTA, lr_find): new draws
    dl.sampler.set_epoch(1)
    e1 = next(iter(dl))[0]
    dl.sampler.set_epoch(0)
    e0_again = next(iter(dl))[0]  # a resumed epoch 0 repeats exactly
    other_seed = first_batch(ImageData.from_folder(aug_data_folder, size=32, augment="side_on", seed=8))
    assert torch.equal(e0, e0_again)
    assert not torch.equal(e0, again) and not torch.equal(e0, e1)
    assert not torch.equal(first_batch(data), other_seed)


def test_augmentation_is_the_same_with_loader_workers(aug_data_folder):
    """Per-item seeds: the number of worker processes does not change what a run sees."""
    solo = ImageData.from_folder(aug_data_folder, size=32, augment="top_down", num_workers=0, cache="off")
    duo = ImageData.from_folder(aug_data_folder, size=32, augment="top_down", num_workers=2, cache="off")
    for epoch in (0, 3):
        assert torch.equal(first_batch(solo, epoch), first_batch(duo, epoch))


def test_affine_warp_resamples_once_with_exact_geometry():
    """The fused rotate/zoom/warp: a 180-degree turn lands every pixel centre on a pixel centre (exact); a
    homography maps its four points where asked; no draw (p=0) leaves the image as it is."""
    from visiontune.data.transforms import RandomAffineWarp, homography

    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 24, 24), dtype=np.uint8))
    tfm = RandomAffineWarp()
    turn = torch.tensor([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]], dtype=torch.float64)
    assert torch.equal(tfm.transform(x, {"matrix": turn}), x.flip(-1).flip(-2))
    assert tfm.transform(x, {"matrix": None}) is x
    assert RandomAffineWarp(p=0.0).make_params([x])["matrix"] is None
    src = torch.tensor([[-1.0, -1], [1, -1], [1, 1], [-1, 1]], dtype=torch.float64)
    dst = src + torch.tensor([[0.1, -0.2], [0.05, 0.1], [-0.15, 0.0], [0.2, 0.1]], dtype=torch.float64)
    h = homography(src, dst)
    mapped = torch.cat([src, torch.ones(4, 1, dtype=torch.float64)], 1) @ h.T
    assert torch.allclose(mapped[:, :2] / mapped[:, 2:], dst, atol=1e-9)


@pytest.mark.skipif(not PHOTO.is_file(), reason="the dogscats photos are not here")
def test_short_side_resize_matches_pillows_bilinear_on_a_photo():
    """pil_to_uint8 puts the short side at the size asked for, keeps the aspect, and gives Pillow's antialiased
    BILINEAR pixels to a level, shrinking a real photo ~4x and ~2x (nearest or un-antialiased would not) and
    enlarging it 2x."""
    im = Image.open(PHOTO).convert("RGB")
    for short in (min(im.size) // 4, min(im.size) // 2 + 7, min(im.size) * 2):
        s = short / min(im.size)
        ref = np.asarray(im.resize((round(im.width * s), round(im.height * s)), Image.BILINEAR)).transpose(2, 0, 1)
        got = pil_to_uint8(im, short).numpy()
        assert got.shape == ref.shape and min(got.shape[1:]) == short
        diff = np.abs(got.astype(int) - ref)
        assert diff.max() <= 2 and diff.mean() < 0.05, (short, diff.max(), diff.mean())
    assert torch.equal(pil_to_uint8(im, min(im.size)), TF.pil_to_tensor(im))  # already at that size: untouched
    assert torch.equal(pil_to_uint8(im), TF.pil_to_tensor(im))

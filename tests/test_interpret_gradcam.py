"""Grad-CAM finds the evidence where it is: a model that can only tell the classes apart by a coloured square
must light up that square, wherever it is placed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import visiontune as vt
from visiontune.infer.predict import item_to_tensor, prepare_batch
from visiontune.interpret.gradcam import grad_cam

SIZE, SQUARE = 128, 36
# "plain" has no square, so red and blue each need evidence of their own (with two classes, one of them could
# be learned as "not the other", which has no place in the picture to point at).
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "plain": None}


def square_image(rng: np.random.Generator, cls: str, x0: int, y0: int) -> Image.Image:
    """Grey noise, the same for every class, with a flat square of the class colour at (x0, y0)."""
    a = np.clip(rng.normal(128, 25, (SIZE, SIZE, 3)), 0, 255)
    if COLOURS[cls] is not None:
        a[y0 : y0 + SQUARE, x0 : x0 + SQUARE] = COLOURS[cls]
    return Image.fromarray(a.astype(np.uint8))


@pytest.fixture(scope="module")
def square_learner(tmp_path_factory):
    root = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("valid", 4)):
        for cls in COLOURS:
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                x0, y0 = rng.integers(0, SIZE - SQUARE, 2)
                square_image(rng, cls, int(x0), int(y0)).save(d / f"{i}.png")
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(root, size=SIZE, bs=16)
    learn = vt.vision_learner(data)
    learn.fit_one_cycle(2, 1e-2)
    assert learn.recorder.last["accuracy"] == 1.0
    return learn


PLACES = [(8, 8), (SIZE - SQUARE - 8, 8), (8, SIZE - SQUARE - 8), (SIZE - SQUARE - 8, SIZE - SQUARE - 8),
          ((SIZE - SQUARE) // 2, (SIZE - SQUARE) // 2)]


@pytest.mark.parametrize("cls", ["red", "blue"])
def test_grad_cam_peaks_on_the_square_wherever_it_is(square_learner, cls):
    learn = square_learner
    c = learn.data.classes.index(cls)
    half_cell = 16  # the body's last feature maps are 4x4 at 128 px: one cell is 32 px
    for x0, y0 in PLACES:
        t = item_to_tensor(square_image(np.random.default_rng(1), cls, x0, y0), SIZE)
        pixels = t.permute(1, 2, 0).numpy().astype(int)
        square = np.abs(pixels - np.array(COLOURS[cls])).sum(-1) < 60  # the square where the model sees it
        assert 0.05 < square.mean() < 0.12
        assert learn.predict(t)[1] == c
        cam = grad_cam(learn.model, prepare_batch(learn, [t]), [c])[0].numpy()
        assert cam.shape == (SIZE, SIZE) and cam.max() == pytest.approx(1.0)
        py, px = np.unravel_index(cam.argmax(), cam.shape)
        ys, xs = np.nonzero(square)
        assert ys.min() - half_cell <= py <= ys.max() + half_cell, (cls, (x0, y0), (px, py))
        assert xs.min() - half_cell <= px <= xs.max() + half_cell, (cls, (x0, y0), (px, py))
        # more heat per pixel on the square than on the background
        assert cam[square].mean() > 1.5 * cam[~square].mean(), (cls, (x0, y0))


def test_grad_cam_leaves_model_and_weights_as_they_were(square_learner):
    learn = square_learner
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.model.train()
    t = item_to_tensor(square_image(np.random.default_rng(2), "red", 10, 10), SIZE)
    grad_cam(learn.model, prepare_batch(learn, [t, t]), [0, 1])
    assert learn.model.training
    learn.model.eval()
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())
    assert all(p.grad is None for p in learn.model.parameters())

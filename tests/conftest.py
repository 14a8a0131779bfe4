"""Shared fixtures: tiny image folders made on the fly, and a private visiontune cache per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("VISIONTUNE_QUIET", "1")

COLORS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Keep caches (weights, activations, datasets) out of the user's home during tests."""
    home = tmp_path_factory.mktemp("vt_home")
    old = os.environ.get("VISIONTUNE_HOME")
    os.environ["VISIONTUNE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("VISIONTUNE_HOME", None)
    else:
        os.environ["VISIONTUNE_HOME"] = old


def color_image(rng: np.random.Generator, color, size=(40, 32)) -> Image.Image:
    """A noisy image dominated by `color`: easy for a pretrained body to tell apart, but not trivial."""
    w, h = size
    base = np.array(color, dtype=np.float32)[None, None, :]
    noise = rng.normal(0, 40, size=(h, w, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def make_image_folder(root: Path, classes=("red", "blue"), n_train=16, n_valid=6, seed=0, ext=".png",
                      with_valid=True) -> Path:
    """root/train/<class>/*.png (+ root/valid/<class>/*.png)."""
    rng = np.random.default_rng(seed)
    splits = [("train", n_train)] + ([("valid", n_valid)] if with_valid else [])
    for split, n in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                color_image(rng, COLORS[c]).save(d / f"{c}_{i}{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "colors")


@pytest.fixture
def three_class_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "colors3", classes=("red", "green", "blue"), n_train=20, n_valid=8)


# ---------------------------------------------------------------------------- the real browser
def chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) paths when both are installed, else None (the browser tests skip)."""
    import shutil

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chrome_driver(user_dir: Path, *extra: str):
    """A headless Chromium driven by selenium, with a fresh profile and no background networking (the machine
    may be offline)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                "--disable-dev-shm-usage", f"--user-data-dir={user_dir}", *extra):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.fixture(scope="module")
def head_run(small_folder, tmp_path_factory):
    """Two epochs of the head on precomputed activations into a run folder (two checkpoints, model.vt), on the
    test module's own `small_folder`."""
    import visiontune as vt

    data = vt.ImageData.from_folder(small_folder, size=32, bs=4)
    learn = vt.vision_learner(data, precompute=True, run_dir=tmp_path_factory.mktemp("head") / "run")
    learn.fit(1e-2, 2)
    return learn


"""The run report: written at the end of training, self-contained, every section present, rebuilt from a run
folder by `visiontune report`, and rendered by a real headless Chromium at phone and desktop widths."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chrome_driver, chromium, make_image_folder
from PIL import Image

import visiontune as vt
from visiontune.errors import CheckpointError, DataError
from visiontune.interpret.report import SECTIONS, render_report, write_report
from visiontune.runs import load_run, report_run


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """A Python-API run folder (vision_learner(runs=...)) after lr_find and one epoch: its report.html is
    written by the run itself."""
    tmp = tmp_path_factory.mktemp("report")
    data_dir = make_image_folder(tmp / "colors3", classes=("red", "green", "blue"), n_train=12, n_valid=5)
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(data_dir, size=32, bs=8)
    learn = vt.vision_learner(data, runs=tmp / "runs")
    learn.lr_find(num_it=8)
    learn.fit_one_cycle(1)
    return learn


def sections(page: str) -> dict[str, str]:
    """section id -> its HTML."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', page, flags=re.S))


def test_training_writes_a_self_contained_report_with_every_section(api_run):
    path = api_run.run.path / "report.html"
    page = path.read_text(encoding="utf-8")
    found = sections(page)
    assert list(found) == list(SECTIONS)
    # self-contained: no scripts, no stylesheets, nothing fetched; every image is an embedded PNG
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) >= 4 + 2 * 9  # lr_find, curves, confusion matrix + 9 top losses (picture + heatmap) ...
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size[0] > 0
    # the numbers match the learner's own predictions
    probs, targets = api_run.get_preds()
    acc = float((probs.argmax(1) == targets).float().mean())
    assert f"<b>{acc:.1%}</b><span>accuracy</span>" in found["summary"]
    assert found["lr-find"].count("<img") == 1 and found["curves"].count("<img") == 1
    assert found["epochs"].count("<tr>") == 1 + len(api_run.recorder.rows)
    # the pictures carry their file names, relative to the data folder
    _, idx = api_run.interpret().top_losses(9)
    for p in idx.tolist():
        rel = api_run.data.valid_ds.files[p].relative_to(api_run.data.path)
        assert f">{html.escape(str(rel))}</div>" in found["top-losses"]
    assert found["most-uncertain"].count('class="card"') == 9


def test_report_of_a_python_run_explains_how_to_make_it(api_run):
    with pytest.raises(CheckpointError, match="trained from Python.*write_report"):
        report_run(api_run.run.path)


def test_report_failure_is_a_notice_not_a_lost_run(api_run, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("VISIONTUNE_QUIET", "0")
    assert write_report(api_run, blocker / "report.html") is None
    err = capsys.readouterr().err
    assert "could not write the report" in err and "visiontune report" in err
    with pytest.raises(OSError):
        write_report(api_run, blocker / "report.html", on_error="raise")


def test_multi_label_report_shows_per_class_table(tmp_path):
    root = make_image_folder(tmp_path / "ml", classes=("red", "green", "blue"), n_train=8, n_valid=0,
                             with_valid=False)
    rows = []
    for f in sorted((root / "train").rglob("*.png")):
        extra = " haze" if f.stem.endswith(("1", "3", "5")) else ""
        rows.append([str(f.relative_to(root / "train")), f.parent.name + extra])
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "tags"], *rows])
    torch.manual_seed(0)
    data = vt.ImageData.from_csv(root, "labels.csv", folder="train", label_delim=" ", valid_pct=0.25, size=32, bs=8)
    learn = vt.vision_learner(data)
    learn.fit_one_cycle(1)
    found = sections(render_report(learn, learn.interpret(), k=4))
    assert list(found) == list(SECTIONS)
    assert "<th>f2</th>" in found["confusion"] and "<img" not in found["confusion"]
    assert found["confusion"].count("<tr>") == 1 + len(data.classes)
    assert "single-label" in found["most-confused"]
    assert found["top-losses"].count('class="card"') == 4


def test_visiontune_report_rebuilds_a_finished_cli_run(image_folder, tmp_path, capsys):
    from visiontune.cli import main
    from visiontune.runs.config import TrainConfig
    from visiontune.runs.recipe import train

    data_dir = image_folder  # tmp_path/colors: this test may move it
    learn = train(TrainConfig(data=str(data_dir), size=32, bs=8, epochs=1, out=str(tmp_path / "runs"), seed=0))
    run_dir = learn.run.path
    first = (run_dir / "report.html").read_text(encoding="utf-8")
    (run_dir / "report.html").unlink()

    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(run_dir)])
    assert exit_info.value.code == 0
    assert str(run_dir / "report.html") in capsys.readouterr().out
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    found = sections(page)
    assert list(found) == list(SECTIONS)
    # the same model on the same data: the rebuilt learner predicts what the trained one did
    results = json.loads((run_dir / "results.json").read_text())
    rebuilt = load_run(run_dir)
    _, _, losses = rebuilt.get_preds(with_loss=True)
    assert float(losses.mean()) == pytest.approx(results["metrics"]["valid_loss"], rel=1e-5)
    assert sections(first)["summary"].split("<p")[0] == found["summary"].split("<p")[0]  # the same tiles
    log_rows = list(csv.DictReader(open(run_dir / "log.csv")))
    assert found["epochs"].count("<tr>") == 1 + len(log_rows)  # from log.csv: the rebuilt recorder is empty

    # an unfinished run (no final weights yet): the newest checkpoint, which here holds the same weights
    (run_dir / "models" / "final.safetensors").unlink()
    from_checkpoint = load_run(run_dir)
    assert torch.allclose(from_checkpoint.get_preds()[0], rebuilt.get_preds()[0])
    assert len(from_checkpoint.recorder.rows) == len(log_rows)
    for p in (run_dir / "models").glob("checkpoint-*"):
        p.unlink()
    with pytest.raises(CheckpointError, match="no trained weights yet.*visiontune resume"):
        report_run(run_dir)

    shutil.move(data_dir, tmp_path / "moved")
    with pytest.raises(DataError, match=f"data folder {re.escape(str(data_dir))} is not on disk"):
        report_run(run_dir)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(run_dir)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "is not on disk" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- the real browser
IMAGES_JS = "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])"


@pytest.mark.browser
def test_report_renders_in_headless_chromium_at_phone_and_desktop_width(api_run, tmp_path):
    if chromium() is None:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="the selenium package drives Chromium (pip install visiontune[dev])")
    url = (api_run.run.path / "report.html").resolve().as_uri()
    driver = chrome_driver(tmp_path / "chromium-profile")
    shots = Path(os.environ.get("VISIONTUNE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        for name, width, height, mobile in (("phone", 390, 844, True), ("desktop", 1280, 900, False)):
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
            driver.get(url)
            assert driver.execute_script("return document.readyState") == "complete"
            assert driver.execute_script("return window.innerWidth") == width
            for sid in SECTIONS:
                box = driver.execute_script(f"const s = document.getElementById('{sid}'); "
                                            "return s && [s.offsetWidth, s.offsetHeight, s.querySelector('h2').innerText]")
                assert box and box[0] > 0 and box[1] > 0 and box[2], (name, sid)
            images = driver.execute_script(IMAGES_JS)
            assert len(images) >= 22
            for complete, natural, shown in images:
                assert complete and natural > 0 and 0 < shown <= width, (name, complete, natural, shown)
            # readable: nothing wider than the screen (wide tables scroll inside their own box)
            assert driver.execute_script("return document.documentElement.scrollWidth") <= width, name
            cards = driver.execute_script("return Array.from(document.querySelectorAll('#top-losses .card'))"
                                          ".map(c => Math.round(c.getBoundingClientRect().left))")
            columns = len(set(cards))
            assert (columns == 1) if name == "phone" else (columns >= 3), (name, columns)
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            png = base64.b64decode(shot["data"])
            (shots / f"report-{name}.png").write_bytes(png)
            im = Image.open(io.BytesIO(png))
            assert width - 20 <= im.size[0] <= width and im.size[1] > height  # the whole page (less a scroll bar)
            assert np.asarray(im.convert("L")).std() > 10  # not a blank page
    finally:
        driver.quit()

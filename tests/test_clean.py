"""Cleaning the data (issue 17): confident learning, duplicates and leaks on real photos, the review page in a
real headless Chromium, apply and undo byte for byte, and the bad inputs: hostile names, paths outside the data,
a missing token, an unwritable data folder, vanished files, two applies at once."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chrome_driver, make_image_folder
from PIL import Image, ImageOps

import visiontune as vt
from visiontune.clean import (
    CleanDir,
    CsvLabels,
    Journal,
    ReviewError,
    ReviewServer,
    apply_decisions,
    confident_joint,
    find_issues,
    find_label_issues,
    find_multilabel_issues,
    load_data,
    undo_decisions,
)
from visiontune.clean import dupes as D
from visiontune.clean.confident import calibrate_joint, per_class_thresholds
from visiontune.clean.fix import data_lock
from visiontune.clean.issues import COLUMNS
from visiontune.clean.oof import (
    fit_full_head,
    fold_ids,
    out_of_fold_probs,
    predict_head,
)
from visiontune.errors import ConfigError, DataError

SRC = Path("/work/shared/data/dogscats")
needs_photos = pytest.mark.skipif(not (SRC / "train" / "cat.0.jpg").is_file(), reason="the dogscats photos are not here")
SIZE = 224


def env() -> dict:
    """The environment of a visiontune subprocess: this session's private cache (set by conftest), quiet."""
    return {**os.environ, "VISIONTUNE_QUIET": "1"}


# ---------------------------------------------------------------------------------------- helpers
def tree_hash(root: Path) -> str:
    """Every folder and file under `root` (relative path, bytes, mtime): equal hashes = the same tree."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_dir():
            h.update(f"d {rel}\n".encode())
        else:
            st = p.stat()
            h.update(f"f {rel} {st.st_mtime_ns}\n".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def photo(kind: str, n: int) -> Path:
    return SRC / "train" / f"{kind}.{n}.jpg"


def make_dogscats(root: Path, dogs: str = "dogs", flipped_name: str | None = None) -> dict:
    """A small real-photo data set with known problems: two dog photos filed as cats, three copies of train
    photos in valid (byte copy, re-encoded, resized 90%) and a mirrored one, the two byte-identical pairs of
    test1/, and odd files (tiny, flat, very wide, truncated)."""
    cats, dogd = root / "train" / "cats", root / "train" / dogs
    vcats, vdogs = root / "valid" / "cats", root / "valid" / dogs
    for d in (cats, dogd, vcats, vdogs, root / "test1"):
        d.mkdir(parents=True, exist_ok=True)
    for n in range(12):
        shutil.copyfile(photo("cat", n), cats / f"cat.{n}.jpg")
        shutil.copyfile(photo("dog", n), dogd / f"dog.{n}.jpg")
    for n in range(12, 17):
        shutil.copyfile(photo("cat", n), vcats / f"cat.{n}.jpg")
        shutil.copyfile(photo("dog", n), vdogs / f"dog.{n}.jpg")
    flips = [cats / (flipped_name or "dog.30.jpg"), cats / "dog.31.jpg"]
    shutil.copyfile(photo("dog", 30), flips[0])
    shutil.copyfile(photo("dog", 31), flips[1])
    leaks = {"byte": (cats / "cat.0.jpg", vcats / "cat.0-copy.jpg"),
             "jpeg": (dogd / "dog.1.jpg", vdogs / "dog.1-q40.jpg"),
             "resized": (cats / "cat.2.jpg", vcats / "cat.2-90pct.jpg"),
             "mirrored": (dogd / "dog.3.jpg", vdogs / "dog.3-mirror.jpg")}
    shutil.copyfile(*leaks["byte"])
    im = Image.open(leaks["jpeg"][0]).convert("RGB")
    im.save(leaks["jpeg"][1], quality=40)
    im = Image.open(leaks["resized"][0]).convert("RGB")
    im.resize((im.width * 9 // 10, im.height * 9 // 10), Image.Resampling.LANCZOS).save(leaks["resized"][1], quality=92)
    ImageOps.mirror(Image.open(leaks["mirrored"][0]).convert("RGB")).save(leaks["mirrored"][1], quality=92)
    for n in (224, 267, 750, 789, 1, 2, 3, 4):
        shutil.copyfile(SRC / "test1" / f"{n}.jpg", root / "test1" / f"{n}.jpg")
    rng = np.random.default_rng(0)
    odd = {"tiny": cats / "tiny.png", "flat": dogd / "flat.png", "wide": dogd / "wide.jpg",
           "truncated": cats / "truncated.jpg"}
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(odd["tiny"])
    Image.new("RGB", (200, 160), (128, 128, 128)).save(odd["flat"])
    big = Image.open(photo("dog", 40)).convert("RGB")
    big.resize((1000, 120)).save(odd["wide"], quality=90)
    odd["truncated"].write_bytes(photo("cat", 41).read_bytes()[:3000])
    return {"flips": flips, "leaks": leaks, "odd": odd, "test_pairs": [("test1/224.jpg", "test1/267.jpg"),
                                                                        ("test1/750.jpg", "test1/789.jpg")]}


def contents(*roots: Path) -> list[str]:
    """The SHA-256 of every file under `roots`, sorted: equal lists = the same files, wherever they are."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for r in roots if r.exists() for p in r.rglob("*")
                  if p.is_file())


def rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def relocated(clean: CleanDir, data: Path, tmp: Path) -> tuple[CleanDir, Path]:
    """A copy of `data` and of its clean folder under `tmp`, the folder pointing at the copy (copy2 keeps mtimes)."""
    new_data = tmp / data.name
    shutil.copytree(data, new_data, copy_function=shutil.copy2)
    new_clean = CleanDir(tmp / "runs" / clean.path.name)
    shutil.copytree(clean.path, new_clean.path)
    record = json.loads(new_clean.issues_json.read_text())
    record["data"], record["data_abspath"] = str(new_data.resolve()), os.path.abspath(new_data)
    new_clean.issues_json.write_text(json.dumps(record))
    return new_clean, new_data


def cli(*args: str, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visiontune", *args], capture_output=True, text=True,
                          timeout=timeout, env=kw.pop("env", None) or env(), **kw)


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    """find_issues once on the real-photo data set: (data folder, what was planted, Issues, clean folder)."""
    if not (SRC / "train" / "cat.0.jpg").is_file():
        pytest.skip("the dogscats photos are not here")
    tmp = tmp_path_factory.mktemp("clean")
    root = tmp / "dogscats"
    planted = make_dogscats(root)
    before = tree_hash(root)
    data = load_data(root, test="test1", size=SIZE, bs=16)
    torch.manual_seed(0)
    issues = find_issues(data, folds=5)
    clean = issues.save(runs=tmp / "runs", layout={"loader": "from_folder", "train": "train", "valid": "valid",
                                                    "test": "test1"})
    assert tree_hash(root) == before, "finding must not change anything in the data folder"
    return root, planted, issues, clean


# ---------------------------------------------------------------------------------------- confident learning
def test_confident_joint_equals_the_hand_computed_one():
    probs = np.array([
        [0.9, 0.05, 0.05],  # given 0, confident 0
        [0.8, 0.1, 0.1],    # given 0, confident 0
        [0.1, 0.8, 0.1],    # given 0, but confident 1
        [0.2, 0.7, 0.1],    # given 1, confident 1
        [0.1, 0.9, 0.0],    # given 1, confident 1
        [0.4, 0.3, 0.3],    # given 2, confident in none? t2 = mean(0.3, 0.6) = 0.45 -> 0 reaches t0 = 0.6? no -> none
        [0.05, 0.35, 0.6],  # given 2, confident 2
    ])
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    # t0 = mean(0.9, 0.8, 0.1) = 0.6; t1 = mean(0.7, 0.9) = 0.8; t2 = mean(0.3, 0.6) = 0.45
    assert np.allclose(per_class_thresholds(probs, labels), [0.6, 0.8, 0.45])
    # row 2: p1 = 0.8 >= t1 -> class 1; row 3: p1 = 0.7 < 0.8 and p0 = 0.2 < 0.6 -> not counted
    # row 5: 0.4 < 0.6, 0.3 < 0.8, 0.3 < 0.45 -> not counted
    expected = np.array([[2, 1, 0],
                         [0, 1, 0],
                         [0, 0, 1]])
    assert confident_joint(probs, labels).tolist() == expected.tolist()
    cal = calibrate_joint(expected, np.bincount(labels))
    assert np.allclose(cal, [[2.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    res = find_label_issues(probs, labels)
    assert res.mask.tolist() == [False, False, True, False, False, False, False]
    assert res.suggested[2] == 1


def test_confident_learning_finds_known_flips_in_a_synthetic_matrix():
    rng = np.random.default_rng(0)
    n, m = 2000, 4
    true = rng.integers(0, m, n)
    logits = rng.normal(0, 1, (n, m))
    logits[np.arange(n), true] += 3.0  # a good, not perfect, model
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = true.copy()
    flipped = rng.choice(n, n // 20, replace=False)
    given[flipped] = (true[flipped] + rng.integers(1, m, len(flipped))) % m
    res = find_label_issues(probs, given)
    found = set(res.ranked.tolist())
    k = len(flipped)
    top = set(res.ranked[:k].tolist())
    assert len(top & set(flipped.tolist())) / k >= 0.8  # precision at k = number flipped
    assert len(found & set(flipped.tolist())) / k >= 0.85  # recall of what is flagged
    # never flags an example whose most probable class is its given label; ranked by self-confidence
    assert not (probs.argmax(1)[res.ranked] == given[res.ranked]).any()
    sc = probs[res.ranked, given[res.ranked]]
    assert (np.diff(sc) >= 0).all()
    assert 0.03 < res.noise_rate < 0.08  # 5% were flipped


def test_multi_label_issues_are_found_per_label():
    rng = np.random.default_rng(1)
    n, m = 600, 3
    truth = (rng.random((n, m)) < 0.4).astype(np.float32)
    probs = np.clip(truth * 0.85 + (1 - truth) * 0.1 + rng.normal(0, 0.05, (n, m)), 0.01, 0.99)
    given = truth.copy()
    flips = [(5, 0), (17, 1), (33, 2), (70, 1)]
    for i, k in flips:
        given[i, k] = 1 - given[i, k]
        probs[i, k] = 0.97 if truth[i, k] else 0.02  # the model is sure, and the label says otherwise
    per_label = find_multilabel_issues(probs, given)
    assert len(per_label) == m
    for i, k in flips:
        assert per_label[k].mask[i], (i, k)
    assert sum(int(r.mask.sum()) for r in per_label) <= 3 * len(flips)


def test_out_of_fold_probabilities_come_from_heads_that_did_not_see_the_row():
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 1, (120, 64)).astype(np.float32)  # no signal at all: only memorising could fit
    labels = rng.integers(0, 2, 120)
    fid = fold_ids(labels, 5)
    assert sorted(np.bincount(fid).tolist()) == [24] * 5
    for c in (0, 1):  # stratified: each fold gets its share of each class
        per = np.bincount(fid[labels == c], minlength=5)
        assert per.max() - per.min() <= 1
    probs, _ = out_of_fold_probs(feats, labels, 2, folds=5)
    oof_conf = probs[np.arange(120), labels].mean()
    head = fit_full_head(feats, labels, 2)  # the same recipe on every row, predicting rows it saw
    in_sample = predict_head(head, torch.from_numpy(feats), multi=False)[np.arange(120), labels].mean()
    assert in_sample > 0.7 and oof_conf < 0.6, (in_sample, oof_conf)
    with pytest.raises(ConfigError, match="folds must be at least 2"):
        fold_ids(labels, 1)


def test_find_issues_on_multi_label_data_works_per_label(tmp_path):
    import csv

    root = make_image_folder(tmp_path / "ml", classes=("red", "green", "blue"), n_train=12, n_valid=0,
                             with_valid=False)
    rows = []
    for f in sorted((root / "train").rglob("*.png")):
        tags = [f.parent.name] + (["bright"] if f.stem.endswith(("1", "3", "5", "7")) else [])
        rows.append([f.relative_to(root / "train").as_posix(), " ".join(tags)])
    rows[0][1] = "green"  # a red picture tagged green: that label is wrong
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "tags"], *rows])
    data = vt.ImageData.from_csv(root, "labels.csv", folder="train", label_delim=" ", valid_pct=0.25, size=32, bs=8)
    torch.manual_seed(0)
    issues = find_issues(data, folds=3, labels=CsvLabels("labels.csv", folder="train", label_delim=" "))
    assert issues.probs.shape == (len(data.train_ds) + len(data.valid_ds), data.c)
    assert ((issues.probs >= 0) & (issues.probs <= 1)).all() and not np.allclose(issues.probs.sum(1), 1)  # sigmoid
    bad = [r for r in issues.label if r.file == "train/" + rows[0][0]]
    assert bad, [r.file for r in issues.label]
    assert {r.given_label for r in bad} == {"green"}
    # per label: 'green' looks absent (and/or 'red' present); each row toggles one label of the given set
    assert any("'green' looks absent" in r.reason and "green" not in r.suggested_label.split() for r in bad) or \
        any("'red' looks present" in r.reason and "red" in r.suggested_label.split() for r in bad), [r.reason for r in bad]
    assert issues.summary["balance"]["total"]["bright"] > 0
    # apply rewrites that file's label cell in the CSV (nothing moves); undo restores the CSV byte for byte
    clean = issues.save(runs=tmp_path / "runs")
    before, csv_before, pictures = tree_hash(root), (root / "labels.csv").read_bytes(), tree_hash(root / "train")
    _decide(clean, (bad[0].file, "relabel", "red"))
    plan = apply_decisions(clean)
    lines_before, lines_after = csv_before.decode().splitlines(), (root / "labels.csv").read_text().splitlines()
    changed = [i for i, (a, b) in enumerate(zip(lines_before, lines_after)) if a != b]
    assert changed == [1] and lines_after[1] == f"{rows[0][0]},red" and len(lines_after) == len(lines_before)
    assert not plan.moves and (clean.path / "labels.orig.csv").read_bytes() == csv_before
    assert tree_hash(root / "train") == pictures  # no picture moved
    assert undo_decisions(clean) == 1
    assert (root / "labels.csv").read_bytes() == csv_before and tree_hash(root) == before


# ---------------------------------------------------------------------------------------- copies
@needs_photos
def test_perceptual_hash_matches_copies_and_separates_distinct_photos():
    im = Image.open(photo("cat", 5)).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=35)
    variants = {"jpeg35": Image.open(buf).convert("RGB"),
                "resized": im.resize((im.width * 9 // 10, im.height * 9 // 10)),
                "mirrored": ImageOps.mirror(im)}
    h0, hf0, _, t0 = D.phash(np.asarray(im))
    for name, v in variants.items():
        h, hf, _, t = D.phash(np.asarray(v))
        sim = D.thumb_similarity(np.stack([t0, t]), np.array([0]), np.array([1]))[0]
        assert sim >= D.DupeSettings().thumb, (name, sim)
        bits = min(D.hamming(np.array([h0], np.uint64), np.array([h], np.uint64))[0, 0],
                   D.hamming(np.array([h0], np.uint64), np.array([hf], np.uint64))[0, 0])
        assert bits <= 4, (name, bits)
    others = [D.phash(np.asarray(Image.open(photo(k, n)).convert("RGB"))) for k in ("cat", "dog") for n in range(20, 30)]
    thumbs = np.stack([t0] + [o[3] for o in others])
    a, b = np.triu_indices(len(thumbs), 1)
    assert D.thumb_similarity(thumbs, a, b).max() < 0.9  # distinct photos are nowhere near
    hs = np.array([h0] + [o[0] for o in others], np.uint64)
    fs = np.array([hf0] + [o[1] for o in others], np.uint64)
    dist = np.minimum(D.hamming(hs, hs), D.hamming(hs, fs))
    off = dist[~np.eye(len(hs), dtype=bool)]
    assert off.min() > DEFAULT_BITS, off.min()


DEFAULT_BITS = D.DupeSettings().phash_bits


def test_union_find_groups_chains_of_pairs():
    pairs = [D.Pair(0, 3, "near", 0.95, 2), D.Pair(3, 7, "exact", 1.0, 0), D.Pair(5, 6, "near", 0.9, 1)]
    assert D.group_pairs(8, pairs) == [[0, 3, 7], [5, 6]]


@pytest.mark.slow
def test_find_issues_on_real_photos(found):
    root, planted, issues, clean = found
    by_kind = {k: [r for r in issues if r.kind == k] for k in ("label", "leak", "duplicate", "odd")}
    # both dog photos filed as cats are label issues, suggested dogs, and they lead the ranking
    labels = {r.file: r for r in by_kind["label"]}
    for f in planted["flips"]:
        r = labels[rel(root, f)]
        assert (r.given_label, r.suggested_label) == ("cats", "dogs") and r.suggested_prob > 0.5
    assert {r.file for r in by_kind["label"][:4]} >= {rel(root, f) for f in planted["flips"]}
    scores = [r.score for r in by_kind["label"]]
    assert scores == sorted(scores, reverse=True)
    # every planted copy in valid is a leak, grouped with its train original
    leak_groups: dict[int, set[str]] = {}
    for r in by_kind["leak"]:
        leak_groups.setdefault(r.group, set()).add(r.file)
    for how, (a, b) in planted["leaks"].items():
        assert any({rel(root, a), rel(root, b)} <= g for g in leak_groups.values()), how
    assert len(leak_groups) == len(planted["leaks"])  # and nothing else
    # the two byte-identical pairs of test1 are duplicates (test only: not a leak)
    dup_groups: dict[int, set[str]] = {}
    for r in by_kind["duplicate"]:
        dup_groups.setdefault(r.group, set()).add(r.file)
    assert sorted(map(sorted, dup_groups.values())) == sorted(map(sorted, planted["test_pairs"]))
    # odd files, each for its own reason
    odd = {r.file: r.reason for r in by_kind["odd"]}
    o = planted["odd"]
    assert "undecodable" in odd[rel(root, o["truncated"])]
    assert "very small" in odd[rel(root, o["tiny"])]
    assert "near-constant" in odd[rel(root, o["flat"])]
    assert "aspect ratio" in odd[rel(root, o["wide"])]
    assert len(odd) <= len(o) + 2  # few false alarms among 50 photos
    # the class balance and the written table
    # train: 12 + 2 flipped + tiny + truncated cats, 12 + flat + wide dogs; valid: 5 + 2 copies each
    assert issues.balance["train"] == {"cats": 16, "dogs": 14} and issues.balance["valid"] == {"cats": 7, "dogs": 7}
    assert issues.balance["imbalance"] == pytest.approx(23 / 21)
    import csv

    rows = list(csv.DictReader(open(clean.issues_csv, newline="", encoding="utf-8")))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(issues)
    assert [r["file"] for r in rows] == [r.file for r in issues]
    assert all((root / r["file"]).exists() for r in rows)
    record = clean.read()
    assert record["data"] == str(root.resolve()) and set(record["files"]) == {r.file for r in issues}
    # a second find reads the activations back instead of recomputing them
    again = find_issues(load_data(root, test="test1", size=SIZE, bs=16))
    assert again.summary["activations_computed"] == 0
    assert [r.file for r in again.label] == [r.file for r in issues.label]


# ---------------------------------------------------------------------------------------- the journal
def test_journal_keeps_the_last_decision_and_skips_broken_lines(tmp_path):
    files = {"train/cats/a.jpg": {"split": "train", "label": "cats"}, "test1/b.jpg": {"split": "test", "label": ""}}
    j = Journal(tmp_path / "journal.jsonl", files, ["cats", "dogs"])
    j.append("train/cats/a.jpg", "delete")
    j.append("train/cats/a.jpg", "relabel", "dogs", index=3)
    with open(j.path, "ab") as f:
        f.write(b'{"file": "train/cats/a.jpg", "act')  # a crash in the middle of a line
    with open(j.path, "ab") as f:
        f.write(b'\n{"file": "../../etc/passwd", "action": "delete"}\n')  # a hand-edited line
    current, order, skipped = j.read()
    assert current["train/cats/a.jpg"].action == "relabel" and current["train/cats/a.jpg"].label == "dogs"
    assert len(order) == 2 and skipped == 2
    j.append("train/cats/a.jpg", "relabel", "cats")  # to the label it has: a keep
    assert j.read()[0]["train/cats/a.jpg"].action == "keep"
    j.append("train/cats/a.jpg", "undecided")
    assert "train/cats/a.jpg" not in j.read()[0]
    for bad, match in ((("/etc/passwd", "delete"), "absolute"), (("train/../../x.jpg", "delete"), "plain relative"),
                       (("train/cats/other.jpg", "delete"), "not one of the files"),
                       (("train/cats/a.jpg", "burn"), "action must be"),
                       (("test1/b.jpg", "relabel", "dogs"), "unlabelled test set"),
                       (("train/cats/a.jpg", "relabel", "../dogs"), "cannot be a class folder"),
                       (("train/cats/a.jpg", "relabel", ".hidden"), "cannot be a class folder")):
        with pytest.raises(ReviewError, match=match):
            j.append(*bad)


# ---------------------------------------------------------------------------------------- the API
def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str, body, headers: dict) -> tuple[int, dict]:
    data = json.dumps(body).encode() if not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_api_needs_the_token_and_acts_only_on_listed_files_inside_the_data(found, tmp_path):
    root, planted, issues, clean = found
    clean, root = relocated(clean, root, tmp_path)
    outside = tmp_path / "secret.jpg"
    shutil.copyfile(photo("cat", 50), outside)
    server = ReviewServer(clean).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        tok = server.token
        listed = issues.label[0].file
        assert server.url.startswith("http://127.0.0.1:") and f"token={tok}" in server.url
        assert len(tok) >= 24
        # no token, a wrong token, another Host: refused
        assert _get(f"{base}/?x=1")[0] == 403
        assert _get(f"{base}/api/state?token=nope")[0] == 403
        assert _get(f"{base}/api/state?token={tok}", {"Host": f"evil.example:{server.port}"})[0] == 403
        status, body = _get(f"{base}/api/state?token={tok}")
        assert status == 200 and len(json.loads(body)["issues"]) == len(issues)
        status, body = _get(f"{base}/api/image?token={tok}&file={listed}")
        assert status == 200 and Image.open(io.BytesIO(body)).size[0] > 0
        # paths outside the data folder, absolute paths, files the clean folder does not list
        for bad in ("../secret.jpg", str(outside), "/etc/passwd", "train/cats/../../secret.jpg",
                    "train/cats/cat.5.jpg"):
            q = urllib.request.quote(bad)
            assert _get(f"{base}/api/image?token={tok}&file={q}")[0] == 400, bad
            assert _get(f"{base}/api/cam?token={tok}&file={q}")[0] == 400, bad
            status, body = _post(f"{base}/api/decide", {"file": bad, "action": "delete"}, {"X-Visiontune-Token": tok})
            assert status == 400 and "error" in body, bad
        # decisions: the token in the header (not only the URL), from this origin
        assert _post(f"{base}/api/decide?token={tok}", {"file": listed, "action": "delete"}, {})[0] == 403
        assert _post(f"{base}/api/decide", {"file": listed, "action": "delete"},
                     {"X-Visiontune-Token": tok, "Origin": "http://evil.example"})[0] == 403
        assert _post(f"{base}/api/decide", b"[not json", {"X-Visiontune-Token": tok})[0] == 400
        assert not clean.journal.exists()  # nothing refused reached the journal
        status, body = _post(f"{base}/api/decide", {"file": listed, "action": "delete", "index": 0},
                             {"X-Visiontune-Token": tok, "Origin": base})
        assert status == 200 and body["decision"]["action"] == "delete"
        assert [json.loads(x)["file"] for x in clean.journal.read_text().splitlines()] == [listed]
        assert outside.exists() and (root / listed).exists()  # deciding moves nothing
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------- apply and undo
def _decide(clean: CleanDir, *decisions) -> None:
    record = clean.read()
    j = Journal(clean.journal, record["files"], record["classes"], record.get("multi_label", False))
    for d in decisions:
        j.append(*d)


@pytest.mark.slow
def test_apply_skips_vanished_files_and_undo_restores_the_tree(found, tmp_path):
    root, planted, issues, clean = found
    clean, root = relocated(clean, root, tmp_path)
    flip_a, flip_b = (rel(root, root / "train" / "cats" / f.name) for f in planted["flips"])
    leak = rel(root, root / "valid" / "cats" / "cat.0-copy.jpg")
    tiny = rel(root, root / "train" / "cats" / "tiny.png")
    _decide(clean, (flip_a, "relabel", "dogs"), (flip_b, "relabel", "dogs"), (leak, "delete"), (tiny, "delete"))
    before = tree_hash(root)
    (root / tiny).unlink()  # gone since the review
    before_gone = tree_hash(root)
    plan = apply_decisions(clean, dry_run=True)
    assert not plan.applied and tree_hash(root) == before_gone and not clean.applied.exists()
    assert plan.vanished == [tiny] and len(plan.moves) == 3
    plan = apply_decisions(clean)
    assert plan.applied
    assert (root / "train" / "dogs" / "dog.30.jpg").is_file() and not (root / flip_a).exists()
    assert (clean.trash / leak).is_file() and not (root / leak).exists()
    assert "Skipped 1 decisions on files that no longer exist" in plan.summary()
    with pytest.raises(DataError, match="applied already"):
        apply_decisions(clean)
    assert undo_decisions(clean) == 3
    assert tree_hash(root) == before_gone
    assert not clean.trash.exists()
    with pytest.raises(DataError, match="undone already"):
        undo_decisions(clean)
    del before


@pytest.mark.slow
def test_an_apply_killed_between_two_moves_is_finished_by_applying_again(found, tmp_path):
    """kill -9 after the second of four moves (the fault campaign's `kill -9 clean --apply`): every file whole in
    exactly one place; apply again finishes the recorded moves (it used to refuse: "applied already"), giving
    the tree an uninterrupted apply gives; undo then gives back the original tree."""
    root, planted, issues, clean = found
    done_clean, done_root = relocated(clean, root, tmp_path / "uninterrupted")
    clean, root = relocated(clean, root, tmp_path / "killed")
    flip_a, flip_b = (rel(root, root / "train" / "cats" / f.name) for f in planted["flips"])
    leak = rel(root, root / "valid" / "cats" / "cat.0-copy.jpg")
    tiny = rel(root, root / "train" / "cats" / "tiny.png")
    decisions = ((flip_a, "relabel", "dogs"), (flip_b, "relabel", "dogs"), (leak, "delete"), (tiny, "delete"))
    _decide(clean, *decisions)
    _decide(done_clean, *decisions)
    original, before = tree_hash(root), contents(root)
    apply_decisions(done_clean)
    r = cli("clean", "--apply", str(clean.path), env={**env(), "VISIONTUNE_FAILPOINT": "clean-move:2"})
    assert r.returncode == -9, r.stderr
    moved = [p for p in (root / flip_a, root / flip_b, root / leak, root / tiny) if not p.exists()]
    assert len(moved) == 2 and json.loads(clean.applied.read_text())["state"] == "applying"
    assert contents(root, clean.trash) == before  # nothing lost, nothing doubled, nothing half-written
    r = cli("clean", "--apply", str(clean.path))
    assert r.returncode == 0, r.stderr
    assert tree_hash(root) == tree_hash(done_root) and tree_hash(clean.trash) == tree_hash(done_clean.trash)
    with pytest.raises(DataError, match="applied already"):
        apply_decisions(clean)
    assert undo_decisions(clean) == 4
    assert tree_hash(root) == original and not clean.trash.exists()


@pytest.mark.slow
def test_relabel_to_a_new_class_needs_consent_and_undo_removes_its_folder(found, tmp_path):
    root, planted, issues, clean = found
    clean, root = relocated(clean, root, tmp_path)
    target = rel(root, root / "train" / "cats" / planted["flips"][0].name)
    _decide(clean, (target, "relabel", "foxes"))
    before = tree_hash(root)
    with pytest.raises(ConfigError, match="the data does not have: 'foxes'.*--yes"):
        apply_decisions(clean)
    assert tree_hash(root) == before and not clean.applied.exists()
    r = cli("clean", "--apply", str(clean.path))  # not a terminal: no question, one error
    assert r.returncode == 1 and "--yes" in r.stderr and "Traceback" not in r.stderr
    assert tree_hash(root) == before
    plan = apply_decisions(clean, create_classes=True)  # what --yes (or answering the question) does
    assert (root / "train" / "foxes" / planted["flips"][0].name).is_file()
    assert plan.created_dirs == ["train/foxes"] and "New folders: train/foxes" in plan.summary()
    assert undo_decisions(clean) == 1
    assert tree_hash(root) == before and not (root / "train" / "foxes").exists()


@pytest.mark.slow
def test_a_second_apply_refuses_while_one_holds_the_lock(found, tmp_path):
    root, planted, issues, clean = found
    clean, root = relocated(clean, root, tmp_path)
    target = rel(root, root / "train" / "cats" / planted["flips"][0].name)
    _decide(clean, (target, "delete"))
    before = tree_hash(root)
    with data_lock(root):  # an apply in progress in this process
        r = cli("clean", "--apply", str(clean.path))
    assert r.returncode == 1 and "Another `visiontune clean --apply` or `--undo` is working on" in r.stderr
    assert f"pid {os.getpid()}" in r.stderr and "Traceback" not in r.stderr
    assert tree_hash(root) == before and not clean.applied.exists()
    assert apply_decisions(clean).applied and (clean.trash / target).is_file()  # released: it goes through


def _without_root_powers() -> list[str]:
    """A command prefix under which permission bits bind: as root, drop the capabilities that ignore them."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps]


@pytest.mark.slow
def test_unwritable_data_finds_and_reviews_but_apply_stops_before_the_first_move(found, tmp_path):
    root0, planted, issues, clean0 = found
    clean, root = relocated(clean0, root0, tmp_path)
    target = rel(root, root / "train" / "cats" / planted["flips"][0].name)
    _decide(clean, (target, "relabel", "dogs"), (rel(root, root / "valid" / "cats" / "cat.0-copy.jpg"), "delete"))
    prefix = _without_root_powers()
    folders = [p for p in [root, *root.rglob("*")] if p.is_dir()]
    for p in folders:
        os.chmod(p, 0o555)
    try:
        before = tree_hash(root)
        run = lambda *args: subprocess.run([*prefix, sys.executable, "-m", "visiontune", *args],  # noqa: E731
                                           capture_output=True, text=True, timeout=300, env=env())
        r = run("clean", str(root), "--size", "64", "--test", "test1", "--out", str(tmp_path / "out"))
        assert r.returncode == 0, r.stderr
        assert "Nothing in" in r.stdout and list((tmp_path / "out").glob("dogscats/clean-*/issues.json"))
        server = ReviewServer(clean)  # the page's data reads fine
        assert len(server.state()["issues"]) == len(issues)
        server.httpd.server_close()
        r = run("clean", "--apply", str(clean.path))
        assert r.returncode == 1
        assert "is not writable" in r.stderr and "Nothing was moved" in r.stderr and "Traceback" not in r.stderr
        assert r.stderr.count("error:") == 1
        assert tree_hash(root) == before and not clean.applied.exists()
    finally:
        for p in folders:
            os.chmod(p, 0o755)


def test_cli_errors_are_one_message(tmp_path, capsys):
    from visiontune.cli import main

    for args, message in ((["clean", "--apply", str(tmp_path)], "is not a clean folder"),
                          (["clean", str(tmp_path / "missing")], "does not exist"),
                          (["clean", str(tmp_path), "--dry-run"], "--dry-run goes with --apply"),
                          (["clean", str(tmp_path), "--apply", "--undo"], "Choose one of")):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and message in err and "Traceback" not in err, (args, err)
        assert err.count("error:") == 1


# ---------------------------------------------------------------------------------------- the run report
def test_run_report_shows_the_data_issues_of_its_data(tmp_path):
    root = make_image_folder(tmp_path / "colors", classes=("red", "blue"), n_train=10, n_valid=4)
    hostile = root / "train" / "red" / "<img src=x onerror=alert(1)>.png"
    shutil.copyfile(root / "train" / "blue" / "blue_0.png", hostile)  # a blue picture filed as red
    shutil.copyfile(root / "train" / "red" / "red_0.png", root / "valid" / "red" / "red_0_copy.png")  # a leak
    data = vt.ImageData.from_folder(root, size=32, bs=8)
    torch.manual_seed(0)
    issues = find_issues(data, folds=3)
    assert hostile.name in {Path(r.file).name for r in issues.label}
    clean = issues.save(runs=tmp_path / "runs")
    learn = vt.vision_learner(data, runs=tmp_path / "runs")
    learn.fit_one_cycle(1)
    page = (learn.run.path / "report.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="data-issues">(.*?)</section>', page, re.S).group(1)
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in section and "<img src=x" not in page
    assert "leak group" in section and "red_0_copy.png" in section
    assert html_escape(str(clean.path)) in section
    from visiontune.runs.cleandir import newest_clean_dir

    assert newest_clean_dir(learn.run.path.parent, tmp_path / "elsewhere") is None  # only for the same data


def html_escape(s: str) -> str:
    import html

    return html.escape(s)


# ---------------------------------------------------------------------------------------- notebooks
@pytest.mark.slow
def test_review_in_a_notebook_is_an_iframe_to_the_running_page(found, tmp_path):
    root, planted, issues, clean = found
    clean, root = relocated(clean, root, tmp_path)
    session = vt.review(clean)
    try:
        frame = session._repr_html_()
        assert f'<iframe src="{session.url.replace("&", "&amp;")}"' in frame
        status, body = _get(session.url)
        assert status == 200 and b'id="cards"' in body
        assert _get(session.url.replace("token=", "token=x"))[0] == 403
    finally:
        session.stop()


# ---------------------------------------------------------------------------------------- the real browser
def _start_review(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "visiontune", "clean", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env())
    lines: list[str] = []
    found_url: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"Review page: (http://127\.0\.0\.1:\d+/\?token=\S+)", line)
            if m:
                found_url.append(m.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.time() + 240
    while not found_url and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    if not found_url:
        proc.kill()
        raise AssertionError("no review URL printed:\n" + "".join(lines))
    return proc, found_url[0]


@pytest.mark.slow
@pytest.mark.browser
@needs_photos
def test_review_page_in_headless_chromium_then_apply_and_undo(tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Chromium and chromedriver are not installed")
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    dogs = "dogs<img src=x onerror=window.pwned=1>"  # hostile class and file names, as a download may hold
    nasty = "<svg onload=window.pwned2=1>.jpg"
    root = tmp_path / "dogscats"
    planted = make_dogscats(root, dogs=dogs, flipped_name=nasty)
    before = tree_hash(root)
    runs = tmp_path / "runs"
    proc, url = _start_review([str(root), "--review", "--size", str(SIZE), "--test", "test1", "--out", str(runs)])
    assert tree_hash(root) == before  # finding and serving wrote nothing into the data
    clean = CleanDir(next(runs.glob("dogscats/clean-*")))
    driver = chrome_driver(tmp_path / "chromium-profile", "--window-size=1280,900")
    wait = WebDriverWait(driver, 60)
    a_file, b_file = f"train/cats/{nasty}", "train/cats/dog.31.jpg"

    def card(file: str):
        for c in driver.find_elements(By.CSS_SELECTOR, "#cards .card"):
            if c.get_attribute("data-file") == file:
                return c
        raise AssertionError(f"no card for {file}")

    try:
        driver.get(url)
        wait.until(lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1")
        text = driver.find_element(By.TAG_NAME, "body").text
        assert nasty in text and dogs in text  # shown as text ...
        assert driver.execute_script("return [window.pwned, window.pwned2, document.querySelectorAll("
                                     "'img[src=\"x\"], svg').length]") == [None, None, 0]  # ... never as markup
        assert "label issues" in driver.find_element(By.CSS_SELECTOR, "#tabs button.active").text
        # relabel A with a click on the class menu; delete B with the keyboard
        Select(card(a_file).find_element(By.CSS_SELECTOR, "select[data-action=relabel-to]")).select_by_value(dogs)
        wait.until(lambda d: card(a_file).get_attribute("data-decision") == "relabel")
        card(b_file).click()
        driver.find_element(By.TAG_NAME, "body").send_keys("d")
        wait.until(lambda d: card(b_file).get_attribute("data-decision") == "delete")
        assert "decided 2 of" in driver.find_element(By.ID, "counts").text
        # keyboard navigation and Grad-CAM on demand
        current = lambda: driver.execute_script(  # noqa: E731
            "return document.querySelector('#cards .card.current').getAttribute('data-index')")
        first = current()
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_UP)
        assert current() != first
        driver.find_element(By.TAG_NAME, "body").send_keys("g")
        wait.until(lambda d: d.execute_script("const i = document.querySelector('#cards .card.current img.cam');"
                                              "return i && i.complete && i.naturalWidth > 0"))
        # a reload resumes: both decisions are still shown
        driver.refresh()
        wait.until(lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1")
        assert card(a_file).get_attribute("data-decision") == "relabel"
        assert card(a_file).find_element(By.CSS_SELECTOR, ".decision").text == f"relabel to {dogs}"
        assert card(b_file).get_attribute("data-decision") == "delete"
        assert "decided 2 of" in driver.find_element(By.ID, "counts").text
        assert driver.execute_script("return [window.pwned, window.pwned2]") == [None, None]
        if os.environ.get("VISIONTUNE_SCREENSHOTS"):
            driver.save_screenshot(str(Path(os.environ["VISIONTUNE_SCREENSHOTS"]) / "clean-review.png"))
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
    lines = [json.loads(x) for x in clean.journal.read_text().splitlines()]
    assert [(x["file"], x["action"]) for x in lines] == [(a_file, "relabel"), (b_file, "delete")]
    assert tree_hash(root) == before  # reviewing changed nothing in DATA

    r = cli("clean", "--apply", str(clean.path), "--dry-run")
    assert r.returncode == 0 and "Dry run: nothing was moved" in r.stdout and tree_hash(root) == before
    record = clean.read()
    cache_dir = Path(record["cache_dir"])
    acts_before = sorted(p.name for p in (cache_dir / "activations").glob("*.json"))
    r = cli("clean", "--apply", str(clean.path))
    assert r.returncode == 0, r.stderr
    assert (root / "train" / dogs / nasty).is_file() and not (root / a_file).exists()
    assert (clean.trash / b_file).is_file() and not (root / b_file).exists()
    assert "Moved 1 files to another class folder and 1 to" in r.stdout
    # the caches that covered the moved files are gone, and the next run rebuilds them
    acts_after = sorted(p.name for p in (cache_dir / "activations").glob("*.json"))
    assert len(acts_after) == len(acts_before) - 1  # train's (both files were in train); valid's and test's stay
    index = json.loads((cache_dir / "images" / f"s{vt.ImageData.from_folder(root, size=SIZE).presize}" /
                        "index.json").read_text())
    assert str(root / a_file) not in index["entries"] and str(root / b_file) not in index["entries"]
    data = vt.ImageData.from_folder(root, size=SIZE, bs=16)
    learn = vt.vision_learner(data, precompute=True)
    from visiontune.train.precompute import feature_loader

    feature_loader(learn, "train", shuffle=False)
    assert learn.activation_cache.n_computed == len(data.train_ds) - 1  # the truncated file does not decode
    assert str(root / "train" / dogs / nasty) in json.loads(
        (cache_dir / "images" / f"s{data.presize}" / "index.json").read_text())["entries"]

    r = cli("clean", "--undo", str(clean.path))
    assert r.returncode == 0 and "Put back 2 files" in r.stdout, r.stderr
    assert tree_hash(root) == before

"""Kaggle submission CSVs: columns in class order, rows in id order, clipping, a single binary column."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import visiontune as vt


def read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_columns_follow_the_classes_and_rows_the_ids(tmp_path):
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.01, 0.01, 0.98]])
    out = vt.write_submission(probs, ["b", "a"], tmp_path / "sub.csv", classes=["cat", "dog", "fox"])
    rows = read(out)
    assert rows[0] == ["id", "cat", "dog", "fox"]
    assert [r[0] for r in rows[1:]] == ["b", "a"]
    assert np.allclose(np.array(rows[1:])[:, 1:].astype(float), probs.numpy())


@pytest.mark.parametrize("clip,lo,hi", [(0.05, 0.05, 0.95), ((0.02, 0.9), 0.02, 0.9)])
def test_clip_bounds_every_probability(tmp_path, clip, lo, hi):
    probs = np.array([[0.0, 1.0], [0.5, 0.5], [0.999, 0.001]])
    rows = read(vt.write_submission(probs, [1, 2, 3], tmp_path / "s.csv", classes=["x", "y"], clip=clip))
    values = np.array(rows[1:])[:, 1:].astype(float)
    assert values.min() == pytest.approx(lo) and values.max() == pytest.approx(hi)
    assert values[1].tolist() == [0.5, 0.5]


def test_single_column_for_binary_tasks(tmp_path):
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    rows = read(vt.write_submission(probs, [1, 2], tmp_path / "s.csv", classes=["cats", "dogs"], column="dogs",
                                    column_header="label", clip=0.05))
    assert rows == [["id", "label"], ["1", "0.1"], ["2", "0.8"]]
    rows = read(vt.write_submission(probs, [1, 2], tmp_path / "s.csv", classes=["cats", "dogs"], column="cats"))
    assert rows[0] == ["id", "cats"] and rows[1][1] == "0.9"


def test_default_class_names_are_indices(tmp_path):
    rows = read(vt.write_submission(np.eye(3), ["a", "b", "c"], tmp_path / "s.csv"))
    assert rows[0] == ["id", "0", "1", "2"]


@pytest.mark.parametrize("kwargs,msg", [
    ({"ids": [1]}, "1 ids for 2 rows"),
    ({"ids": [1, 1]}, "Duplicate id"),
    ({"classes": ["a"]}, "1 class names"),
    ({"column": "zebra"}, "not a class"),
    ({"clip": 0.6}, "below 0.5"),
    ({"clip": (0.9, 0.1)}, "low < high"),
    ({"probs": [[np.nan, 0.5], [0.5, 0.5]]}, "NaN"),
])
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, msg):
    args = {"probs": [[0.5, 0.5], [0.1, 0.9]], "ids": [1, 2], "path": tmp_path / "s.csv", "classes": ["a", "b"]}
    args.update(kwargs)
    with pytest.raises(vt.ConfigError, match=msg):
        vt.write_submission(**args)
    assert not (tmp_path / "s.csv").exists()

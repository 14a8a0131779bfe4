"""ClassificationInterpretation: confusion matrix, most_confused, top losses and the five views, on hand-made
predictions whose answers are worked out here, and on a real learner whose losses are recomputed independently."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import visiontune as vt
from visiontune.errors import ConfigError
from visiontune.interpret import ClassificationInterpretation
from visiontune.interpret.interpretation import loss_from_probs

from conftest import make_image_folder


@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    """A 3-colour learner trained for one epoch; valid position 0 is a file that cannot be decoded."""
    root = make_image_folder(tmp_path_factory.mktemp("interp") / "colors3", classes=("red", "green", "blue"),
                             n_train=12, n_valid=5)
    (root / "valid" / "blue" / "a_broken.png").write_bytes(b"not a png at all")  # sorts first in valid
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(root, size=32, bs=8)
    learner = vt.vision_learner(data)
    with pytest.warns(UserWarning, match="a_broken.png"):
        learner.fit_one_cycle(1)
    return learner


# targets and predictions of the hand-made case (classes blue, green, red):
#   actual  0 0 0 1 1 2 2 2 2
#   pred    0 1 2 1 0 2 2 0 0
HAND_PROBS = torch.tensor([
    [0.90, 0.05, 0.05],  # 0: blue, right, very sure
    [0.30, 0.60, 0.10],  # 1: blue taken for green
    [0.20, 0.10, 0.70],  # 2: blue taken for red
    [0.45, 0.55, 0.00],  # 3: green, right, barely (margin 0.10)
    [0.52, 0.48, 0.00],  # 4: green taken for blue (margin 0.04: the most uncertain)
    [0.10, 0.10, 0.80],  # 5: red, right
    [0.05, 0.05, 0.90],  # 6: red, right, surest
    [0.60, 0.00, 0.40],  # 7: red taken for blue
    [0.95, 0.00, 0.05],  # 8: red taken for blue, surest it is not red
])
HAND_TARGETS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])


@pytest.fixture
def hand(learn):
    """The hand-made predictions on the learner's classes; dataset positions are 10.. so rows != positions."""
    assert learn.data.classes == ["blue", "green", "red"]
    index = torch.arange(10, 19)
    return ClassificationInterpretation(learn, HAND_PROBS, HAND_TARGETS, loss_from_probs(HAND_PROBS, HAND_TARGETS), index)


def test_confusion_matrix_matches_hand_computed_case(hand):
    cm = hand.confusion_matrix()
    assert cm.tolist() == [[1, 1, 1], [1, 1, 0], [2, 0, 2]]
    assert cm.sum() == 9


def test_most_confused_sorted_by_count_then_class_order(hand):
    assert hand.most_confused() == [("red", "blue", 2), ("blue", "green", 1), ("blue", "red", 1), ("green", "blue", 1)]
    assert hand.most_confused(min_val=2) == [("red", "blue", 2)]
    assert hand.most_confused(min_val=3) == []


def test_five_views_pick_the_pictures_the_course_means(hand):
    pos = lambda rows: (np.asarray(rows) + 10).tolist()  # noqa: E731  (rows -> dataset positions)
    assert hand.most_correct("red", 4).tolist() == pos([6, 5])  # actual red, predicted red, surest first
    assert hand.most_correct(0).tolist() == pos([0])
    assert hand.most_incorrect("red").tolist() == pos([8, 7])  # lowest probability of red first
    assert hand.most_incorrect("green").tolist() == pos([4])
    assert hand.most_uncertain(3).tolist() == pos([4, 3, 7])  # margins 0.04, 0.10, 0.20
    correct = set(pos([0, 3, 5, 6]))
    assert set(hand.random_correct(10).tolist()) == correct
    assert set(hand.random_incorrect(2, seed=1).tolist()) <= set(pos([1, 2, 4, 7, 8]))
    assert hand.random_incorrect(3, seed=5).tolist() == hand.random_incorrect(3, seed=5).tolist()
    with pytest.raises(ConfigError, match="Unknown class 'cat'.*blue, green, red"):
        hand.most_correct("cat")


def test_top_losses_are_largest_first_with_positions(hand):
    losses, idx = hand.top_losses(3)
    expected = -torch.log(HAND_PROBS[[8, 2, 1], HAND_TARGETS[[8, 2, 1]]])  # p(actual) 0.05, 0.2, 0.3
    assert torch.allclose(losses, expected)
    assert idx.tolist() == [18, 12, 11]
    all_losses, _ = hand.top_losses()
    assert len(all_losses) == 9 and (all_losses[:-1] >= all_losses[1:]).all()


def test_most_uncertain_binary_is_nearest_half(learn):
    probs = torch.tensor([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8], [0.51, 0.49]])
    targets = torch.tensor([0, 1, 1, 0])
    interp = ClassificationInterpretation(learn, probs, targets, loss_from_probs(probs, targets), torch.arange(4))
    assert interp.most_uncertain(2).tolist() == [3, 1]


def test_multi_label_gives_per_class_precision_recall_f2(learn):
    probs = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.2, 0.6], [0.1, 0.9, 0.2], [0.6, 0.1, 0.1]])
    targets = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.float32)
    interp = ClassificationInterpretation(learn, probs, targets, loss_from_probs(probs, targets), torch.arange(4))
    rows = {r["class"]: r for r in interp.per_class()}
    # blue: predicted for items 0, 1, 3; actual 0, 1 -> precision 2/3, recall 1
    assert rows["blue"]["precision"] == pytest.approx(2 / 3) and rows["blue"]["recall"] == pytest.approx(1.0)
    assert rows["blue"]["f2"] == pytest.approx(5 * (2 / 3) / (4 * (2 / 3) + 1))
    # red: predicted for item 1 only (wrong); actual 2, 3 -> precision 0, recall 0
    assert rows["red"]["precision"] == 0 and rows["red"]["recall"] == 0 and rows["red"]["support"] == 2
    assert interp.accuracy() == pytest.approx(0.25)  # only item 0 has every label right
    with pytest.raises(ConfigError, match="per_class"):
        interp.confusion_matrix()


def test_real_learner_matrix_counts_decoded_items_and_maps_rows_to_files(learn):
    interp = learn.interpret()
    n_files = len(learn.data.valid_ds)
    assert n_files == 16 and len(interp) == 15  # the broken file is left out
    assert interp.confusion_matrix().sum() == 15
    assert 0 not in interp.index.tolist()  # position 0 is the broken file
    for r, p in enumerate(interp.index.tolist()):  # each row's label is its file's folder
        assert interp.file(p).parent.name == interp.classes[int(interp.targets[r])]


def test_top_losses_equal_loss_recomputed_from_single_predictions(learn):
    interp = learn.interpret()
    losses, idx = interp.top_losses(5)
    classes = learn.data.classes
    recomputed = {}
    for f_pos, f in enumerate(learn.data.valid_ds.files):
        if f.name == "a_broken.png":
            continue
        _, _, probs = learn.predict(f)  # one image at a time, through a different path than get_preds
        recomputed[f_pos] = -math.log(float(probs[classes.index(f.parent.name)]))
    for loss, p in zip(losses.tolist(), idx.tolist()):
        assert loss == pytest.approx(recomputed[p], rel=1e-4, abs=1e-5)
    rest = [v for p, v in recomputed.items() if p not in idx.tolist()]
    assert min(losses.tolist()) >= max(rest) - 1e-5


def test_plots_return_figures_and_write_pngs(learn, tmp_path):
    interp = learn.interpret()
    calls = {
        "cm": lambda p: interp.plot_confusion_matrix(p, normalize=True),
        "top": lambda p: interp.plot_top_losses(4, p),
        "rc": lambda p: interp.plot_random_correct(3, p, seed=0),
        "ri": lambda p: interp.plot_random_incorrect(3, p),
        "mc": lambda p: interp.plot_most_correct("red", 2, p),
        "mi": lambda p: interp.plot_most_incorrect("red", 2, p),
        "mu": lambda p: interp.plot_most_uncertain(3, p, heatmap=True),
        "filters": lambda p: interp.plot_filters(p),
        "acts": lambda p: interp.plot_activations(learn.data.valid_ds.files[1], p, n=4),
    }
    for name, call in calls.items():
        path = tmp_path / "plots" / f"{name}.png"
        fig = call(path)
        assert isinstance(fig, Figure), name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n", name  # what Jupyter shows, pyplot or not
    items = interp.items(interp.top_losses(2)[1], heatmap=True)
    size = learn.data.size
    assert items[0]["image"].shape == items[0]["heatmap"].shape == (size, size, 3)
    assert not np.array_equal(items[0]["image"], items[0]["heatmap"])
    assert isinstance(items[0]["file"], Path) and items[0]["file"].exists()


def test_interpret_needs_labels_and_known_positions(learn):
    interp = learn.interpret()
    with pytest.raises(ConfigError, match="Position 0 .* could not be decoded"):
        interp.items([0])
    with pytest.raises(ConfigError, match="cam_class"):
        interp.plot_top_losses(2, heatmap=True, cam_class="both")


def test_tta_interpretation_uses_averaged_probabilities(learn):
    interp = learn.interpret(tta=True)
    assert len(interp) == 15 and interp.confusion_matrix().sum() == 15
    expected = -torch.log(interp.probs.gather(1, interp.targets[:, None])[:, 0].clamp_min(1e-7))
    assert torch.allclose(interp.losses, expected, atol=1e-5)

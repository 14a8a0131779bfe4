"""lr_find: exponential sweep, exact restore of model and optimizer, and a suggestion where the loss falls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import visiontune as vt
from visiontune.data.loader import EpochSampler
from visiontune.train.lr_find import suggest


class _Indexed(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


class TensorData:
    """The smallest data object a Learner accepts: tensors instead of images."""

    def __init__(self, x, y, bs=32):
        self.ds, self.bs, self.path = _Indexed(x, y), bs, None
        self.classes, self.mean, self.std, self.is_multi_label = ["y"], None, None, False

    def dataset(self, ds):
        return self.ds

    def loader(self, ds="train", bs=None, augment=True, device="cpu", shuffle=None, **kw):
        return DataLoader(self.ds, batch_size=bs or self.bs, sampler=EpochSampler(len(self.ds), ds == "train"))


def regression_learner(opt="sgd"):
    """Least squares with inputs ~ N(0, I): the Hessian is ~2I, so plain SGD diverges above lr ~ 1."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 10, generator=g)
    w = torch.randn(10, 1, generator=g)
    y = x @ w
    torch.manual_seed(0)
    model = nn.Linear(10, 1)
    learn = vt.Learner(TensorData(x, y), model, loss_func=nn.MSELoss(), metrics=(), opt=opt, wd=0.0, path=".")
    learn.create_opt()
    for pg in learn.opt.param_groups:
        pg["momentum"] = 0.0
    return learn


def test_suggestion_lies_where_the_loss_falls_and_below_divergence():
    learn = regression_learner()
    res = learn.lr_find(start_lr=1e-5, end_lr=100, num_it=120)
    lrs, losses = np.array(res.lrs), np.array(res.losses)
    assert lrs[-1] < 100  # stopped early: the loss blew up
    assert np.all(np.diff(np.log(lrs)) == pytest.approx(np.log(lrs[1] / lrs[0])))  # exponential steps
    assert 1e-3 < res.suggestion < 1.0
    i = int(np.searchsorted(lrs, res.suggestion))
    assert losses[i + 3] < losses[i - 3]  # still going down around the suggestion
    assert res.steep < 1.0 and res.minimum < 1.0


def test_weights_and_optimizer_restored_bit_identical(image_folder):
    data = vt.ImageData.from_folder(image_folder, size=32, bs=8)
    learn = vt.vision_learner(data)
    learn.fit(1e-3, 1)  # the optimizer now has state worth keeping
    model_before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt_before = learn.opt.state_dict()
    opt_before_state = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in v.items()}
                        for k, v in opt_before["state"].items()}
    lrs_before = [pg["lr"] for pg in learn.opt.param_groups]
    res = learn.lr_find(num_it=10, stop_div=False)  # all 10 steps, wherever the loss would blow up on this CPU
    assert len(res.lrs) == 10  # 4 batches per epoch: the loader was cycled
    for k, v in learn.model.state_dict().items():
        assert torch.equal(v, model_before[k]), k
    after = learn.opt.state_dict()
    for k, v in opt_before_state.items():
        for n, t in v.items():
            assert torch.equal(after["state"][k][n], t) if torch.is_tensor(t) else after["state"][k][n] == t
    assert [pg["lr"] for pg in learn.opt.param_groups] == lrs_before


def test_plot_marks_suggestions(tmp_path):
    learn = regression_learner()
    res = learn.lr_find(start_lr=1e-5, end_lr=100, num_it=60)
    fig = res.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 1000
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(l.startswith("valley") for l in labels) and any(l.startswith("steep") for l in labels)


def test_suggest_on_a_known_curve():
    lrs = list(np.logspace(-6, 0, 60))
    # flat, then falling between 1e-4 and 1e-2, then exploding
    losses = [2.0 if lr < 1e-4 else (2.0 - math.log10(lr / 1e-4) if lr < 1e-2 else 10 * lr) for lr in lrs]
    valley, steep, minimum = suggest(lrs, losses)
    assert 1e-4 < valley < 1e-2 and 1e-4 <= steep <= 1e-2
    assert minimum == pytest.approx(lrs[int(np.argmin(losses))] / 10)

"""Folded BatchNorm for inference: the copy computes what the model computes, and predictions follow the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infer_helpers import tiny_learner
from visiontune.models.fold import fold_batchnorm


@pytest.fixture(scope="module")
def learn(tmp_path_factory):
    return tiny_learner(tmp_path_factory.mktemp("fold") / "colors")


def valid_batch(learn) -> torch.Tensor:
    return next(iter(learn.dl("valid", augment=False)))[0]


def unfolded_probs(learn) -> torch.Tensor:
    """What get_preds should return: learn.model itself over the valid batches."""
    learn.model.eval()
    with torch.inference_mode():
        return torch.cat([torch.softmax(learn.model(x), 1) for x, *_ in learn.dl("valid", augment=False)])


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_lite0_matches_the_model_and_leaves_it_untouched(learn):
    x = valid_batch(learn)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.model.eval()
    folded = fold_batchnorm(learn.model, x)
    assert folded is not None
    assert batchnorms(learn.model) == 49 and batchnorms(folded) == 0  # every BatchNorm of Lite0 follows a conv
    with torch.inference_mode():
        want, got = learn.model(x), folded(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    after = learn.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    strides = [[m.weight.stride() for m in model.modules() if isinstance(m, nn.Conv2d)]
               for model in (learn.model, folded)]
    assert strides[0] == strides[1]  # the memory format (channels_last on the CPU) is kept
    assert not any(p.requires_grad for p in folded.parameters())


def test_get_preds_follows_every_change_to_the_weights(learn):
    first, _ = learn.get_preds()
    assert torch.allclose(first, unfolded_probs(learn), atol=1e-5)
    in_use = learn.__dict__["_folded"][2]  # get_preds ran the folded copy, not learn.model
    assert in_use is not None and batchnorms(in_use) == 0
    conv = next(m for m in learn.model.modules() if isinstance(m, nn.Conv2d))
    bn = next(m for m in learn.model.modules() if isinstance(m, nn.BatchNorm2d))
    saved = {k: v.clone() for k, v in learn.model.state_dict().items()}
    try:
        conv.weight.data.mul_(-1.5)  # through .data: no version counter sees it
        edited, _ = learn.get_preds()
        assert not torch.allclose(edited, first, atol=1e-3)
        assert torch.allclose(edited, unfolded_probs(learn), atol=1e-5)
        with torch.no_grad():
            bn.running_var.mul_(4.0)  # a buffer, in place
        stats, _ = learn.get_preds()
        assert not torch.allclose(stats, edited, atol=1e-3)
        assert torch.allclose(stats, unfolded_probs(learn), atol=1e-5)
    finally:
        learn.model.load_state_dict(saved)
    restored, _ = learn.get_preds()
    assert torch.allclose(restored, first, atol=1e-6)


def test_forward_hooks_on_the_model_still_run(learn):
    calls = []
    handle = learn.model.head.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        probs, _ = learn.get_preds()
    finally:
        handle.remove()
    assert sum(calls) == len(probs) == 12


class Residual(nn.Module):
    """conv -> bn, with the conv's output also added back: folding the bn would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def with_stats(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def test_a_convolution_whose_output_is_used_twice_is_not_folded():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert fold_batchnorm(with_stats(Residual()), x) is None  # the check on x refuses it

    plain = with_stats(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU()))
    folded = fold_batchnorm(plain, x)
    assert folded is not None and batchnorms(folded) == 0 and batchnorms(plain) == 1
    with torch.no_grad():
        assert torch.allclose(folded(x), plain(x), atol=1e-5)


def test_non_finite_weights_predict_unfolded_without_refolding_each_call(learn):
    conv = next(m for m in learn.model.modules() if isinstance(m, nn.Conv2d))
    saved = conv.weight.detach().clone()
    try:
        conv.weight.data[0, 0, 0, 0] = float("nan")
        learn.get_preds()
        entry = learn.__dict__["_folded"]
        assert entry[2] is None  # the copy's check refused it
        learn.get_preds()
        assert learn.__dict__["_folded"] is entry  # the same weights: not copied and probed again
    finally:
        conv.weight.data.copy_(saved)


def test_each_module_keeps_its_own_mode():
    model = with_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    assert fold_batchnorm(model, torch.randn(2, 3, 8, 8)) is not None
    assert [m.training for m in model] == [True, False, True, True] and model.training

"""Schedules checked against their formulas, learning rates landing in the optimizer as asked, SGDR
epoch counts and snapshots, and fine_tune's two phases."""

from __future__ import annotations


import pytest
import torch

import visiontune as vt
from visiontune.train import schedules as S
from visiontune.train.optim import lr_per_group


@pytest.fixture
def learn(image_folder):
    torch.manual_seed(0)
    data = vt.ImageData.from_folder(image_folder, size=32, bs=8)  # 32 train images -> 4 batches
    return vt.vision_learner(data)


def test_one_cycle_formula_points():
    s = S.one_cycle_schedule(div=25, div_final=1e5, pct_start=0.25, moms=(0.95, 0.85, 0.95))
    assert s.lr_mult(0.0) == pytest.approx(1 / 25)
    assert s.lr_mult(0.25) == pytest.approx(1.0)
    assert s.lr_mult(1.0) == pytest.approx(1e-5)
    # halfway through warm-up: cosine midpoint between 1/25 and 1
    assert s.lr_mult(0.125) == pytest.approx((1 / 25 + 1) / 2)
    assert s.mom(0.0) == pytest.approx(0.95)
    assert s.mom(0.25) == pytest.approx(0.85)
    assert s.mom(1.0) == pytest.approx(0.95)
    # halfway through annealing: midpoint of 1 and 1e-5
    assert s.lr_mult(0.625) == pytest.approx((1 + 1e-5) / 2)


def test_sgdr_cycles_and_restarts():
    assert S.sgdr_cycles(3, 1, 2) == (1, 2, 4)
    assert S.sgdr_cycles(2, 2, 1) == (2, 2)
    s = S.sgdr_schedule((1, 2, 4))
    total = 7
    for start in (0, 1, 3):  # restarts at epochs 0, 1, 3 of 7
        assert s.lr_mult(start / total) == pytest.approx(1.0)
    assert s.lr_mult((1 + 1.0) / total) == pytest.approx(0.5)  # middle of the 2-epoch cycle
    assert s.lr_mult(0.999999) < 1e-4
    assert [S.cycle_of_epoch((1, 2, 4), e) for e in range(7)] == [0, 1, 1, 2, 2, 2, 2]


def test_lrs_float_list_slice():
    assert lr_per_group(1e-2, 3) == [1e-2] * 3
    assert lr_per_group([1e-4, 1e-3, 1e-2], 3) == [1e-4, 1e-3, 1e-2]
    lo, mid, hi = lr_per_group(slice(1e-5, 1e-3), 3)
    assert (lo, hi) == pytest.approx((1e-5, 1e-3)) and mid == pytest.approx(1e-4)
    assert lr_per_group(slice(1e-3), 3) == pytest.approx([1e-4, 1e-4, 1e-3])
    with pytest.raises(vt.ConfigError, match="3 layer groups"):
        lr_per_group([1e-3, 1e-2], 3)


def test_discriminative_lrs_land_in_param_groups(learn):
    learn.unfreeze()
    learn.fit([1e-4, 1e-3, 1e-2], 1)
    by_group = {}
    for pg in learn.opt.param_groups:
        by_group.setdefault(pg["layer_group"], set()).add(pg["lr"])
    assert by_group == {0: {1e-4}, 1: {1e-3}, 2: {1e-2}}
    # norm and bias parameters get no weight decay
    for pg in learn.opt.param_groups:
        if any(p.ndim <= 1 for p in pg["params"]):
            assert pg["weight_decay"] == 0.0


def test_fit_one_cycle_applies_schedule_per_batch(learn):
    learn.fit_one_cycle(2, 1e-2, div=25, div_final=1e5, pct_start=0.25)
    lrs, moms = learn.recorder.lrs, learn.recorder.moms
    n = len(lrs)  # 2 epochs x 4 batches
    assert n == 8
    s = S.one_cycle_schedule(25, 1e5, 0.25)
    for i in range(n):
        assert lrs[i] == pytest.approx(1e-2 * s.lr_mult(i / n))
        assert moms[i] == pytest.approx(s.mom(i / n))
    assert learn.opt.param_groups[0]["betas"][0] == pytest.approx(s.mom((n - 1) / n))


def test_sgdr_fit_runs_sum_of_cycles_and_saves_snapshots(learn, tmp_path):
    learn.path = tmp_path
    learn.fit(1e-3, 3, cycle_len=1, cycle_mult=2, cycle_save_name="snap")
    assert len(learn.recorder.rows) == 7
    lrs = learn.recorder.lrs  # 4 batches per epoch; restarts at epochs 0, 1, 3
    for restart in (0, 4, 12):
        assert lrs[restart] == pytest.approx(1e-3)
    assert lrs[3] < lrs[2] < lrs[1] < lrs[0]
    saved = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert saved == ["snap_cyc_0.safetensors", "snap_cyc_1.safetensors", "snap_cyc_2.safetensors"]
    probs, targets = learn.snapshot_ensemble("snap")
    assert probs.shape == (12, 2) and torch.allclose(probs.sum(1), torch.ones(12), atol=1e-5)
    learn.load("snap_cyc_0")
    p0, _ = learn.get_preds()
    assert not torch.allclose(p0, probs)


def test_constant_fit_keeps_lr(learn):
    learn.fit(3e-3, 1)
    assert set(learn.recorder.lrs) == {3e-3}


def test_sgd_momentum_follows_one_cycle(image_folder):
    data = vt.ImageData.from_folder(image_folder, size=32, bs=8)
    learn = vt.vision_learner(data, opt="sgd")
    learn.fit_one_cycle(1, 1e-2)
    assert isinstance(learn.opt, torch.optim.SGD)
    assert learn.recorder.moms[0] == pytest.approx(0.95)
    assert min(learn.recorder.moms) < 0.9


def test_fine_tune_runs_frozen_then_unfrozen(learn):
    learn.fine_tune(2, base_lr=2e-3, freeze_epochs=1)
    rows = learn.recorder.rows
    assert [r["phase"] for r in rows] == [0, 1, 1]
    assert learn.frozen_to == 0
    per_group = {pg["layer_group"]: pg["lr"] for pg in learn.opt.param_groups}
    # last batch of the unfrozen one-cycle: lrs keep the ratio of slice(1e-3/100, 1e-3)
    assert per_group[2] / per_group[0] == pytest.approx(100)


def test_frozen_groups_get_no_updates_but_their_bn_does(learn):
    learn.freeze_to(1)

    def params(group):
        return [p for m in learn.model.layer_groups[group] for p in m.parameters()]

    g0, g1 = params(0), params(1)
    before0 = [p.detach().clone() for p in g0]
    before1 = [p.detach().clone() for p in g1]
    learn.fit(1e-3, 1)
    convs = [(a, b) for a, b in zip(g0, before0) if a.ndim == 4]
    norms = [(a, b) for a, b in zip(g0, before0) if a.ndim == 1]
    assert convs and all(torch.equal(a, b) for a, b in convs)
    assert any(not torch.equal(a, b) for a, b in norms)
    assert any(not torch.equal(a, b) for a, b in zip(g1, before1) if a.ndim == 4)


def test_recorder_plots_write_pngs(learn, tmp_path):
    learn.fit_one_cycle(1)
    for name in ("plot_lr", "plot_losses", "plot_sched", "plot_metrics"):
        fig = getattr(learn.recorder, name)(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
        assert fig.axes

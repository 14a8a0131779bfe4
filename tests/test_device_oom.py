"""Device selection and out-of-memory recovery (OOM injected at a chosen step: no GPU here)."""

from __future__ import annotations

import pytest
import torch

import visiontune as vt
from visiontune import distributed as D
from visiontune.train import Callback


def test_default_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert D.default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert D.default_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert D.default_device() == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert D.default_device() == torch.device("cuda", 2)


def test_explicit_device_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(vt.ConfigError, match="CUDA is not available"):
        D.default_device("cuda")
    assert D.default_device("cpu") == torch.device("cpu")


def test_mixed_precision_defaults():
    from visiontune.train.learner import _resolve_amp

    assert _resolve_amp(None, torch.device("cpu")) is None
    assert _resolve_amp("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(vt.ConfigError, match="fp16"):
        _resolve_amp("fp16", torch.device("cpu"))


class InjectOOM(Callback):
    """Raises a CUDA-style out-of-memory error at training step `at` while the batch size is `bs`."""

    def __init__(self, at: int, bs: int):
        self.at, self.bs, self.fired = at, bs, 0

    def before_batch(self):
        learn = self.learn
        if learn.training and learn.data.bs == self.bs and learn._fit_steps == self.at:
            self.fired += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")


def test_oom_in_first_steps_halves_batch_size_and_finishes(image_folder, capsys, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_QUIET", "0")
    data = vt.ImageData.from_folder(image_folder, size=32, bs=16)
    learn = vt.vision_learner(data)
    inject = InjectOOM(at=1, bs=16)
    learn.fit_one_cycle(2, cbs=[inject])
    assert inject.fired == 1
    assert learn.data.bs == 8
    assert [r["epoch"] for r in learn.recorder.rows] == [0, 1]
    assert {r["phase"] for r in learn.recorder.rows} == {0}
    assert len(learn.recorder.lrs) == 2 * (32 // 8)  # the whole schedule ran at the new batch size
    err = capsys.readouterr().err
    assert "out of memory during training with batch size 16: retrying with batch size 8" in err


def test_oom_later_in_training_is_a_clear_error(image_folder):
    data = vt.ImageData.from_folder(image_folder, size=32, bs=4)
    learn = vt.vision_learner(data)
    with pytest.raises(vt.VisiontuneError, match=r"Out of memory .* batch size 4\. Pass a smaller batch size"):
        learn.fit(1e-3, 2, cbs=[InjectOOM(at=12, bs=4)])


def test_oom_during_prediction_retries_with_smaller_batches(image_folder):
    data = vt.ImageData.from_folder(image_folder, size=32, bs=12)
    learn = vt.vision_learner(data)
    expected, _ = learn.get_preds()

    def hook(module, inputs):
        if inputs[0].shape[0] > 6:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    handle = learn.model.register_forward_pre_hook(hook)
    learn._loaders.clear()
    probs, _ = learn.get_preds()
    handle.remove()
    assert learn.data.bs == 6
    assert torch.allclose(probs, expected, atol=1e-6)


def test_bs_auto_keeps_batch_size_on_cpu(image_folder):
    from visiontune.train.oom import find_batch_size

    learn = vt.vision_learner(vt.ImageData.from_folder(image_folder, size=32, bs=8))
    assert find_batch_size(learn) == 8


def test_keep_freed_memory_leaves_a_users_allocator_choice_alone(monkeypatch):
    import platform
    import sys

    from visiontune._core.allocator import keep_freed_memory

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert keep_freed_memory() is False
    monkeypatch.delenv("LD_PRELOAD")
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory() is True

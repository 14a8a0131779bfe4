"""The Learner's public verbs: the training recipes (run by train/schedules.py), saving and loading weights, and
the facade methods that users find on the learner but that live on the floors above it (inference,
interpretation). Their imports are lazy: the one documented exception to "imports go downward"
(tests/test_architecture.py lists them one by one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from .._core import console as _console
from .._core.errors import ConfigError
from ..models.weights import load_weights, save_weights
from . import oom
from . import schedules as S
from .callbacks import Callback, CancelSaveException
from .freeze import freeze_groups
from .optim import Lrs


class LearnerAPI:
    """Mixed into Learner: what a course user calls (`freeze`, `unfreeze`, `precompute`, `fit`, `fit_one_cycle`,
    `fine_tune`, `lr_find`, `save`, `load`, `get_preds`, `tta`, `predict`, `interpret`, `export`, ...)."""

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups [0, n) (negative n counts from the end); BatchNorm layers stay trainable."""
        self.frozen_to = freeze_groups(self.layer_groups, n, self.train_bn)
        if not self.body_frozen and self._precompute:
            self._precompute = False
            _console.notice("precompute switched off: the body is being trained, so cached activations no longer apply.")

    def freeze(self) -> None:
        """Train the head only (the pretrained body stays as it is)."""
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Train every layer group."""
        self.freeze_to(0)

    @property
    def precompute(self) -> bool:
        """Train/predict the head on cached body activations instead of images."""
        return self._precompute

    @precompute.setter
    def precompute(self, on: bool) -> None:
        if on and not self.body_frozen:
            raise ConfigError("precompute=True needs a frozen body: activations are computed once by the body and "
                              "cached, so a body that is being trained would make them stale. Call learn.freeze() first.")
        if on and not hasattr(self.model, "features"):
            raise ConfigError("precompute needs a VisionModel (body, pool, head).")
        self._precompute = bool(on)

    def fit(self, lrs: Lrs | None = None, n_cycle: int = 1, cycle_len: int | None = None, cycle_mult: int = 1,
            wd: float | None = None, cycle_save_name: str | None = None, cbs: Iterable[Callback] = ()) -> None:
        """Without `cycle_len`: `n_cycle` epochs at constant lr (2017's `learn.fit(0.01, 3)`). With it: SGDR,
        cosine-annealing to ~0 within each cycle, cycle i lasting `cycle_len * cycle_mult**i` epochs;
        `cycle_save_name` saves `{name}_cyc_{i}` at the end of every cycle."""
        S.fit(self, lrs, n_cycle, cycle_len, cycle_mult, wd, cycle_save_name, cbs)

    def fit_one_cycle(self, epochs: int, max_lr: Lrs | None = None, div: float = 25.0, div_final: float = 1e5,
                      pct_start: float = 0.25, moms: Sequence[float] | None = (0.95, 0.85, 0.95),
                      wd: float | None = None, cbs: Iterable[Callback] = ()) -> None:
        """1cycle: lr warms up from max_lr/div to max_lr over `pct_start` of the steps, then anneals to
        max_lr/div_final while momentum moves the opposite way. `max_lr=None` picks `learn.lr`."""
        S.fit_one_cycle(self, epochs, max_lr, div, div_final, pct_start, moms, wd, cbs)

    def fine_tune(self, epochs: int, base_lr: float = 2e-3, freeze_epochs: int = 1, lr_mult: float = 100,
                  pct_start: float = 0.3, div: float = 5.0, cbs: Iterable[Callback] = ()) -> None:
        """fastai's recipe: 1cycle on the frozen model, unfreeze, then 1cycle with discriminative lrs
        `slice(base_lr/lr_mult, base_lr)` (halved, as fastai does)."""
        S.fine_tune(self, epochs, base_lr, freeze_epochs, lr_mult, pct_start, div, cbs)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100, stop_div: bool = True):
        """Exponentially increase the lr per mini-batch and record the loss, as a fit of the one loop (the
        LRFinder callback); the model and optimizer are restored exactly afterwards. Returns an LRFindResult
        with `.suggestion` and `.plot()`."""
        from .lr_find import lr_find

        self.lr_find_result = oom.with_retry(self, "lr_find", lambda: lr_find(self, start_lr, end_lr, num_it, stop_div))
        return self.lr_find_result

    def tune_thresholds(self, beta: float = 2.0, target_recall: float | None = None,
                        target_precision: float | None = None, positive: str | None = None, ds: str = "valid"):
        """Choose decision thresholds on `ds`: per label for multi-label data (best F-beta, the Planet recipe),
        or for two classes the threshold on P(positive) that reaches `target_recall` / `target_precision`.
        Kept in the learner (`thresh`, `decision`), the export and the ONNX metadata; predict uses them."""
        from ..infer.thresholds import tune_thresholds

        return tune_thresholds(self, beta, target_recall, target_precision, positive, ds)

    def snapshot_ensemble(self, name: str, ds: str = "valid", last: int | None = None):
        """Average the predictions of the SGDR snapshots saved with `cycle_save_name=name` -> (probs, targets)."""
        from .snapshots import snapshot_ensemble

        return snapshot_ensemble(self, name, ds, last)

    def state_dict(self) -> dict:
        """Weights, optimizer, grad scaler and every stateful callback's state by callback name: what a
        checkpoint needs to continue training."""
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict() if self.opt is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "callbacks": {name: cb.state_dict() for name, cb in self._stateful_cbs().items()}}

    def _stateful_cbs(self) -> dict[str, Callback]:
        """Callbacks with state by name (a second callback of the same name gets `_2`, ...)."""
        out: dict[str, Callback] = {}
        for cb in self.cbs:
            if hasattr(cb, "state_dict"):
                name, i = cb.name, 1
                while name in out:
                    i += 1
                    name = f"{cb.name}_{i}"
                out[name] = cb
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned (callbacks are matched by name; absent ones are skipped)."""
        self.model.load_state_dict(state["model"])
        if state.get("opt") is not None:
            if self.opt is None:
                self.create_opt()
            self.opt.load_state_dict(state["opt"])
        if state.get("scaler") is not None and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        saved = state.get("callbacks", {})
        for name, cb in self._stateful_cbs().items():
            if name in saved and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(saved[name])

    def _model_path(self, name: str | os.PathLike) -> Path:
        p = Path(name)
        if p.suffix != ".safetensors":
            p = p.with_name(p.name + ".safetensors")
        return p if p.is_absolute() or p.parent != Path(".") else self.path / self.model_dir / p

    def save(self, name: str | os.PathLike) -> Path:
        """Write the model weights to `path/models/{name}.safetensors` (or to `name` if it is a path)."""
        self.save_path = path = self._model_path(name)
        try:
            self._event("before_save")
        except CancelSaveException:
            return path
        return save_weights(self.model, path, self.data.classes)

    def load(self, name: str | os.PathLike, strict: bool = True):
        """Load weights written by `save(name)` into this learner's model."""
        load_weights(self.model, self._model_path(name), strict=strict)
        return self

    # ------------------------------------------------------------------ facades (lazy imports from above)
    def get_preds(self, ds="valid", with_loss: bool = False):
        """(probs, targets) over `ds` in file order (targets None for the test set); with_loss adds per-item losses.

        `ds`: 'valid' | 'train' | 'test', or new images: a folder, file, glob or list of them."""
        from ..infer.predict import get_preds

        return get_preds(self, ds, with_loss=with_loss)

    def tta(self, ds="valid", n: int = 4, beta: float = 0.25, scale: float = 1.1):
        """Test-time augmentation -> (probs, targets): `beta` x the plain predictions + (1 - beta) x the mean over
        n augmented views (zoom crops by `scale`, flips as in training). n=0 is plain get_preds."""
        from ..infer.tta import tta

        return tta(self, ds, n=n, beta=beta, scale=scale)

    def predict(self, item):
        """One image (path, PIL image, HWC numpy array or CHW tensor) -> (label, index, probs).

        Multi-label: (labels above the threshold, their indices, probs)."""
        from ..infer.predict import predict

        return predict(self, item)

    def interpret(self, ds: str = "valid", tta: bool = False):
        """A ClassificationInterpretation of `ds`: confusion matrix, most_confused, top losses with Grad-CAM
        heatmaps and the five views (most correct/incorrect/uncertain...), with test-time augmentation if `tta`."""
        from ..interpret import ClassificationInterpretation

        return ClassificationInterpretation.from_learner(self, ds, tta=tta)

    def export(self, path: str | os.PathLike | None = None) -> Path:
        """Write ONE safe file (default `path/model.vt`) with the weights, architecture, classes, image size and
        normalization; `vt.load_learner(file)` predicts from it without the data, the network, or pickle."""
        from ..infer.export import export_learner

        return export_learner(self, self.path / "model.vt" if path is None else Path(path))

    def export_onnx(self, path: str | os.PathLike, opset: int | None = None, dynamic_batch: bool = True) -> Path:
        """Write the model as ONNX: uint8 (N, 3, size, size) images in, probabilities out (needs visiontune[onnx])."""
        from ..infer.onnx_export import export_onnx

        return export_onnx(self, path, opset=opset, dynamic_batch=dynamic_batch)

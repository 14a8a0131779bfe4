"""ClassificationInterpretation: the confusion matrix, the most confused pairs, the top losses and the five
views from the course (random correct, random incorrect, most correct, most incorrect, most uncertain).

Every method that returns pictures returns their positions in the dataset (`data.valid_ds.files[i]` is the
file), also when files that could not be decoded were left out of the predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .._core.errors import ConfigError, bad_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..train.learner import Learner


class ClassificationInterpretation:
    """Predictions of a learner on one dataset, with the ways to look at them. Build it with
    `learn.interpret()` or `ClassificationInterpretation.from_learner(learn)`.

    `probs`, `targets`, `losses` and `index` have one row per decoded picture; `index[r]` is row r's
    position in the dataset. The loss is the learner's per-item loss (with TTA: the negative log
    likelihood of the averaged probabilities)."""

    def __init__(self, learn: "Learner", probs: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor,
                 index: torch.Tensor, ds: str = "valid"):
        self.learn, self.ds = learn, ds
        self.probs, self.targets = probs.float().cpu(), targets.cpu()
        self.losses, self.index = losses.float().cpu(), index.long().cpu()
        self.classes: list[str] = list(learn.data.classes)
        self.is_multi_label = self.targets.ndim == 2
        self.thresh = getattr(learn, "thresh", 0.5)  # a float, or one per label after tune_thresholds
        self._row_of = {int(p): r for r, p in enumerate(self.index.tolist())}

    @classmethod
    def from_learner(cls, learn: "Learner", ds: str = "valid", tta: bool = False,
                     local: bool = False) -> "ClassificationInterpretation":
        """Predict `ds` ('valid', or 'train' without augmentation) with `learn` (with test-time augmentation
        when `tta`) and keep what the views need. Under torchrun every process must call it, unless `local`:
        then this process predicts the whole set by itself (what the report does on rank 0)."""
        from ..infer.predict import get_preds

        if learn.data.dataset(ds).targets is None:
            raise ConfigError(f"The {ds} set has no labels, so there is nothing to compare predictions with. "
                              "Interpret the 'valid' set.")
        if not tta:
            probs, targets, losses, index = get_preds(learn, ds, with_loss=True, with_index=True, local=local)
            return cls(learn, probs, targets, losses, index, ds)
        if not hasattr(learn, "tta"):
            raise ConfigError("tta=True needs Learner.tta, which this visiontune does not have; use tta=False.")
        probs, targets = learn.tta(ds)
        index = _decoded_positions(learn, ds, len(probs))
        if index is None:  # cannot tell which files were left out: ask get_preds, which knows
            index = get_preds(learn, ds, with_index=True)[-1]
        return cls(learn, probs, targets, loss_from_probs(probs, targets), index, ds)

    # ------------------------------------------------------------------ rows and positions
    def __len__(self) -> int:
        return len(self.index)

    @property
    def dataset(self):
        return self.learn.data.dataset(self.ds)

    @property
    def preds(self) -> torch.Tensor:
        """Predicted class per row (multi-hot rows above `thresh` for multi-label)."""
        from ..train.metrics import decide

        return decide(self.probs, self.classes, self.is_multi_label, self.thresh, getattr(self.learn, "decision", None))

    @property
    def correct(self) -> torch.Tensor:
        """Whether each row is predicted right (every label right, for multi-label)."""
        if self.is_multi_label:
            return (self.preds == self.targets.long()).all(1)
        return self.preds == self.targets

    def rows(self, indices) -> np.ndarray:
        """Rows of these dataset positions (a position whose file was left out raises ConfigError)."""
        out = []
        for p in np.asarray(indices, dtype=np.int64).reshape(-1).tolist():
            if p not in self._row_of:
                raise ConfigError(f"Position {p} of the {self.ds} set has no prediction (its file could not be decoded).")
            out.append(self._row_of[p])
        return np.asarray(out, dtype=np.int64)

    def file(self, i: int) -> Path:
        """The file at dataset position `i`."""
        return Path(self.dataset.files[int(i)])

    def class_index(self, cls: int | str) -> int:
        """A class name or index -> index, with the valid names in the error."""
        if isinstance(cls, str):
            if cls not in self.classes:
                raise ConfigError(f"Unknown class {cls!r}. Classes: {', '.join(self.classes)}.")
            return self.classes.index(cls)
        if not 0 <= int(cls) < len(self.classes):
            raise ConfigError(f"Class index {cls} is out of range: there are {len(self.classes)} classes.")
        return int(cls)

    def label(self, row: int, which: str) -> str:
        """'pred' or 'actual' label of a row as text (labels joined by ';' for multi-label)."""
        t = self.preds[row] if which == "pred" else self.targets[row]
        if self.is_multi_label:
            return ";".join(self.classes[j] for j in torch.nonzero(t > 0.5).flatten().tolist()) or "(none)"
        return self.classes[int(t)]

    def prob_actual(self, row: int) -> float:
        """Probability the model gave to the actual class (mean over the actual labels for multi-label)."""
        if self.is_multi_label:
            t = self.targets[row] > 0.5
            return float(self.probs[row][t].mean()) if t.any() else float("nan")
        return float(self.probs[row, int(self.targets[row])])

    def _need_single(self, what: str) -> None:
        if self.is_multi_label:
            raise ConfigError(f"{what} is for single-label data; for multi-label data use interp.per_class() "
                              "(precision, recall and F2 per class).")

    # ------------------------------------------------------------------ tables
    def confusion_matrix(self) -> np.ndarray:
        """Counts with rows = actual and columns = predicted class, in `data.classes` order."""
        from sklearn.metrics import confusion_matrix

        self._need_single("confusion_matrix")
        return confusion_matrix(self.targets.numpy(), self.preds.numpy(), labels=list(range(len(self.classes))))

    def most_confused(self, min_val: int = 1) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) for each off-diagonal cell with at least `min_val` pictures, most
        frequent first: the confusion matrix for many classes."""
        cm = self.confusion_matrix()
        pairs = [(self.classes[a], self.classes[p], int(cm[a, p])) for a in range(len(cm)) for p in range(len(cm))
                 if a != p and cm[a, p] >= max(min_val, 1)]
        return sorted(pairs, key=lambda t: -t[2])  # stable: ties stay in class order

    def per_class(self, beta: float = 2.0, thresh=None, sort_by: str | None = None) -> list[dict]:
        """Precision, recall, F1, F-beta (F2 by default) and support per class; multi-label decisions at `thresh`
        (default `learn.thresh`, one per label after `tune_thresholds`). `sort_by="f1"` puts the worst class
        first. What replaces the confusion matrix for multi-label data, and what shows a rare class failing."""
        from sklearn.metrics import precision_recall_fscore_support

        from ..train.metrics import thresholds

        if self.is_multi_label:
            y_true = self.targets.numpy().astype(int)
            y_pred = (self.probs > thresholds(self.thresh if thresh is None else thresh)).numpy().astype(int)
        else:
            y_true, y_pred = self.targets.numpy(), self.preds.numpy()
        labels = list(range(len(self.classes)))
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, beta=beta, labels=labels, zero_division=0)
        f1 = precision_recall_fscore_support(y_true, y_pred, beta=1.0, labels=labels, zero_division=0)[2]
        fname = "f2" if beta == 2 else f"f{beta:g}"
        rows = [{"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]), fname: float(f[i]),
                 "support": int(s[i])} for i, c in enumerate(self.classes)]
        if sort_by is not None:
            if sort_by not in rows[0]:
                raise bad_value("sort_by", sort_by, "one of " + ", ".join(k for k in rows[0] if k != "class"))
            rows.sort(key=lambda row: row[sort_by])
        return rows

    def accuracy(self) -> float:
        """Fraction of pictures predicted right (every label right, for multi-label)."""
        return float(self.correct.float().mean()) if len(self) else float("nan")

    # ------------------------------------------------------------------ the views (dataset positions)
    def top_losses(self, k: int | None = None, largest: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses, dataset positions) of the `k` pictures with the largest loss (all when k is None)."""
        k = len(self) if k is None else min(int(k), len(self))
        vals, rows = torch.topk(self.losses, k, largest=largest)
        return vals, self.index[rows]

    def random_correct(self, k: int = 4, seed: int | None = None) -> np.ndarray:
        """`k` pictures predicted right, at random."""
        return self._random(self.correct.numpy(), k, seed)

    def random_incorrect(self, k: int = 4, seed: int | None = None) -> np.ndarray:
        """`k` pictures predicted wrong, at random."""
        return self._random(~self.correct.numpy(), k, seed)

    def most_correct(self, cls: int | str, k: int = 4) -> np.ndarray:
        """Pictures of class `cls` predicted as `cls`, most confident first."""
        c = self.class_index(cls)
        actual, pred = self._has(self.targets, c), self._has(self.preds, c)
        return self._ranked(actual & pred, -self.probs[:, c].numpy(), k)

    def most_incorrect(self, cls: int | str, k: int = 4) -> np.ndarray:
        """Pictures of class `cls` the model was surest were not `cls` (lowest probability of `cls` first)."""
        c = self.class_index(cls)
        actual, pred = self._has(self.targets, c), self._has(self.preds, c)
        return self._ranked(actual & ~pred, self.probs[:, c].numpy(), k)

    def most_uncertain(self, k: int = 4) -> np.ndarray:
        """Pictures the model could not decide on: the smallest margin between the two most probable classes
        (probability nearest 0.5 for two classes; for multi-label, a label nearest the threshold)."""
        if self.is_multi_label:
            score = (self.probs - torch.as_tensor(self.thresh, dtype=torch.float32)).abs().amin(1)
        elif self.probs.shape[1] < 2:
            score = (self.probs[:, 0] - 0.5).abs()
        else:
            top2 = self.probs.topk(2, dim=1).values
            score = top2[:, 0] - top2[:, 1]
        return self._ranked(np.ones(len(self), dtype=bool), score.numpy(), k)

    def _has(self, t: torch.Tensor, c: int) -> np.ndarray:
        return (t[:, c] > 0.5).numpy() if self.is_multi_label else (t == c).numpy()

    def _random(self, mask: np.ndarray, k: int, seed: int | None) -> np.ndarray:
        rows = np.flatnonzero(mask)
        rng = np.random.default_rng(seed)
        pick = rng.choice(rows, size=min(k, len(rows)), replace=False) if len(rows) else rows
        return self.index.numpy()[pick]

    def _ranked(self, mask: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(key[rows], kind="stable")][:k]
        return self.index.numpy()[rows]

    # ------------------------------------------------------------------ plots
    def plot_confusion_matrix(self, path: str | Path | None = None, normalize: bool = False,
                              cmap: str = "Blues") -> "Figure":
        """The confusion matrix as a picture (`normalize`: each row as fractions of that actual class)."""
        from .figures import plot_confusion_matrix

        self._need_single("plot_confusion_matrix")
        return plot_confusion_matrix(self.confusion_matrix(), self.classes, path, normalize, cmap)

    def plot_top_losses(self, k: int = 9, path: str | Path | None = None, heatmap: bool = True,
                        largest: bool = True, cam_class: str = "pred") -> "Figure":
        """The `k` top losses titled predicted/actual/loss/probability of the actual class, with a Grad-CAM
        overlay of where the model found evidence for its prediction (`cam_class='actual'`: for the truth)."""
        _, idx = self.top_losses(k, largest)
        return self.plot_items(idx, path, heatmap, cam_class, title="predicted / actual / loss / probability")

    def plot_random_correct(self, k: int = 4, path: str | Path | None = None, heatmap: bool = False,
                            seed: int | None = None) -> "Figure":
        return self.plot_items(self.random_correct(k, seed), path, heatmap, title="correct, at random")

    def plot_random_incorrect(self, k: int = 4, path: str | Path | None = None, heatmap: bool = False,
                              seed: int | None = None) -> "Figure":
        return self.plot_items(self.random_incorrect(k, seed), path, heatmap, title="incorrect, at random")

    def plot_most_correct(self, cls: int | str, k: int = 4, path: str | Path | None = None,
                          heatmap: bool = False) -> "Figure":
        name = self.classes[self.class_index(cls)]
        return self.plot_items(self.most_correct(cls, k), path, heatmap, title=f"most correct {name}")

    def plot_most_incorrect(self, cls: int | str, k: int = 4, path: str | Path | None = None,
                            heatmap: bool = False) -> "Figure":
        name = self.classes[self.class_index(cls)]
        return self.plot_items(self.most_incorrect(cls, k), path, heatmap, title=f"most incorrect {name}")

    def plot_most_uncertain(self, k: int = 4, path: str | Path | None = None, heatmap: bool = False) -> "Figure":
        return self.plot_items(self.most_uncertain(k), path, heatmap, title="most uncertain")

    def plot_items(self, indices, path: str | Path | None = None, heatmap: bool = False, cam_class: str = "pred",
                   title: str | None = None) -> "Figure":
        """Any dataset positions as a grid titled predicted/actual/loss/probability and file name."""
        from .figures import item_grid

        return item_grid(self.items(indices, heatmap, cam_class), path, title)

    def plot_filters(self, path: str | Path | None = None) -> "Figure":
        """The first conv layer's learned kernels: edge, colour and texture detectors (lesson 1)."""
        from .figures import plot_filters

        return plot_filters(self.learn.model, path)

    def plot_activations(self, img, path: str | Path | None = None, n: int = 8,
                         layers: list[str] | None = None) -> "Figure":
        """The `n` strongest feature maps of a few conv layers for one image (anything `predict` takes)."""
        from .figures import plot_activations

        return plot_activations(self.learn, img, path, n, layers)

    # ------------------------------------------------------------------ pictures for plots and the report
    def items(self, indices, heatmap: bool = False, cam_class: str = "pred") -> list[dict]:
        """For each dataset position: the picture as the model saw it (uint8 HWC `image`, and `heatmap`, the
        Grad-CAM overlay, when asked), file, labels, loss and probability of the actual class."""
        from .figures import cam_overlays, load_pictures, to_hwc

        if cam_class not in ("pred", "actual"):
            raise bad_value("cam_class", cam_class, "'pred' or 'actual'")
        rows = self.rows(indices)
        pos = self.index.numpy()[rows]
        pics = load_pictures(self.learn, self.ds, pos)
        out = [{"position": int(p), "file": self.file(p), "image": to_hwc(pic), "pred": self.label(r, "pred"),
                "actual": self.label(r, "actual"), "loss": float(self.losses[r]), "prob": self.prob_actual(r)}
               for p, r, pic in zip(pos, rows, pics)]
        if heatmap and len(rows):
            if cam_class == "pred":
                classes = self.probs[rows].argmax(1)
            else:  # the actual class; for multi-label, the actual label the model rated highest
                classes = (self.targets[rows] * self.probs[rows]).argmax(1) if self.is_multi_label else self.targets[rows]
            for it, over in zip(out, cam_overlays(self.learn, pics, classes)):
                it["heatmap"] = over
        return out

    def __repr__(self) -> str:
        return (f"ClassificationInterpretation({self.ds}: {len(self)} pictures, {len(self.classes)} classes, "
                f"accuracy {self.accuracy():.4f})")


def loss_from_probs(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-item negative log likelihood of probabilities (binary cross-entropy per label for multi-hot targets)."""
    p = probs.float().clamp(1e-7, 1 - 1e-7)
    if targets.ndim == 2:
        return F.binary_cross_entropy(p, targets.float(), reduction="none").mean(1)
    return -torch.log(p.gather(1, targets.long()[:, None])[:, 0])


def _decoded_positions(learn: "Learner", ds: str, n_rows: int) -> torch.Tensor | None:
    """Positions of the files of `ds` that decoded (those not in the data's bad-file list), when that
    accounts for exactly `n_rows` predictions; None otherwise."""
    dset = learn.data.dataset(ds)
    bad = set(getattr(learn.data, "bad", None).paths) if getattr(learn.data, "bad", None) is not None else set()
    pos = [i for i, f in enumerate(dset.files) if str(f) not in bad]
    return torch.tensor(pos, dtype=torch.long) if len(pos) == n_rows else None

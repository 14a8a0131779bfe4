"""Decision thresholds chosen on the validation set: per-label thresholds for multi-label data (the Planet
recipe: each label's threshold maximises its F-beta), and for a two-class problem one threshold on the
positive class's probability that reaches a target recall or precision. The learner keeps them, the export
and the ONNX metadata carry them, and predict / get_preds' decisions / serve use them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._core import console as _console
from .._core.errors import ConfigError, bad_value
from ..train.metrics import get_metrics
from .predict import get_preds

if TYPE_CHECKING:
    from ..train.learner import Learner

GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def fbeta_at(y: np.ndarray, p: np.ndarray, t: float, beta: float) -> float:
    pred = p > t
    tp, fp, fn = float((pred & y).sum()), float((pred & ~y).sum()), float((~pred & y).sum())
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * fn + fp
    return (1 + b2) * tp / denom if denom else 0.0


def tune_thresholds(learn: "Learner", beta: float = 2.0, target_recall: float | None = None,
                    target_precision: float | None = None, positive: str | None = None, ds: str = "valid"):
    """Multi-label: per-label thresholds maximising F-beta on `ds` -> {label: threshold}, kept in `learn.thresh`.
    Two classes: the threshold on P(`positive`) (default: the rarer training class) with the highest precision
    whose recall is at least `target_recall`, or the highest recall whose precision is at least
    `target_precision`, or (neither given) the best F-beta -> {"positive", "threshold", "recall", "precision"},
    kept in `learn.decision`."""
    probs, targets = get_preds(learn, ds)
    if targets is None or not len(targets):
        raise ConfigError(f"tune_thresholds needs labelled {ds} images; the {ds} set has none.")
    p, y = probs.float().numpy(), targets.numpy()
    if getattr(learn.data, "is_multi_label", False) or y.ndim == 2:
        y = y.astype(bool)
        best = [float(GRID[int(np.argmax([fbeta_at(y[:, j], p[:, j], t, beta) for t in GRID]))])
                for j in range(p.shape[1])]
        learn.thresh = best
        learn.metrics = [m if m.name not in ("accuracy_multi", "fbeta", "f1_macro") else
                         get_metrics([m.name], multi_label=True, thresh=best)[0] for m in learn.metrics]
        _console.notice("per-label thresholds (F%g on %s): %s" % (beta, ds, ", ".join(
            f"{c} {t:.2f}" for c, t in zip(learn.data.classes, best))))
        return dict(zip(learn.data.classes, best))
    return _two_class(learn, p, y, beta, target_recall, target_precision, positive)


def _two_class(learn: "Learner", p: np.ndarray, y: np.ndarray, beta: float, target_recall, target_precision,
               positive) -> dict:
    classes = list(learn.data.classes)
    if len(classes) != 2:
        raise ConfigError(f"A decision threshold is for two classes; this data has {len(classes)}. Multi-class "
                          f"decisions stay the most probable class.")
    if target_recall is not None and target_precision is not None:
        raise ConfigError("Give target_recall or target_precision, not both.")
    for name, v in (("target_recall", target_recall), ("target_precision", target_precision)):
        if v is not None and not 0 < v <= 1:
            raise bad_value(name, v, "in (0, 1]")
    if positive is None:
        counts = learn.data.class_counts() if hasattr(learn.data, "class_counts") else {}
        positive = min(counts, key=counts.get) if counts else classes[1]
    if positive not in classes:
        raise bad_value("positive", positive, "one of " + ", ".join(classes))
    k = classes.index(positive)
    score, truth = p[:, k], y == k
    cands = np.unique(np.concatenate([score, [0.0, 1.0]]))
    rows = []
    for t in cands:
        pred = score >= t
        tp = float((pred & truth).sum())
        recall = tp / max(float(truth.sum()), 1.0)
        precision = tp / float(pred.sum()) if pred.any() else 1.0
        rows.append((float(t), recall, precision))
    if target_recall is not None:
        ok = [r for r in rows if r[1] >= target_recall]
        t, rec, prec = max(ok, key=lambda r: (r[2], r[0]))
    elif target_precision is not None:
        ok = [r for r in rows if r[2] >= target_precision]
        if not ok:
            raise ConfigError(f"No threshold reaches precision {target_precision} on the validation set.")
        t, rec, prec = max(ok, key=lambda r: (r[1], -r[0]))
    else:
        b2 = beta * beta
        t, rec, prec = max(rows, key=lambda r: (1 + b2) * r[1] * r[2] / (b2 * r[2] + r[1]) if r[1] + r[2] else 0.0)
    lower = cands[cands < t]
    t = (t + float(lower.max())) / 2 if len(lower) else t  # halfway to the next score: the same valid decisions,
    # and a picture scored a hair lower on another batch size or machine is still decided the same way
    learn.decision = {"positive": positive, "threshold": float(t), "recall": rec, "precision": prec}
    _console.notice(f"decision: {positive} when P({positive}) >= {t:.4f} (valid recall {rec:.3f}, precision {prec:.3f})")
    return dict(learn.decision)

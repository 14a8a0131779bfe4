"""Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 2021), written from the paper: which given labels are probably wrong, from out-of-sample
predicted probabilities.

1. Per-class thresholds: t_j = the mean predicted probability of class j over the examples labelled j (the
   class's average self-confidence).
2. The confident joint C[i][j]: examples labelled i whose probability of j reaches t_j (the most probable such
   class when several do). Examples confident in no class are not counted.
3. Calibrate: scale each row to the number of examples with that given label, the whole to n: an estimate of
   the joint distribution of (given, true) labels times n.
4. Prune by noise rate: for each off-diagonal cell (i, j), flag the round(C[i][j]) examples labelled i with
   the largest margin p(j|x) - p(i|x). An example whose most probable class is its given label is never
   flagged, and every class keeps at least one example.
5. Rank what is flagged by self-confidence p(given|x), least confident first.

Multi-label data is done per label, one-vs-rest: label k present / absent is a two-class problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._core.errors import ConfigError


@dataclass
class LabelIssues:
    """Which examples are flagged, and the numbers behind it (all in example order unless said)."""

    mask: np.ndarray  # bool (n,): flagged
    ranked: np.ndarray  # indices of flagged examples, least self-confident first
    self_confidence: np.ndarray  # p(given label | x)
    suggested: np.ndarray  # most probable class
    thresholds: np.ndarray  # (m,) per-class thresholds
    confident_joint: np.ndarray  # (m, m) counts, rows = given label, columns = confident true label
    calibrated_joint: np.ndarray  # (m, m), rows sum to the class counts, the whole to n

    @property
    def noise_rate(self) -> float:
        """Estimated fraction of wrong labels: the off-diagonal mass of the calibrated joint."""
        cj = self.calibrated_joint
        total = cj.sum()
        return float((total - np.trace(cj)) / total) if total else 0.0


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[0] != len(labels):
        raise ConfigError(f"probs must be an (n, classes) array with one row per label; got probs of shape "
                          f"{probs.shape} and {len(labels)} labels.")
    if probs.shape[1] < 2:
        raise ConfigError("confident learning needs at least two classes.")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ConfigError(f"labels must be class indices in [0, {probs.shape[1]}); got {labels.min()}..{labels.max()}.")
    return probs, labels.astype(np.int64)


def per_class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """t_j: mean p(j|x) over the examples labelled j (a class without examples gets 1: nothing reaches it)."""
    probs, labels = _check(probs, labels)
    m = probs.shape[1]
    sums = np.zeros(m)
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    counts = np.bincount(labels, minlength=m)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def confident_true_labels(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each example, the most probable class among those whose probability reaches its threshold; -1 where
    no class does."""
    above = probs >= thresholds[None, :] - 1e-9
    guess = np.where(above, probs, -1.0).argmax(1)
    return np.where(above.any(1), guess, -1)


def confident_joint(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """C[i][j]: the number of examples labelled i that are confidently of class j (int64, m x m)."""
    probs, labels = _check(probs, labels)
    t = per_class_thresholds(probs, labels) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    true = confident_true_labels(probs, t)
    keep = true >= 0
    m = probs.shape[1]
    cj = np.zeros((m, m), dtype=np.int64)
    np.add.at(cj, (labels[keep], true[keep]), 1)
    return cj


def calibrate_joint(cj: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """Rows rescaled to the class counts (a row with no confident example puts its count on the diagonal)."""
    cj = np.asarray(cj, dtype=np.float64)
    counts = np.asarray(label_counts, dtype=np.float64)
    row = cj.sum(1)
    out = np.where(row[:, None] > 0, cj / np.maximum(row, 1)[:, None], 0.0) * counts[:, None]
    empty = row == 0
    out[empty, empty.nonzero()[0]] = counts[empty]
    return out


def find_label_issues(probs: np.ndarray, labels: np.ndarray, min_per_class: int = 1) -> LabelIssues:
    """Confident learning on out-of-sample `probs` (n, m) and given `labels` (n,) class indices: which labels
    are probably wrong (prune by noise rate), ranked by self-confidence. See the module docstring."""
    probs, labels = _check(probs, labels)
    n, m = probs.shape
    t = per_class_thresholds(probs, labels)
    cj = confident_joint(probs, labels, t)
    counts = np.bincount(labels, minlength=m)
    cal = calibrate_joint(cj, counts)
    self_conf = probs[np.arange(n), labels] if n else np.zeros(0)
    mask = np.zeros(n, dtype=bool)
    for i in range(m):
        members = np.flatnonzero(labels == i)
        if not len(members):
            continue
        budget = max(0, len(members) - min_per_class)  # every class keeps at least min_per_class examples
        picked: set[int] = set()
        for j in range(m):
            if j == i:
                continue
            k = min(int(np.round(cal[i, j])), len(members))
            if k <= 0:
                continue
            margin = probs[members, j] - probs[members, i]
            order = np.argsort(-margin, kind="stable")[:k]
            picked.update(members[order].tolist())
        chosen = sorted(picked, key=lambda e: self_conf[e])[:budget]
        mask[chosen] = True
    pred = probs.argmax(1) if n else np.zeros(0, dtype=np.int64)
    mask &= pred != labels
    flagged = np.flatnonzero(mask)
    ranked = flagged[np.argsort(self_conf[flagged], kind="stable")]
    return LabelIssues(mask, ranked, self_conf, pred, t, cj, cal)


def find_multilabel_issues(probs: np.ndarray, targets: np.ndarray) -> list[LabelIssues]:
    """One-vs-rest confident learning for multi-label data: for each label k, `find_label_issues` on
    [1 - p_k, p_k] with the presence of k as the given label. Returns one LabelIssues per label."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if probs.shape != targets.shape or probs.ndim != 2:
        raise ConfigError(f"multi-label probs and targets must have the same (n, labels) shape; got {probs.shape} "
                          f"and {targets.shape}.")
    out = []
    for k in range(probs.shape[1]):
        p = np.clip(probs[:, k], 0.0, 1.0)
        out.append(find_label_issues(np.stack([1 - p, p], 1), (targets[:, k] > 0.5).astype(np.int64)))
    return out

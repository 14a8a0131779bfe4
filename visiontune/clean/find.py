"""`find_issues(data)`: label errors, duplicates, leaks and odd files of an ImageData, as one ranked table.

The frozen body runs once over every image (the activation cache: a second run over the same files reads it
back); everything else works on those features and on the cached pixels, so finding costs about one
precompute pass. Nothing here writes into the data folder.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._core import console as _console
from .._core.errors import ConfigError
from ..data import ImageData
from ..data.decode import ImageDecodeError
from ..train.precompute import ActivationCache
from . import dupes as D
from . import odd as O
from .confident import LabelIssues, find_label_issues, find_multilabel_issues
from .csvlabels import CsvLabels
from .issues import Issue, Issues
from .oof import HeadRecipe, fit_full_head, out_of_fold_probs

if TYPE_CHECKING:
    from ..train.learner import Learner

SPLITS = ("train", "valid", "test")


def load_data(path: str | os.PathLike, train: str | None = None, valid: str | None = None, test: str | None = None,
              size: int = 224, bs: int = 64, seed: int = 42, **kwargs) -> ImageData:
    """The ImageData `visiontune clean DATA` looks at, with the layout detection and the options of
    `visiontune train` (`ImageData.from_path`: val/ folders, Kaggle file names, a labels CSV, test folders)."""
    return ImageData.from_path(path, train=train, valid=valid, test=test, size=size, bs=bs, seed=seed, **kwargs)


def csv_labels_of(data: ImageData) -> CsvLabels | None:
    """Where labels live when `from_path` found a labels CSV, so --apply rewrites it instead of moving files."""
    lay = getattr(data, "layout", None)
    if lay is None or lay.kind != "csv":
        return None
    return CsvLabels(lay.labels, folder=lay.folder or ".", fn_col=lay.fname_col, label_col=lay.label_col,
                     suffix=lay.suffix or "", label_delim=lay.label_delim)


class _Table:
    """Every file of train, valid and test in one index space, with what the finders need about each."""

    def __init__(self, data: ImageData):
        self.data = data
        self.root = Path(data.path)
        self.files: list[Path] = []
        self.split: list[str] = []
        self.pos: list[int] = []
        for name in SPLITS:
            ds = data.train_ds if name == "train" else data.valid_ds if name == "valid" else data.test_ds
            if ds is None:
                continue
            self.files += ds.files
            self.split += [name] * len(ds.files)
            self.pos += list(range(len(ds.files)))
        n = len(self.files)
        self.n = n
        self.multi = data.is_multi_label
        self.feats: np.ndarray | None = None
        self.has_feats = np.zeros(n, dtype=bool)
        self.labelled = np.array([s != "test" for s in self.split], dtype=bool)
        tr, va = data.train_ds.targets, data.valid_ds.targets
        if self.multi:
            self.targets = np.zeros((n, data.c), dtype=np.float32)
            self.targets[: len(tr)] = tr
            self.targets[len(tr): len(tr) + len(va)] = va
        else:
            self.targets = np.full(n, -1, dtype=np.int64)
            self.targets[: len(tr)] = tr
            self.targets[len(tr): len(tr) + len(va)] = va

    def rel(self, i: int) -> str:
        f = self.files[i]
        try:
            return f.relative_to(self.root).as_posix()
        except ValueError:
            return Path(os.path.relpath(f, self.root)).as_posix()

    def label_text(self, i: int) -> str:
        if not self.labelled[i]:
            return ""
        classes = self.data.classes
        if self.multi:
            return " ".join(classes[k] for k in np.flatnonzero(self.targets[i] > 0.5))
        return classes[int(self.targets[i])]

    def dataset(self, i: int):
        return self.data.dataset(self.split[i])


def _features(table: _Table, learn: "Learner") -> dict[str, float]:
    """Pooled body features of every decodable file (through the activation cache) -> seconds per split."""
    data = table.data
    cache = getattr(learn, "activation_cache", None) or ActivationCache(data.cache_dir / "activations")
    learn.activation_cache = cache
    feats = None
    seconds: dict[str, float] = {}
    offset = 0
    for name in SPLITS:
        ds = data.train_ds if name == "train" else data.valid_ds if name == "valid" else data.test_ds
        if ds is None:
            continue
        t0 = time.perf_counter()
        f, idx = cache.get(learn, name)
        seconds[name] = time.perf_counter() - t0
        if feats is None:
            feats = np.zeros((table.n, f.shape[1]), dtype=np.float32)
        feats[offset + idx] = np.asarray(f, dtype=np.float32)
        table.has_feats[offset + idx] = True
        offset += len(ds)
    table.feats = feats
    return seconds


def _label_issues(table: _Table, folds: int, head, recipe: HeadRecipe, seed: int) -> tuple[list[Issue], dict]:
    """Out-of-fold probabilities for the labelled rows, then confident learning."""
    rows = np.flatnonzero(table.labelled & table.has_feats)
    data = table.data
    if len(rows) < 2 * folds:
        _console.notice(f"only {len(rows)} labelled images: label issues need at least {2 * folds} "
                        f"(2 per fold); skipped.")
        return [], {"skipped": "too few images"}
    targets = table.targets[rows]
    if not table.multi:
        smallest = int(np.bincount(targets, minlength=data.c).min())
        if smallest < folds:
            _console.notice(f"the smallest class has {smallest} labelled images, fewer than the {folds} folds: "
                            f"its images are predicted by heads that saw few or none of it, so they may be "
                            f"flagged for that reason alone.")
    heads: list = []
    probs, fid = out_of_fold_probs(table.feats[rows], targets, data.c, folds=folds, head=head, recipe=recipe,
                                   seed=seed, heads=heads)
    table.head = heads[0] if heads else None  # trained on (folds-1)/folds of the images: what Grad-CAM explains
    out: list[Issue] = []
    classes = data.classes
    if table.multi:
        results = find_multilabel_issues(probs, targets)
        for k, res in enumerate(results):
            for r in res.ranked:
                i = int(rows[r])
                given = [classes[j] for j in np.flatnonzero(table.targets[i] > 0.5)]
                present = classes[k] in given
                new = [c for c in given if c != classes[k]] if present else sorted(given + [classes[k]], key=classes.index)
                p = float(probs[r, k])
                verb = "absent" if present else "present"
                out.append(Issue("label", table.rel(i), " ".join(given), " ".join(new), 1 - float(res.self_confidence[r]),
                                 split=table.split[i], suggested_prob=p if not present else 1 - p,
                                 self_confidence=float(res.self_confidence[r]),
                                 reason=f"label {classes[k]!r} looks {verb} (p={p:.2f})"))
        acc = float(((probs > 0.5) == (targets > 0.5)).mean())
        stats = {"oof_accuracy_per_label": acc, "noise_rate": [r.noise_rate for r in results]}
    else:
        res: LabelIssues = find_label_issues(probs, targets)
        for r in res.ranked:
            i = int(rows[r])
            s = int(res.suggested[r])
            out.append(Issue("label", table.rel(i), classes[int(targets[r])], classes[s],
                             1 - float(res.self_confidence[r]), split=table.split[i],
                             suggested_prob=float(probs[r, s]), self_confidence=float(res.self_confidence[r]),
                             reason=f"p({classes[int(targets[r])]})={res.self_confidence[r]:.2f}, "
                                    f"p({classes[s]})={probs[r, s]:.2f} out of fold"))
        stats = {"oof_accuracy": float((probs.argmax(1) == targets).mean()), "noise_rate": res.noise_rate,
                 "thresholds": res.thresholds.round(4).tolist(), "confident_joint": res.confident_joint.tolist()}
    table.oof = (rows, probs, fid)
    return out, stats


def _pixels_stats(table: _Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pHash, mirrored pHash, grey-level std and 32x32 thumbnail of every decodable file (from the image cache),
    and which decoded now."""
    n = table.n
    h = np.zeros(n, dtype=np.uint64)
    hf = np.zeros(n, dtype=np.uint64)
    std = np.full(n, np.nan)
    ok = np.zeros(n, dtype=bool)
    thumbs = np.zeros((n, D.HASH_SIDE, D.HASH_SIDE), dtype=np.uint8)
    for i in range(n):
        try:
            px = table.dataset(i).pixels(table.pos[i])
        except ImageDecodeError:
            continue
        a, b, s, t = D.phash(px.permute(1, 2, 0).numpy())
        h[i], hf[i], std[i], ok[i], thumbs[i] = a, b, s, True, t
    return h, hf, std, ok, thumbs


def _duplicates(table: _Table, unit: np.ndarray | None, hashes, settings: D.DupeSettings) -> tuple[list[Issue], dict]:
    h, hf, std, decoded, thumbs = hashes
    digests = [D.file_digest(f) for f in table.files]
    pairs = D.exact_pairs(digests)
    usable = decoded & table.has_feats & (np.nan_to_num(std, nan=0.0) >= settings.min_std)
    if unit is not None and usable.sum() > 1:
        pairs += D.near_pairs(h, hf, unit, usable, thumbs, settings)
    best: dict[int, float] = {}
    exact_members: set[int] = set()
    for p in pairs:
        for i in (p.a, p.b):
            best[i] = max(best.get(i, 0.0), p.similarity)
        if p.how == "exact":
            exact_members.update((p.a, p.b))
    groups = D.group_pairs(table.n, pairs)
    out: list[Issue] = []
    n_leaks = 0
    for g, members in enumerate(groups, 1):
        splits = {table.split[i] for i in members}
        leak = "train" in splits and len(splits) > 1
        n_leaks += leak
        labels = {table.label_text(i) for i in members if table.labelled[i]}
        how = "byte-identical" if all(i in exact_members for i in members) else "near-identical"
        where = " and ".join(s for s in SPLITS if s in splits)
        reason = f"{len(members)} {how} pictures in {where}"
        if len(labels) > 1:
            reason += f" with different labels ({', '.join(sorted(labels))})"
        score = min(1.0, max(best.get(i, 0.0) for i in members))
        for i in members:
            out.append(Issue("leak" if leak else "duplicate", table.rel(i), table.label_text(i), "", score,
                             group=g, split=table.split[i], reason=reason))
    stats = {"groups": len(groups), "leak_groups": n_leaks, "exact_pairs": sum(p.how == "exact" for p in pairs),
             "near_pairs": sum(p.how == "near" for p in pairs)}
    table.digests = digests
    return out, stats


def _odd(table: _Table, unit: np.ndarray | None, hashes, settings: O.OddSettings) -> list[Issue]:
    _, _, std, decoded, _ = hashes
    bad = table.data.bad.paths
    reasons: dict[int, list[tuple[str, float]]] = {}
    for i, f in enumerate(table.files):
        if str(f) in bad or not decoded[i]:
            why = bad.get(str(f), "cannot be decoded")
            reasons.setdefault(i, []).append((f"undecodable, skipped in training: {why}", 1.0))
            continue
        size = O.header_size(f)
        if size is not None:
            reasons.setdefault(i, []).extend(O.size_reasons(size, table.data.size, settings))
        flat = O.flat_reason(float(std[i]), settings)
        if flat:
            reasons.setdefault(i, []).append(flat)
    if unit is not None and table.has_feats.sum() > 10:
        rows = np.flatnonzero(table.has_feats)
        targets = None if not table.labelled[rows].any() else table.targets[rows]
        z = O.outlier_scores(unit[rows], targets, table.labelled[rows])
        for r in np.flatnonzero(z > settings.outlier_z):
            i = int(rows[r])
            reasons.setdefault(i, []).append((f"far from every class in feature space (robust z {z[r]:.1f})",
                                              float(min(1.0, z[r] / (3 * settings.outlier_z)))))
    out = []
    for i, rs in reasons.items():
        if rs:
            out.append(Issue("odd", table.rel(i), table.label_text(i), "", max(s for _, s in rs),
                             split=table.split[i], reason="; ".join(r for r, _ in rs)))
    return out


def class_balance(data: ImageData) -> dict[str, Any]:
    """Images per class in train and valid, and the imbalance ratio (largest class / smallest, train+valid)."""
    def counts(ds) -> dict[str, int]:
        t = ds.targets
        if t is None or not len(t):
            return dict.fromkeys(data.classes, 0)
        c = (np.asarray(t) > 0.5).sum(0) if t.ndim == 2 else np.bincount(t, minlength=data.c)
        return {name: int(v) for name, v in zip(data.classes, c)}

    tr, va = counts(data.train_ds), counts(data.valid_ds)
    total = {c: tr[c] + va[c] for c in data.classes}
    lo, hi = min(total.values(), default=0), max(total.values(), default=0)
    return {"train": tr, "valid": va, "total": total, "imbalance": (hi / lo) if lo else float("inf"),
            "largest": max(total, key=total.get) if total else "", "smallest": min(total, key=total.get) if total else ""}


def find_issues(data: ImageData, learn: "Learner | None" = None, folds: int = 5, arch: str | None = None,
                weights: str | os.PathLike | None = None, device: str | None = None, seed: int = 42, head: str = "fastai",
                recipe: HeadRecipe | None = None, dupes: D.DupeSettings | None = None,
                odd: O.OddSettings | None = None, labels: CsvLabels | None = None) -> Issues:
    """Label issues, duplicates, leaks and odd files of `data`, ranked, as an `Issues` table.

    Label issues come from out-of-fold probabilities (`folds` heads trained on the cached body features, each
    predicting the images it did not see) and confident learning. `learn` gives the body (and head kind) to
    use, e.g. one you fine-tuned; by default a fresh `vision_learner(data, arch, head=head)` (frozen, pretrained).
    Nothing in the data folder changes. `issues.save(...)`, `visiontune.review(issues)` or the CLI
    `visiontune clean DATA --review` take it from here. For `from_csv` data, `labels=CsvLabels(...)` (the
    arguments you gave from_csv) lets apply rewrite relabelled files' labels in the CSV; without it relabels of
    such data are skipped by apply (deletes still work)."""
    if not isinstance(data, ImageData):
        raise ConfigError(f"find_issues needs an ImageData (e.g. vt.ImageData.from_folder(path)); got "
                          f"{type(data).__name__}. For a folder path use visiontune.clean.load_data(path) first.")
    if not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"folds must be an integer of at least 2; got {folds!r}.")
    if labels is not None:
        labels.check(Path(data.path))
    t_start = time.perf_counter()
    if learn is None:
        from ..train.vision import DEFAULT_ARCH, vision_learner

        learn = vision_learner(data, arch or DEFAULT_ARCH, weights=weights, device=device, precompute=True, head=head)
        built = True
    else:
        if learn.data is not data:
            raise ConfigError("learn was made for another data object: pass find_issues(learn.data, learn).")
        built = False
    table = _Table(data)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    precompute = _features(table, learn)
    timing["features"] = time.perf_counter() - t0
    unit = D.centred_unit(table.feats) if table.feats is not None else None
    head_cfg = learn.model.config.head
    t0 = time.perf_counter()
    label_rows, label_stats = _label_issues(table, folds, head_cfg, recipe or HeadRecipe(), seed)
    timing["label"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hashes = _pixels_stats(table)
    dupe_rows, dupe_stats = _duplicates(table, unit, hashes, dupes or D.DupeSettings())
    timing["duplicates"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    odd_rows = _odd(table, unit, hashes, odd or O.OddSettings())
    timing["odd"] = time.perf_counter() - t0
    head = getattr(table, "head", None) if built else None
    if built and head is None:  # too few images for folds: one head on what there is
        head = _grad_cam_head(table, head_cfg, recipe or HeadRecipe(), seed)
    timing["total"] = time.perf_counter() - t_start
    rows = _ranked(label_rows + dupe_rows + odd_rows)
    summary = {
        "images": {s: table.split.count(s) for s in SPLITS if s in table.split},
        "undecodable": len(data.bad),
        "balance": class_balance(data),
        "counts": dict(Counter(r.kind for r in rows)),
        "label": label_stats,
        "duplicates": dupe_stats,
        "folds": folds,
        "settings": {"arch": learn.model.config.arch, "weights": str(weights) if weights else None, "folds": folds,
                     "seed": seed, "size": data.size},
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "precompute_seconds": {k: round(v, 3) for k, v in precompute.items()},
        "activations_computed": int(getattr(learn.activation_cache, "n_computed", 0)),
    }
    listed = {r.file for r in rows}
    files = {}
    for i in range(table.n):
        rel = table.rel(i)
        if rel in listed:
            try:
                st = table.files[i].stat()
                stat = [st.st_size, st.st_mtime_ns]
            except OSError:
                stat = [-1, -1]
            files[rel] = {"split": table.split[i], "label": table.label_text(i), "size": stat[0],
                          "mtime_ns": stat[1], "sha256": table.digests[i]}
    out = Issues(rows, data=data, learn=learn, summary=summary, files=files, head=head,
                 own_learner=built, oof=getattr(table, "oof", None), table_files=table.files)
    out.labels_csv = labels
    return out


def _grad_cam_head(table: _Table, head_cfg, recipe: HeadRecipe, seed: int):
    """A head trained on every labelled image's features, for the review page's Grad-CAM of a learner built
    here (a learner passed in is explained with its own head); None when there is nothing to train on."""
    rows = np.flatnonzero(table.labelled & table.has_feats)
    if len(rows) < 2:
        return None
    return fit_full_head(table.feats[rows], table.targets[rows], table.data.c, head_cfg, recipe, seed)


ORDER = {"label": 0, "leak": 1, "duplicate": 2, "odd": 3}


def _ranked(rows: Sequence[Issue]) -> list[Issue]:
    """Grouped by kind (label, leak, duplicate, odd), each by score (highest first); a group's members together."""
    def key(r: Issue):
        return (ORDER[r.kind], -r.score if r.group is None else 0, r.group or 0, r.file)

    by_kind = sorted(rows, key=key)
    out: list[Issue] = []
    for kind in ORDER:
        part = [r for r in by_kind if r.kind == kind]
        if kind in ("leak", "duplicate"):
            best = {}
            for r in part:
                best[r.group] = max(best.get(r.group, 0.0), r.score)
            part.sort(key=lambda r: (-best[r.group], r.group, r.file))
        out += part
    return out

"""The run report: one self-contained HTML page (pictures embedded as data URIs, no network) that shows at a
glance how good the model is, which pictures it gets wrong and where it looked.

Pure rendering: `write_report(learn, path)` renders what it is given (the learner, its predictions, and
optionally the run's settings, history and lr_find picture) and writes the page. Reading a run folder is
the runs floor's job (visiontune.runs.report: `report_run`, and the report at the end of every run).
"""

from __future__ import annotations

import html
import os
import traceback
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .._core import console as _console
from .._core.distributed import is_main_process
from .._core.io import write_text
from .._core.version import __version__
from .history import TrainingHistory
from .interpretation import ClassificationInterpretation
from .report_html import Page, fmt

if TYPE_CHECKING:
    from ..train.learner import Learner
    from ..train.lr_find import LRFindResult

# what a person looks at first comes first: how good, where it goes wrong, how it trained, with what settings
SECTIONS = ("summary", "confusion", "most-confused", "top-losses", "most-uncertain", "curves", "epochs", "lr-find",
            "config")
DATA_ISSUES = "data-issues"  # after most-uncertain, only when `visiontune clean` has looked at the data


def write_report(learn: "Learner", path: str | os.PathLike, interp: ClassificationInterpretation | None = None,
                 k: int = 9, lr_find: "LRFindResult | None" = None, on_error: str = "notice",
                 settings: dict | None = None, history: TrainingHistory | None = None,
                 lr_find_image: str | os.PathLike | None = None, title: str | None = None,
                 data_issues: dict | None = None) -> Path | None:
    """Write the report for `learn` to `path` and return the path.

    `settings` (default: the learner's own), `history` (default: its recorder), `lr_find` or `lr_find_image`
    fill the configuration, curves and lr-finder sections; `data_issues` (what `visiontune clean` found, as
    `visiontune.runs.cleandir.data_issues_summary` gives it) adds the "Data issues" section. Under torchrun the main process predicts the whole
    validation set by itself and writes; the other processes return None at once. With `on_error='notice'`
    (what the end of training uses) a failure prints a notice saying how to retry instead of losing the
    finished run; `on_error='raise'` raises."""
    path = Path(path)
    try:
        if not is_main_process():
            return None
        if interp is None:
            interp = ClassificationInterpretation.from_learner(learn, local=True)
        text = render_report(learn, interp, k=k, lr_find=lr_find, settings=settings, history=history,
                             lr_find_image=lr_find_image, title=title, data_issues=data_issues)
        return write_text(path, text)
    except Exception as e:
        if on_error == "raise":
            raise
        if os.environ.get("VISIONTUNE_DEBUG") == "1":
            traceback.print_exc()
        _console.notice(f"could not write the report {path} ({type(e).__name__}: {e}). The run itself is saved; "
                        f"try again with `visiontune report {path.parent}`.")
        return None


# ---------------------------------------------------------------------------- the page
def render_report(learn: "Learner", interp: ClassificationInterpretation, k: int = 9,
                  lr_find: "LRFindResult | None" = None, settings: dict | None = None,
                  history: TrainingHistory | None = None, lr_find_image: str | os.PathLike | None = None,
                  title: str | None = None, data_issues: dict | None = None) -> str:
    """The report page as one HTML string."""
    if history is None:
        history = TrainingHistory.from_recorder(learn.recorder)
    title = f"{Path(learn.data.path).name} - {title or 'visiontune'}"
    page = Page(f"visiontune report: {title}")
    page.header(title, f"{len(interp)} validation pictures, {len(interp.classes)} classes; written "
                       f"{datetime.now().isoformat(timespec='seconds')} by visiontune {__version__}")
    _summary(page, learn, interp)
    _confusion(page, interp)
    _most_confused(page, interp)
    _top_losses(page, interp, k)
    _most_uncertain(page, interp, k)
    if data_issues is not None:
        _data_issues(page, data_issues)
    _curves(page, history)
    _epochs(page, history)
    _lr_find(page, learn, lr_find_image, lr_find)
    _config(page, learn, settings)
    return page.render()


def _summary(page: Page, learn: "Learner", interp: ClassificationInterpretation) -> None:
    n = len(interp)
    s = page.section("summary", "At a glance")
    if not n:
        s.note("There are no validation pictures, so there is nothing to measure the model on.")
        return
    wrong = int((~interp.correct).sum())
    acc = interp.accuracy()
    tiles = {"accuracy": f"{acc:.1%}", "error rate": f"{1 - acc:.1%}", "valid loss": f"{float(interp.losses.mean()):.4f}",
             "wrong": f"{wrong} of {n}"}
    for m in learn.metrics:
        if m.name not in ("accuracy", "error_rate"):
            tiles[m.name] = fmt(m(interp.probs, interp.targets))
    s.tiles(tiles)
    what = "pictures with every label right" if interp.is_multi_label else "pictures"
    text = f"The model gets {n - wrong} of {n} validation {what} right ({acc:.1%})."
    if not interp.is_multi_label:
        pairs = interp.most_confused()
        if pairs:
            a, p, c = pairs[0]
            text += f" Its most frequent mistake: {a} taken for {p} ({c} time{'s' * (c > 1)})."
    s.para(text)
    data = learn.data
    s.para(f"Data: {data.path} ({len(data.train_ds)} train / {len(data.valid_ds)} valid pictures). "
           f"Classes: {', '.join(interp.classes[:30])}{' ...' if len(interp.classes) > 30 else ''}.", small=True)


def _config(page: Page, learn: "Learner", settings: dict | None) -> None:
    s = page.section("config", "Run configuration")
    if settings is None:
        from ..train.vision import learner_settings

        settings = learner_settings(learn)
    settings = dict(settings)
    run = settings.pop("_run", None) or {}
    s.table(["setting", "value"], [[k, fmt(v)] for k, v in settings.items()], cls="kv")
    if run:
        s.details("recorded at run time", ["", "value"], [[k, fmt(v)] for k, v in run.items()], cls="kv")


def _lr_find(page: Page, learn: "Learner", image: str | os.PathLike | None, res) -> None:
    s = page.section("lr-find", "Learning-rate finder")
    res = res if res is not None else getattr(learn, "lr_find_result", None)
    if res is not None:
        s.figure(res.plot(), f"lr_find: suggested lr {res.suggestion:.2e}")
    elif image is not None and Path(image).is_file():
        s.image_file(Path(image), f"{Path(image).name} of this run")
    else:
        s.note("This run did not use the learning-rate finder. To see it here: `learn.lr_find()` before training "
               "in Python, or `visiontune lr-find DATA --plot RUN/lr_find.png` and then `visiontune report RUN`.")


def _curves(page: Page, history: TrainingHistory) -> None:
    s = page.section("curves", "Training curves")
    if not history.rows:
        s.note("No epochs recorded (no log.csv in the run folder and nothing in the learner's recorder).")
        return
    s.figure(history.plot(), "training loss per batch, validation loss and metrics per epoch; dashed lines "
                             "separate the phases (frozen, unfrozen)")


def _epochs(page: Page, history: TrainingHistory) -> None:
    s = page.section("epochs", "Epochs")
    if not history.rows:
        s.note("No epochs recorded.")
        return
    cols = history.columns()
    s.table(cols, [[fmt(r.get(c), c) for c in cols] for r in history.rows])


def _confusion(page: Page, interp: ClassificationInterpretation) -> None:
    if interp.is_multi_label:
        s = page.section("confusion", "Per-class precision, recall and F2")
        at = (f"probability {interp.thresh:g}" if isinstance(interp.thresh, (int, float)) else
              "its own tuned threshold")
        s.para(f"Multi-label: each label is decided at {at}; a confusion matrix does not apply, so here is how "
               "each class does (worst F1 first).", small=True)
        beta_key = "f2"
    else:
        s = page.section("confusion", "Confusion matrix")
        if len(interp):
            s.figure(interp.plot_confusion_matrix(), "rows: actual class, columns: predicted class")
        beta_key = None
    if not len(interp):
        s.note("No validation pictures.")
        return
    rows = interp.per_class(sort_by="f1")
    cols = ["class", "precision", "recall", "f1"] + ([beta_key] if beta_key else []) + ["support"]
    table = [[fmt(r[c], c) for c in cols] for r in rows]
    counts = [r["support"] for r in rows]
    lopsided = bool(counts) and min(counts) > 0 and max(counts) / min(counts) > 5 or 0 in counts
    if interp.is_multi_label or lopsided:
        s.table(cols, table)  # on lopsided data the rare class's row is what matters: shown, not folded
    else:
        s.details("precision, recall and F1 per class (worst F1 first)", cols, table)


def _most_confused(page: Page, interp: ClassificationInterpretation) -> None:
    s = page.section("most-confused", "Most confused")
    if interp.is_multi_label:
        s.note("Pairs of confused classes are for single-label data; see the per-class table above.")
        return
    pairs = interp.most_confused()
    if not pairs:
        s.note("No confusions: every validation picture is predicted right." if len(interp) else "No validation pictures.")
        return
    s.para("Pairs of (actual, predicted) classes, most frequent first.", small=True)
    cols, rows = ["actual", "predicted", "pictures"], [[a, p, str(c)] for a, p, c in pairs]
    s.table(cols, rows[:10])
    if len(rows) > 10:
        s.details(f"{len(rows) - 10} more pairs", cols, rows[10:])


def _top_losses(page: Page, interp: ClassificationInterpretation, k: int) -> None:
    s = page.section("top-losses", "Top losses")
    if not len(interp):
        s.note("No validation pictures.")
        return
    s.para("The pictures the model got most wrong (or right with the least confidence). Left: the picture as "
           "the model saw it; right: Grad-CAM, where it found the evidence for its prediction (bright = strong). "
           "Wrong labels and unusual pictures show up here first: fix the data, not the model.", small=True)
    size = interp.learn.data.size
    if size < 96:
        cells = max(size // 32, 1)
        s.note(f"At image size {size} the body's last feature maps are only about {cells} cell{'s' * (cells > 1)} "
               "across, so the heatmaps are coarse; train at size 128 or more for useful ones.")
    _, idx = interp.top_losses(k)
    cards = []
    for it in interp.items(idx, heatmap=True):
        cards.append(([it["image"], it["heatmap"]], _caption(interp, it) +
                      [f"loss {it['loss']:.3f} · p(actual) {it['prob']:.3f}"], it["file"]))
    s.cards(cards, data_root=interp.learn.data.path)


def _most_uncertain(page: Page, interp: ClassificationInterpretation, k: int) -> None:
    s = page.section("most-uncertain", "Most uncertain")
    if not len(interp):
        s.note("No validation pictures.")
        return
    s.para("The pictures the model could not decide on: the two most probable classes are closest.", small=True)
    idx = interp.most_uncertain(k)
    rows = interp.rows(idx)
    cards = []
    for it, r in zip(interp.items(idx), rows):
        top = interp.probs[r].topk(min(2, len(interp.classes)))
        probs = "top: " + " · ".join(f"{html.escape(interp.classes[j])} ({v:.2f})"
                                     for v, j in zip(top.values.tolist(), top.indices.tolist()))
        cards.append(([it["image"]], _caption(interp, it) + [probs], it["file"]))
    s.cards(cards, data_root=interp.learn.data.path, narrow=True)


def _data_issues(page: Page, d: dict) -> None:
    """What `visiontune clean` found in this data: plain values, every one escaped by the table and text helpers."""
    s = page.section(DATA_ISSUES, "Data issues")
    counts = d.get("counts", {})
    n_leak = int(d.get("n_leak_groups", 0))
    text = (f"`visiontune clean` ({d.get('created', '')}) flagged {counts.get('label', 0)} probable label errors, "
            f"{n_leak} leak group{'s' * (n_leak != 1)} ({counts.get('leak', 0)} pictures), "
            f"{counts.get('duplicate', 0)} duplicated pictures and {counts.get('odd', 0)} odd files in this data.")
    applied = d.get("applied")
    text += {"applied": " Its decisions were applied.", "undone": " Its decisions were applied, then undone.",
             "applying": f" An apply of its decisions was interrupted: `visiontune clean --apply {d.get('folder', '')}` "
                         "finishes it (or --undo puts back what moved)."}.get(applied, " None of its decisions is applied yet.")
    s.para(text)
    if n_leak:
        s.note("Leaks inflate the validation score: the same picture (or a copy of it) is in train and in valid/test, "
               "so the model is checked on pictures it learned.")
    if d.get("label"):
        s.table(["file", "given", "suggested", "p(suggested)", "score"],
                [[f, g, sug, f"{p:.3f}", f"{sc:.3f}"] for f, g, sug, p, sc in d["label"]])
    if d.get("leak"):
        s.details(f"pictures in leak groups ({len(d['leak'])})", ["group", "file", "split", "similarity"],
                  [[g, f, sp, f"{sc:.3f}"] for g, f, sp, sc in d["leak"]])
    bal = d.get("balance") or {}
    if bal.get("total"):
        ratio = bal.get("imbalance")
        s.para("Pictures per class (train+valid): " + ", ".join(f"{c} {n}" for c, n in bal["total"].items()) +
               (f"; imbalance {ratio:.2f}x." if isinstance(ratio, (int, float)) else "."), small=True)
    s.para(f"Review and fix them: `visiontune clean --review {d.get('folder', '')}`, then `--apply`.", small=True)


def _caption(interp: ClassificationInterpretation, it: dict) -> list[str]:
    """The first caption line of a picture card, as safe HTML."""
    mark = "&#10003;" if it["pred"] == it["actual"] else "&#10007;"
    return [f"{mark} predicted <b>{html.escape(it['pred'])}</b> · actual <b>{html.escape(it['actual'])}</b>"]

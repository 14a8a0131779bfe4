"""The run report: one self-contained HTML page (pictures embedded as data URIs, no network) that shows at a
glance how good the model is, which pictures it gets wrong and where it looked.

`write_report(learn, path)` writes it for a learner (the end of every `visiontune train` run does);
`report_run(run_dir)` rebuilds a finished run's learner from its folder and writes `run_dir/report.html`.
"""

from __future__ import annotations

import html
import os
import traceback
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__, _console
from ..distributed import is_distributed, is_main_process
from ..errors import CheckpointError, DataError
from .history import TrainingHistory
from .interpretation import ClassificationInterpretation
from .report_html import Page, fmt

if TYPE_CHECKING:
    from ..train.learner import Learner
    from ..train.lr_find import LRFindResult

# what a person looks at first comes first: how good, where it goes wrong, how it trained, with what settings
SECTIONS = ("summary", "confusion", "most-confused", "top-losses", "most-uncertain", "curves", "epochs", "lr-find",
            "config")


def write_report(learn: "Learner", path: str | os.PathLike, interp: ClassificationInterpretation | None = None,
                 k: int = 9, lr_find: "LRFindResult | None" = None, on_error: str = "notice") -> Path | None:
    """Write the report for `learn` to `path` (report.html of a run folder: its config.yaml, log.csv and
    lr_find.png are read from there when present) and return the path.

    Under torchrun the main process predicts the whole validation set by itself and writes; the other
    processes return None at once. Nothing waits on another process, so it is safe whether one process or
    all of them call it. With `on_error='notice'` (what the end of training uses) a failure prints a notice
    saying how to retry instead of losing the finished run; `on_error='raise'` raises."""
    path = Path(path)
    try:
        if not is_main_process():
            return None
        if interp is None:
            interp = _interpret_here(learn) if is_distributed() else ClassificationInterpretation.from_learner(learn)
        text = render_report(learn, interp, run_dir=path.parent, k=k, lr_find=lr_find)
        from ..infer.export import atomic_write

        return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except Exception as e:
        if on_error == "raise":
            raise
        if os.environ.get("VISIONTUNE_DEBUG") == "1":
            traceback.print_exc()
        _console.notice(f"could not write the report {path} ({type(e).__name__}: {e}). The run itself is saved; "
                        f"try again with `visiontune report {path.parent}`.")
        return None


def _interpret_here(learn: "Learner", ds: str = "valid") -> ClassificationInterpretation:
    """The interpretation of `ds` predicted by this process alone, in file order (no sharding, no gathering)."""
    import torch

    from ..data.loader import DeviceLoader, EpochSampler
    from ..infer.predict import _per_item_loss

    dset = learn.data.dataset(ds)
    raw = learn.data.loader(ds, augment=False, device=learn.device, sampler=EpochSampler(len(dset), False))
    dl = DeviceLoader(raw, learn.device, learn.data.mean, learn.data.std, learn.channels_last)
    probs, targs, losses, index = [], [], [], []
    model, was_training = learn.model, learn.model.training
    model.eval()
    try:
        with torch.inference_mode(), learn._autocast():
            for x, y, idx in dl.iter_with_index():
                out = model(x).float()
                probs.append(learn.activation(out).cpu())
                targs.append(y.cpu())
                losses.append(_per_item_loss(learn.loss_func, out, y).float().cpu())
                index.append(idx)
    finally:
        model.train(was_training)
    if not index:
        return ClassificationInterpretation(learn, torch.empty(0, learn.data.c), torch.empty(0, dtype=torch.long),
                                            torch.empty(0), torch.empty(0, dtype=torch.long), ds)
    return ClassificationInterpretation(learn, torch.cat(probs), torch.cat(targs), torch.cat(losses),
                                        torch.cat(index), ds)


def report_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, k: int = 9,
               device: str | None = None) -> Path:
    """Rebuild a `visiontune train` run's learner from its folder (config.yaml, the data it names, and
    models/final.safetensors, or the newest checkpoint of an unfinished run) and write its report to
    `out` (default `run_dir/report.html`). The run's data must still be on disk."""
    learn = load_run(run_dir, device=device)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    return write_report(learn, path, k=k, on_error="raise") or path


def load_run(run_dir: str | os.PathLike, device: str | None = None) -> "Learner":
    """The learner of a run folder with its final (or latest checkpointed) weights, ready to predict."""
    from ..runs import folder as F
    from ..runs.config import TrainConfig
    from ..runs.recipe import build_data, build_learner

    run_dir = Path(run_dir)
    record = F.read_config(run_dir)
    info = record.pop("_run", {}) or {}
    if info.get("source") == "python":
        raise CheckpointError(
            f"{run_dir} was trained from Python, so only your script knows how its data was built. In the script, "
            f"after training: `from visiontune.interpret.report import write_report; "
            f"write_report(learn, {str(run_dir / 'report.html')!r})` (a run made with runs= writes it already).")
    cfg = TrainConfig.from_dict(record)
    cfg = cfg.replace({"device": device, "precompute": False, "compile": False, "sync_bn": False, "bs": _bs(cfg)})
    if not cfg.data_path.is_dir():
        raise DataError(
            f"The report needs the run's validation pictures, but its data folder {cfg.data_path} is not on disk "
            f"any more. Put the data back at that path (or link it there) and run `visiontune report {run_dir}` again; "
            f"the run's log.csv, results.json and models/ are untouched.")
    data = build_data(cfg)
    if info.get("data_fingerprint") and data.fingerprint() != info["data_fingerprint"]:
        _console.notice(f"the data in {cfg.data_path} changed since this run trained (files added, removed or "
                        f"modified): the report shows the model on the data as it is now.")
    learn = build_learner(cfg.replace({"pretrained": False}), data)
    _load_weights(learn, run_dir)
    return learn


def _bs(cfg) -> int:
    return 64 if cfg.bs == "auto" else int(cfg.bs)


def _load_weights(learn: "Learner", run_dir: Path) -> None:
    from safetensors import safe_open

    from ..runs.checkpoint import checkpoint_paths, read_checkpoint

    final = run_dir / "models" / "final.safetensors"
    if final.is_file():
        with safe_open(str(final), framework="pt") as f:
            classes = (f.metadata() or {}).get("classes")
        if classes is not None:
            import json

            trained = json.loads(classes)
            if trained != list(learn.data.classes):
                raise DataError(f"{final} was trained on the classes {trained}, but {learn.data.path} now has "
                                f"{learn.data.classes}. Put the data back as it was to report on this run.")
        learn.load(final)
        return
    for p in checkpoint_paths(run_dir / "models"):
        try:
            ckpt = read_checkpoint(p)
        except CheckpointError:
            continue
        learn.model.load_state_dict(ckpt.state["model"])
        learn.recorder.load_state_dict(ckpt.state.get("callbacks", {}).get("recorder", {}))
        _console.notice(f"{run_dir} has not finished: the report shows the model at its last checkpoint "
                        f"({ckpt.position.describe()}).")
        return
    raise CheckpointError(f"{run_dir} has no trained weights yet (no models/final.safetensors and no readable "
                          f"checkpoint). Continue it with `visiontune resume {run_dir}`.")


# ---------------------------------------------------------------------------- the page
def render_report(learn: "Learner", interp: ClassificationInterpretation, run_dir: Path | None = None, k: int = 9,
                  lr_find: "LRFindResult | None" = None) -> str:
    """The report page as one HTML string."""
    run_dir = Path(run_dir) if run_dir is not None else None
    history = TrainingHistory.from_recorder(learn.recorder)
    if not history.rows and run_dir is not None:
        history = TrainingHistory.from_run_dir(run_dir)
    title = f"{Path(learn.data.path).name} - {run_dir.name if run_dir is not None else 'visiontune'}"
    page = Page(f"visiontune report: {title}")
    page.header(title, f"{len(interp)} validation pictures, {len(interp.classes)} classes; written "
                       f"{datetime.now().isoformat(timespec='seconds')} by visiontune {__version__}")
    _summary(page, learn, interp)
    _confusion(page, interp)
    _most_confused(page, interp)
    _top_losses(page, interp, k)
    _most_uncertain(page, interp, k)
    _curves(page, history)
    _epochs(page, history)
    _lr_find(page, learn, run_dir, lr_find)
    _config(page, learn, run_dir)
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


def _config(page: Page, learn: "Learner", run_dir: Path | None) -> None:
    s = page.section("config", "Run configuration")
    settings: dict[str, Any] | None = None
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        from ..runs.folder import read_config

        try:
            settings = read_config(run_dir)
        except Exception as e:  # noqa: BLE001  (a damaged config must not cost the rest of the report)
            s.note(f"{run_dir / 'config.yaml'} could not be read: {e}")
    if settings is None:
        from ..runs.autosave import learner_settings

        settings = learner_settings(learn)
    run = settings.pop("_run", None) or {}
    s.table(["setting", "value"], [[k, fmt(v)] for k, v in settings.items()], cls="kv")
    if run:
        s.details("recorded at run time", ["", "value"], [[k, fmt(v)] for k, v in run.items()], cls="kv")


def _lr_find(page: Page, learn: "Learner", run_dir: Path | None, res) -> None:
    s = page.section("lr-find", "Learning-rate finder")
    res = res if res is not None else getattr(learn, "lr_find_result", None)
    if res is not None:
        s.figure(res.plot(), f"lr_find: suggested lr {res.suggestion:.2e}")
    elif run_dir is not None and (run_dir / "lr_find.png").is_file():
        s.image_file(run_dir / "lr_find.png", "lr_find.png of this run")
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
        s.para(f"Multi-label: each label is decided at probability {interp.thresh:g}; a confusion matrix does not "
               "apply, so here is how each class does.", small=True)
        beta_key = "f2"
    else:
        s = page.section("confusion", "Confusion matrix")
        if len(interp):
            s.figure(interp.plot_confusion_matrix(), "rows: actual class, columns: predicted class")
        beta_key = None
    if not len(interp):
        s.note("No validation pictures.")
        return
    rows = interp.per_class()
    cols = ["class", "precision", "recall"] + ([beta_key] if beta_key else []) + ["support"]
    table = [[fmt(r[c], c) for c in cols] for r in rows]
    if interp.is_multi_label:
        s.table(cols, table)
    else:
        s.details("precision and recall per class", cols, table)


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


def _caption(interp: ClassificationInterpretation, it: dict) -> list[str]:
    """The first caption line of a picture card, as safe HTML."""
    mark = "&#10003;" if it["pred"] == it["actual"] else "&#10007;"
    return [f"{mark} predicted <b>{html.escape(it['pred'])}</b> · actual <b>{html.escape(it['actual'])}</b>"]

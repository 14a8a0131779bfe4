"""The end of a run: results.json (final metrics, confusion matrix, phases), the final weights, model.vt and the
report, the status marked finished, and the summary printed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._core import console as _console
from .._core.distributed import is_main_process
from .report import write_run_report
from .rundir import RunDir

if TYPE_CHECKING:
    from ..train.learner import Learner


def confusion(learn: "Learner", probs: torch.Tensor, targets: torch.Tensor) -> list:
    """sklearn's confusion matrix (rows: actual, columns: predicted); per class 2x2 for multi-label."""
    from sklearn.metrics import confusion_matrix, multilabel_confusion_matrix

    if getattr(learn.data, "is_multi_label", False):
        return multilabel_confusion_matrix(targets.numpy().astype(int), (probs > learn.thresh).numpy().astype(int)).tolist()
    return confusion_matrix(targets.numpy(), probs.argmax(1).numpy(), labels=list(range(learn.data.c))).tolist()


def final_results(learn: "Learner") -> dict:
    """Loss and metrics of the model as it is now on the validation set, and its confusion matrix."""
    probs, targets, losses = learn.get_preds("valid", with_loss=True)
    out: dict[str, Any] = {"metrics": {}, "classes": list(learn.data.classes), "n_valid": int(len(targets))}
    if len(targets):
        out["metrics"] = {"valid_loss": float(losses.float().mean()), **{m.name: m(probs, targets) for m in learn.metrics}}
        out["confusion_matrix"] = confusion(learn, probs, targets)
    return out


def write_results(learn: "Learner", run: RunDir, extra: dict | None = None) -> dict:
    """results.json: final metrics, classes, confusion matrix, epochs, best epoch and phases."""
    res = final_results(learn)
    rows = learn.recorder.rows
    res["epochs"] = len(rows)
    res["train_seconds"] = round(sum(r.get("time", 0.0) for r in rows), 2)
    best = getattr(learn, "save_best", None)
    if best is not None and best.best_epoch is not None:
        res["best"] = {"monitor": best.monitor, "value": best.best, "epoch": best.best_epoch}
    res.update(extra or {})
    res["written"] = datetime.now().isoformat(timespec="seconds")
    run.write_results(res)
    return res


def predict_test_set(learn: "Learner", run: RunDir, clip: float | None = None) -> dict[str, Path]:
    """The data's test set predicted into the run: predictions.csv (file, label, confidence, probabilities) and,
    for a Kaggle layout (classes in the file names), submission.csv in Kaggle's `id,label` form (`id,<classes>`
    for more than two classes), probabilities clipped to [clip, 1 - clip] when `clip` is given."""
    from ..infer.batch import predict_files

    test = getattr(learn.data, "test_ds", None)
    if test is None or not len(test):
        return {}
    preds = predict_files(learn, test.files)
    out = {"predictions": preds.to_csv(run.predictions_file, clip=clip)}
    layout = getattr(learn.data, "layout", None)
    if layout is not None and layout.kind == "name_re" and preds.n_ok:
        column = learn.data.classes[-1] if learn.data.c == 2 else None  # dogs vs cats: label = P(dog)
        out["submission"] = preds.to_submission(run.submission_file, clip=clip, column=column,
                                                column_header="label" if column else None)
    _console.out.print(f"test set: {preds.n_ok} of {len(preds)} images predicted -> "
                       + ", ".join(str(p) for p in out.values()), highlight=False)
    return out


def save_outputs(learn: "Learner", run: RunDir, predict_test: bool = False,
                 clip: float | None = None) -> dict[str, str]:
    """The final weights (models/final.safetensors), model.vt (when the learner can export), the report and,
    with `predict_test`, the test set's predictions."""
    out = {"weights": learn.save(run.final_weights)}
    if hasattr(learn, "export"):
        out["model"] = learn.export(run.model_file)
    report = write_run_report(learn, run)
    if report is not None:
        out["report"] = report
    if predict_test:
        out.update(predict_test_set(learn, run, clip))
    return {k: str(Path(v).relative_to(run.path)) if Path(v).is_relative_to(run.path) else str(v)
            for k, v in out.items()}


def print_summary(results: dict, run: RunDir) -> None:
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in results.get("metrics", {}).items())
    outputs = results.get("outputs", {})
    model = run.path / (outputs.get("model") or outputs.get("weights") or "")
    _console.out.print(f"\n[bold green]done[/]: {results.get('epochs', 0)} epochs in {results.get('train_seconds', 0):.0f}s"
                       f"  {metrics}\nrun folder: {run.path}\nmodel: {model}", markup=True)


def finish_run(learn: "Learner", run: RunDir, extra: dict | None = None, predict_test: bool = False,
               clip: float | None = None) -> dict:
    """Write the outputs and results.json, and mark the run finished."""
    outputs = save_outputs(learn, run, predict_test, clip) if is_main_process() else {}
    results = write_results(learn, run, {**(extra or {}), "outputs": outputs})
    run.write_status("finished", epochs=results["epochs"])
    return results

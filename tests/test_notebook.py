"""The lesson path in a real Jupyter kernel: show_batch, the lr_find plot, the confusion matrix and the top
losses appear inline as images, and the epoch table appears, with nothing but `import visiontune`."""

from __future__ import annotations

import json
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def _cells(folder: str) -> list[str]:
    return [
        "import os\nos.environ['VISIONTUNE_QUIET'] = '0'\nimport visiontune as vt",
        f"data = vt.ImageData.from_folder({folder!r}, size=64, bs=8)\ndata.show_batch()",
        "learn = vt.vision_learner(data)\nlearn.lr_find(num_it=6).plot()",
        "learn.fit_one_cycle(1)",
        "interp = learn.interpret()\ninterp.plot_confusion_matrix()",
        "interp.plot_top_losses(4)",
    ]


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return "".join(str(data.get(k, "")) for k in ("text/plain", "text/html"))


@pytest.mark.slow
def test_lesson_path_shows_figures_and_tables_inline(image_folder, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in _cells(str(image_folder))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    (tmp_path / "lesson.ipynb").write_text(json.dumps(nb))  # kept for a person who wants to look
    outputs = [cell.get("outputs", []) for cell in nb.cells]
    for i in (1, 2, 4, 5):  # show_batch, lr_find plot, confusion matrix, top losses
        images = [o for o in outputs[i] if "image/png" in o.get("data", {})]
        assert images, f"cell {i} ({nb.cells[i].source.splitlines()[-1]}) showed no image: {outputs[i]}"
    table = "".join(_text(o) for o in outputs[3])
    assert "train_loss" in table and "valid_loss" in table, table
    assert not any(o.get("output_type") == "error" for out in outputs for o in out)
    assert sys.executable  # the kernel is this interpreter's (ipykernel installed in the same environment)

"""SGDR snapshots: save the model at the end of every cycle and average the snapshots' predictions."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

from .._core.errors import ConfigError
from .callbacks import Callback

if TYPE_CHECKING:
    from .learner import Learner


class CycleSaver(Callback):
    """Saves `{name}_cyc_{i}` when SGDR cycle i ends (`fit(..., cycle_len=1, cycle_save_name=name)`)."""

    order = 50
    records = True

    def __init__(self, name: str, cycles: Sequence[int]):
        self.name_, self.ends = name, set()
        end = 0
        for c in cycles:
            end += c
            self.ends.add(end - 1)

    @property
    def name(self) -> str:
        return "cycle_saver"

    def after_epoch(self) -> None:
        if self.learn.epoch in self.ends and self.learn.is_main_process:
            i = sorted(self.ends).index(self.learn.epoch)
            self.learn.save(f"{self.name_}_cyc_{i}")


def snapshot_names(learn: "Learner", name: str) -> list[str]:
    """Saved snapshots `{name}_cyc_{i}` in cycle order."""
    folder = learn.path / learn.model_dir
    pat = re.compile(rf"^{re.escape(name)}_cyc_(\d+)\.safetensors$")
    found = sorted(
        (int(m.group(1)), p.name.removesuffix(".safetensors"))
        for p in folder.glob(f"{name}_cyc_*.safetensors")
        if (m := pat.match(p.name))
    )
    return [n for _, n in found]


def snapshot_ensemble(learn: "Learner", name: str, ds: str = "valid", last: int | None = None):
    """Average the predictions of the saved snapshots (the last `last` cycles if given) on `ds`.

    Returns (probs, targets); the learner's current weights are restored afterwards."""
    names = snapshot_names(learn, name)
    if not names:
        raise ConfigError(f"No snapshots named {name}_cyc_* in {learn.path / learn.model_dir}; "
                          f"train with fit(..., cycle_len=1, cycle_save_name={name!r}) first.")
    if last:
        names = names[-last:]
    current = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    total, targets = None, None
    try:
        for n in names:
            learn.load(n)
            probs, targets = learn.get_preds(ds)
            total = probs if total is None else total + probs
    finally:
        learn.model.load_state_dict(current)
    return total / len(names), targets

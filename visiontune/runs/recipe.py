"""`train(config)`, `resume(run_dir)` and `rerun(config.yaml)`: the `visiontune train | resume | rerun`
pipelines as Python calls (the CLI is a thin layer on them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .._core import console as _console
from .._core.distributed import is_main_process, setup_from_env, world_size
from .._core.errors import CheckpointError
from ..data import ImageData
from ..train import Callback, Learner
from ..train.oom import find_batch_size, fit_host_memory
from .build import build_data, build_learner, config_callbacks, seed_everything
from .callback import RunFolder
from .config import DEFAULT_BS, TrainConfig
from .finish import print_summary
from .rundir import RunDir, run_name

CLI_RESUME_HINT = "visiontune resume {run_dir}"


def run_phase(learn: Learner, cfg: TrainConfig, epochs: int, lrs, cbs: Iterable[Callback] = ()) -> None:
    """One phase of `epochs` epochs with the configured schedule."""
    if cfg.schedule == "one_cycle":
        learn.fit_one_cycle(epochs, lrs, cbs=cbs)
    elif cfg.schedule == "sgdr":
        cycle_len, mult = cfg.cycle_len or 1, cfg.cycle_mult
        n_cycle, total = 0, 0
        while total < epochs:
            total += cycle_len * mult**n_cycle
            n_cycle += 1
        learn.fit(lrs, n_cycle, cycle_len=cycle_len, cycle_mult=mult, cbs=cbs)
    else:
        learn.fit(lrs, epochs, cbs=cbs)


def train_phases(learn: Learner, cfg: TrainConfig, cbs: Iterable[Callback] = ()) -> None:
    """The training schedule the config describes, on an already built learner."""
    if cfg.fine_tune:
        learn.fine_tune(cfg.epochs, base_lr=cfg.lr or 2e-3, freeze_epochs=cfg.freeze_epochs, lr_mult=cfg.lr_mult,
                        cbs=cbs)
        return
    if cfg.epochs:
        run_phase(learn, cfg, cfg.epochs, cfg.lr, cbs)
    if cfg.unfreeze_epochs:
        learn.unfreeze()
        run_phase(learn, cfg, cfg.unfreeze_epochs, cfg.unfreeze_lrs(), cbs)


def _announce(learn: Learner, cfg: TrainConfig, data: ImageData) -> None:
    if not _console.quiet() and is_main_process():
        for line in data.layout_lines():
            _console.out.print(line, highlight=False)
        _console.out.print(data.summary())
        where = learn.model.backbone.weights_source
        ranks = f" x {world_size()} processes (global batch size {data.bs * world_size()})" if world_size() > 1 else ""
        amp = f", mixed precision {learn.mixed_precision}" if learn.mixed_precision else ""
        _console.out.print(f"model: {cfg.arch} ({where} weights) on {learn.device}{ranks}{amp}")


def _resolved(cfg: TrainConfig, learn: Learner) -> dict:
    """What the defaults resolved to on this machine (recorded under `_run` in config.yaml)."""
    return {"source": "visiontune train", "device": str(learn.device), "mixed_precision": learn.mixed_precision,
            "num_workers": learn.data.default_workers(learn.device), "data_path": str(cfg.data_path.resolve())}


def train(cfg: TrainConfig, cbs: Iterable[Callback] = (), run: bool = True) -> Learner:
    """Build data and learner from `cfg` and train. With `run` (the default) everything goes to a new run
    folder under `cfg.out` (`learn.run.path`), checkpointed every epoch so `resume` can continue it. Under
    torchrun this joins the process group first and trains with DistributedDataParallel."""
    setup_from_env()
    seed_everything(cfg.seed, cfg.deterministic)
    data = build_data(cfg)
    changes = small_data_defaults(cfg, data)
    if changes:
        cfg = cfg.replace(changes)
        data = build_data(cfg)
    learn = build_learner(cfg, data, cbs=config_callbacks(cfg))
    if cfg.bs == "auto":
        find_batch_size(learn)
    elif learn.device.type != "cuda" and fit_host_memory(learn, lower=cfg.bs == DEFAULT_BS) != cfg.bs:
        cfg = cfg.replace({"bs": learn.data.bs})  # config.yaml records the batch size trained with
    _announce(learn, cfg, data)
    if not run:
        train_phases(learn, cfg, cbs)
        return learn
    settings = {**cfg.to_dict(), **_layout_settings(data), "data": str(cfg.data_path.resolve()),
                "out": str(Path(cfg.out).expanduser().resolve())}
    cb = _attach(learn, cfg, runs=cfg.out, settings=settings, name=run_name(cfg), run_info=_resolved(cfg, learn))
    if not _console.quiet() and is_main_process():
        _console.out.print(f"run folder: {cb.path}")
    train_phases(learn, cfg, cbs)
    _finish(cb, cfg)
    return learn


def small_data_defaults(cfg: TrainConfig, data: ImageData) -> dict:
    """Settings to change for small data (under 30 training images in some class) where the config left the
    default, each said with its reason: augmentation, so the few pictures are seen in many versions."""
    from ..data.balance import SMALL

    per = data.class_counts() if hasattr(data, "class_counts") else {}
    if not per or min(per.values()) >= SMALL:
        return {}
    changes, why = {}, []
    if cfg.augment is None and not cfg.precompute:
        changes["augment"] = "side_on"
        why.append("augment side_on (flips, rotations, zoom, lighting), so each picture is seen in many versions")
    if changes and not _console.quiet() and is_main_process():
        _console.out.print(f"small data (the smallest class has {min(per.values())} training images, fewer than "
                           f"{SMALL}): " + "; ".join(why) + ". Pass --augment to choose otherwise.", highlight=False)
    return changes


def _layout_settings(data: ImageData) -> dict:
    """The layout `from_path` resolved, recorded in config.yaml so rerun and resume see the same split."""
    layout = getattr(data, "layout", None)
    return layout.settings() if layout is not None else {}


def _finish(cb, cfg: TrainConfig) -> dict:
    results = cb.finish(predict_test=True, clip=cfg.clip)
    if not _console.quiet():
        print_summary(results, cb.dir)
    return results


def _attach(learn: Learner, cfg: TrainConfig, **kwargs) -> RunFolder:
    cb = RunFolder(keep=cfg.keep_checkpoints, finish_each_fit=False, resume_hint=CLI_RESUME_HINT, **kwargs)
    learn.add_cbs([cb])
    return cb


def resume(run_dir: str | os.PathLike) -> Learner | None:
    """Continue an interrupted `visiontune train` run from its newest readable checkpoint, in the same folder,
    with the same settings, lr schedule and random state; returns the learner (None if it had finished)."""
    setup_from_env()
    run = RunDir.of(run_dir)
    if run.from_python:
        raise CheckpointError(f"{run.path} was trained from Python, so only your script knows its steps: rerun it "
                              f"with vision_learner(..., run_dir={str(run.path)!r}, resume=True).")
    run.check_unlocked()  # refuse at once when another process trains this run
    if run.status == "finished":
        _console.err.print(f"{run.path} has finished already; nothing to resume (`visiontune rerun` trains it again).",
                           highlight=False)
        return None
    cfg = TrainConfig.from_dict(run.settings)
    seed_everything(cfg.seed, cfg.deterministic)
    data = build_data(cfg)
    if run.info.get("data_fingerprint") and data.fingerprint() != run.info["data_fingerprint"]:
        _console.notice(f"the data in {cfg.data_path} changed since this run started (files added, removed or "
                        f"modified): the resumed epochs see the new data.")
    learn = build_learner(cfg, data, cbs=config_callbacks(cfg))
    _announce(learn, cfg, data)
    cb = _attach(learn, cfg, run_dir=run.path, resume=True)
    checkpoint = learn.resume.checkpoint
    _console.out.print(f"resuming {run.path} from " + (checkpoint.position.describe() if checkpoint else
                                                       "the beginning (no checkpoint was complete)"), highlight=False)
    train_phases(learn, cfg)
    _finish(cb, cfg)
    return learn


def rerun(config: str | os.PathLike, overrides: list[str] | dict | None = None) -> Learner:
    """Train again from a run's config.yaml (or any config file) in a new run folder, optionally changing
    settings (`["epochs=5", "lr=1e-3"]`). With the same seed on the CPU the metrics repeat exactly."""
    cfg = TrainConfig.load(config)
    if overrides:
        cfg = cfg.replace(overrides)
    return train(cfg)

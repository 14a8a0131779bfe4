"""`visiontune train`, `lr-find` and `demo`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .. import _console
from .app import app, parse_floats

DATA_HELP = "Image folder: DATA/train/<class>/*.jpg (+ DATA/valid/<class>/*.jpg), or DATA/<class>/*.jpg."


@app.command()
def train(
    data: Path = typer.Argument(..., help=DATA_HELP),
    arch: str = typer.Option("efficientnet_lite0", help="Backbone: efficientnet_lite0 (embedded), resnet18/34/50, or any timm name."),
    size: int = typer.Option(224, help="Image size (pixels, square)."),
    bs: str = typer.Option("64", help="Batch size per process, or 'auto' (largest that fits on the GPU)."),
    epochs: int = typer.Option(3, help="Epochs of the first phase (head only, body frozen); with --fine-tune, unfrozen epochs."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (max lr for one-cycle). Default: 3e-3 frozen, 1e-3 unfrozen."),
    valid_pct: Optional[float] = typer.Option(None, help="Fraction of train to hold out when there is no valid/ folder (default 0.2)."),
    seed: int = typer.Option(42, help="Random seed (split, shuffling, initialisation)."),
    out: Path = typer.Option(Path("runs"), help="Folder that receives the run folder."),
    weights: Optional[Path] = typer.Option(None, help="Pretrained weights file (.safetensors or state dict .pth) for the backbone."),
    pretrained: bool = typer.Option(True, help="Start from pretrained weights (--no-pretrained: random, on purpose)."),
    augment: Optional[str] = typer.Option(None, help="Augmentation preset: side_on (photos) or top_down (satellite, microscopy)."),
    schedule: str = typer.Option("one_cycle", help="one_cycle | sgdr | constant."),
    cycle_len: Optional[int] = typer.Option(None, help="SGDR: epochs in the first cycle."),
    cycle_mult: int = typer.Option(1, help="SGDR: each cycle is this many times longer than the last."),
    precompute: bool = typer.Option(False, help="Train the head on precomputed body activations (seconds per epoch)."),
    unfreeze_epochs: int = typer.Option(0, help="Then unfreeze and train every layer for this many epochs."),
    lrs: Optional[str] = typer.Option(None, help="Unfrozen lrs per layer group, e.g. 1e-4,1e-3,1e-2."),
    lr_slice: Optional[str] = typer.Option(None, help="Unfrozen lrs spread geometrically from lo to hi, e.g. 1e-5,1e-3."),
    fine_tune: bool = typer.Option(False, "--fine-tune", help="fastai's recipe: 1 frozen epoch, then --epochs unfrozen."),
    wd: float = typer.Option(0.01, help="Weight decay (decoupled)."),
    opt: str = typer.Option("adamw", help="Optimizer: adamw or sgd."),
    head: str = typer.Option("fastai", help="Head: fastai (pool, BN, dropout, 512, classes) or linear (one layer)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 or mps (default: best available)."),
    num_workers: Optional[int] = typer.Option(None, help="Data loader worker processes (default: sized to the machine)."),
    mixed_precision: Optional[str] = typer.Option(None, help="bf16 | fp16 | off (default: bf16/fp16 on GPUs, off on CPU)."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="Synchronise BatchNorm statistics across torchrun processes."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (faster steps after a slow first one)."),
) -> None:
    """Train a classifier on an image folder and save the model in a run folder.

    On several GPUs: `torchrun --nproc_per_node=N -m visiontune train DATA ...` (--bs is per process)."""
    from ..runs.config import TrainConfig
    from ..runs.recipe import train as run_train
    from ..distributed import cleanup, setup_from_env
    from ..runs.folder import finish_run, start_run

    setup_from_env()
    cfg = TrainConfig(
        data=str(data), arch=arch, size=size, bs=bs, epochs=epochs, lr=lr, valid_pct=valid_pct, seed=seed,
        out=str(out), weights=str(weights) if weights else None, pretrained=pretrained, augment=augment,
        schedule=schedule, cycle_len=cycle_len, cycle_mult=cycle_mult, precompute=precompute,
        unfreeze_epochs=unfreeze_epochs, lrs=parse_floats(lrs, "--lrs"), lr_slice=parse_floats(lr_slice, "--lr-slice"),
        fine_tune=fine_tune, wd=wd, opt=opt, head=head, device=device, num_workers=num_workers,
        mixed_precision=None if mixed_precision in (None, "auto") else mixed_precision,
        sync_bn=sync_bn, compile=compile,
    )
    t0 = time.perf_counter()
    run_dir = start_run(cfg)
    learn = run_train(cfg)
    finish_run(learn, cfg, run_dir, time.perf_counter() - t0)
    cleanup()


@app.command("lr-find")
def lr_find(
    data: Path = typer.Argument(..., help=DATA_HELP),
    arch: str = typer.Option("efficientnet_lite0", help="Backbone name."),
    size: int = typer.Option(224, help="Image size."),
    bs: int = typer.Option(64, help="Batch size."),
    unfreeze: bool = typer.Option(False, help="Run it on the unfrozen model (for the second phase)."),
    precompute: bool = typer.Option(False, help="Run it on precomputed activations (frozen body)."),
    start_lr: float = typer.Option(1e-7, help="First learning rate."),
    end_lr: float = typer.Option(10.0, help="Last learning rate."),
    num_it: int = typer.Option(100, help="Mini-batches to try."),
    plot: Path = typer.Option(Path("lr_find.png"), help="Where to write the loss-vs-lr plot."),
    seed: int = typer.Option(42, help="Random seed."),
    weights: Optional[Path] = typer.Option(None, help="Pretrained weights file for the backbone."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, mps."),
) -> None:
    """Find a good learning rate: print the suggestions and write the plot."""
    from ..runs.config import TrainConfig
    from ..runs.recipe import build_data, build_learner, seed_everything

    cfg = TrainConfig(data=str(data), arch=arch, size=size, bs=bs, seed=seed, precompute=precompute and not unfreeze,
                      weights=str(weights) if weights else None, device=device)
    seed_everything(seed)
    learn = build_learner(cfg, build_data(cfg))
    if unfreeze:
        learn.unfreeze()
    res = learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it)
    res.plot(plot)
    _console.out.print(
        f"suggested lr: [bold]{res.suggestion:.2e}[/] (valley)  steep: {res.steep:.2e}  minimum/10: {res.minimum:.2e}\n"
        f"plot: {plot}", markup=True)


@app.command()
def demo(
    epochs: int = typer.Option(6, help="Unfrozen epochs (after one frozen epoch)."),
    size: int = typer.Option(64, help="Image size (the digits are 8x8, upscaled)."),
    out: Path = typer.Option(Path("runs"), help="Folder that receives the run folder."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, mps."),
) -> None:
    """End to end on real data with no download: scikit-learn's handwritten digits, the embedded
    EfficientNet-Lite0, fastai's fine_tune recipe; prints the epoch table, the accuracy and the saved model."""
    from ..data.demo import digits_folder
    from ..runs.config import TrainConfig
    from ..runs.folder import finish_run, start_run
    from ..runs.recipe import train as run_train

    t0 = time.perf_counter()
    path = digits_folder()
    cfg = TrainConfig(data=str(path), arch="efficientnet_lite0", size=size, bs=64, epochs=epochs, lr=4e-3,
                      fine_tune=True, freeze_epochs=1, out=str(out), device=device)
    run_dir = start_run(cfg)
    learn = run_train(cfg)
    finish_run(learn, cfg, run_dir, time.perf_counter() - t0)

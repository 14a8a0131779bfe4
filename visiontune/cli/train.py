"""`visiontune train`, `lr-find` and `demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import _console
from ..errors import ConfigError
from .app import app, parse_floats

DATA_HELP = "Image folder: DATA/train/CLASS/ images (+ DATA/valid/CLASS/), or DATA/CLASS/ images."


@app.command()
def train(
    ctx: typer.Context,
    data: Optional[Path] = typer.Argument(None, help=DATA_HELP + " May come from --config instead."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of settings (keys as in a run's "
                                          "config.yaml); flags given on the command line override it."),
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
    save_best: bool = typer.Option(False, "--save-best", help="Keep the weights of the best epoch (by --monitor) "
                                   "and end each phase with them."),
    early_stop: Optional[int] = typer.Option(None, help="Stop a phase after this many epochs without improvement "
                                             "in --monitor."),
    monitor: str = typer.Option("valid_loss", help="What --save-best and --early-stop watch: valid_loss or a metric."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to TensorBoard (RUN/tensorboard; needs "
                                     "the tensorboard extra)."),
    keep_checkpoints: int = typer.Option(2, help="Checkpoints kept in RUN/models (the newest and fallbacks)."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Ask PyTorch for deterministic GPU kernels "
                                       "(slower); CPU runs repeat exactly without it."),
) -> None:
    """Train a classifier on an image folder into a run folder: config.yaml, log.csv, checkpoints every
    epoch (continue a stopped run with `visiontune resume RUN`), results.json and the model.

    On several GPUs: `torchrun --nproc_per_node=N -m visiontune train DATA ...` (--bs is per process)."""
    from ..distributed import cleanup
    from ..runs.config import TrainConfig
    from ..runs.recipe import train as run_train

    values = {name: value for name, value in ctx.params.items() if name != "config"}
    for key in ("data", "out", "weights"):
        values[key] = str(values[key]) if values[key] is not None else None
    for key in ("lrs", "lr_slice"):
        values[key] = parse_floats(values[key], "--" + key.replace("_", "-"))
    if config is not None:  # the file, then the flags typed on the command line
        typed = {k: v for k, v in values.items() if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"}
        values = {**TrainConfig.load(config).to_dict(), **typed}
    if not values.get("data"):
        raise ConfigError("Pass the image folder: visiontune train DATA (or `data:` in the --config file).")
    if values.get("mixed_precision") == "auto":
        values["mixed_precision"] = None
    cfg = TrainConfig.from_dict(values)
    run_train(cfg)
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
    epochs: int = typer.Option(8, help="Epochs of training every layer."),
    size: int = typer.Option(64, help="Image size (the digits are 8x8, upscaled)."),
    lr: float = typer.Option(2e-3, help="Max learning rate of the one-cycle schedule, the same for every layer."),
    out: Path = typer.Option(Path("runs"), help="Folder that receives the run folder."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, mps."),
) -> None:
    """End to end on real data with no download: scikit-learn's 1,797 handwritten digits, the embedded
    ImageNet-pretrained EfficientNet-Lite0, one-cycle training; prints the epoch table, the accuracy and
    the run folder with the model.

    8x8 grey digits are far from ImageNet photos, so every layer trains at the same learning rate from the
    start (on photos, `visiontune train DATA --fine-tune` - head first, then discriminative rates - is the
    better recipe)."""
    from ..data.demo import digits_folder
    from ..runs.config import TrainConfig
    from ..runs.recipe import train as run_train

    path = digits_folder()
    cfg = TrainConfig(data=str(path), arch="efficientnet_lite0", size=size, bs=64, epochs=0, unfreeze_epochs=epochs,
                      lr_slice=[lr, lr], out=str(out), device=device)
    run_train(cfg)

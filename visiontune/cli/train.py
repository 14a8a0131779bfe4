"""`visiontune train`, `lr-find` and `demo`."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Optional

import typer

from .._core import console as _console
from .._core.errors import ConfigError
from .app import app, parse_floats

DATA_HELP = ("Data folder, layout detected: DATA/train/CLASS/ (+ valid/, val/, validation/ or dev/), DATA/CLASS/, "
             "flat files named by class (train/cat.0.jpg), or a labels.csv/train.csv; test/ or test1/ is predicted.")


def _cli_type(type_text: str):
    """The command-line type of a TrainConfig field (lists and `int | str` are typed as text and parsed)."""
    optional = "None" in type_text
    base = type_text.replace(" | None", "")
    kind = {"int": int, "float": float, "bool": bool}.get(base, str)
    return Optional[kind] if optional else kind


def _train_parameters() -> list[inspect.Parameter]:
    """`visiontune train`'s options, one per TrainConfig field (its default and help): declared once."""
    from ..runs.config import TrainConfig

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("ctx", kw, annotation=typer.Context),
        inspect.Parameter("data", kw, annotation=Optional[Path], default=typer.Argument(
            None, metavar="DATA", help=DATA_HELP + " May come from --config instead.")),
        inspect.Parameter("config", kw, annotation=Optional[Path], default=typer.Option(
            None, "--config", help="YAML file of settings (keys as in a run's config.yaml); flags given on the "
            "command line override it.")),
    ]
    for f in dataclasses.fields(TrainConfig):
        if f.name == "data":
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if isinstance(default, list):
            default = ",".join(map(str, default))
        elif f.name == "bs":
            default = str(default)
        params.append(inspect.Parameter(f.name, kw, annotation=_cli_type(str(f.type)), default=typer.Option(
            default, *f.metadata.get("flags", ()), help=f.metadata.get("help", ""))))
    return params


def train(ctx: typer.Context, **values) -> None:
    """Train a classifier on an image folder into a run folder: config.yaml, log.csv, checkpoints every
    epoch (continue a stopped run with `visiontune resume RUN`), results.json and the model.

    On several GPUs: `torchrun --nproc_per_node=N -m visiontune train DATA ...` (--bs is per process)."""
    from .._core.distributed import cleanup
    from ..runs.config import TrainConfig
    from ..runs.recipe import train as run_train

    config = values.pop("config")
    for key in ("data", "out", "weights"):
        values[key] = str(values[key]) if values[key] is not None else None
    for key in ("lrs", "lr_slice"):
        values[key] = parse_floats(values[key], "--" + key.replace("_", "-"))
    values["metrics"] = [m.strip() for m in values["metrics"].split(",") if m.strip()]
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


train.__signature__ = inspect.Signature(_train_parameters())
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}
app.command()(train)


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
    label_re: Optional[str] = typer.Option(None, help="Class = first group of this regex in each file's path."),
    labels: Optional[str] = typer.Option(None, help="Labels CSV under DATA."),
    train: Optional[str] = typer.Option(None, help="Training folder under DATA."),
    valid: Optional[str] = typer.Option(None, help="Validation folder under DATA."),
) -> None:
    """Find a good learning rate: print the suggestions and write the plot."""
    from ..runs.config import TrainConfig
    from ..runs.recipe import build_data, build_learner, seed_everything

    cfg = TrainConfig(data=str(data), arch=arch, size=size, bs=bs, seed=seed, precompute=precompute and not unfreeze,
                      weights=str(weights) if weights else None, device=device, label_re=label_re, labels=labels,
                      train=train, valid=valid)
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

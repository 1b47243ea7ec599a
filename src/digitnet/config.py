"""One typed, validated configuration per training run, saved beside its results."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from digitnet.errors import DigitnetError

ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "elu", "gelu", "selu", "softplus", "swish", "leaky_relu")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("cosine", "constant")
AUGMENTATIONS = ("none", "elastic", "mirror")
DATASET_NAMES = ("mnist", "fashion-mnist")  # the data sets digitnet.data describes (its DATASETS)
FULL_BATCH = "full"
N_TRAIN = 60000  # training images of either data set, from which the validation split is carved
MAX_SEED = 2**32 - 1  # numpy's global seed, which Keras sets, is a 32-bit number


class ConfigError(DigitnetError, ValueError):
    """A configuration value is not allowed; the message names the field and what is allowed."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Field names follow scikit-learn and Keras."""

    hidden: tuple[int, ...] = (128,)  # neurons per hidden layer: 784-128-10 is the write-up's network
    activation: tuple[str, ...] = ("relu",)  # one per hidden layer, or one for all of them
    batch_size: int | str = 128  # samples per update: 1 = stochastic, k = mini-batch, "full" = batch descent
    optimizer: str = "adam"  # sgd, momentum (SGD with momentum) or adam
    learning_rate: float = (
        2e-3  # peak step size; with cosine decay, twice Adam's usual constant 1e-3 (chosen on validation)
    )
    momentum: float = 0.9  # used by the momentum optimizer only
    schedule: str = "cosine"  # cosine decay to 0 over all epochs, or constant
    weight_decay: float = 0.0  # decoupled weight decay per step (AdamW / SGDW style); 0 = off
    dropout: float = 0.0  # dropout rate after each hidden layer; 0 = off
    epochs: int = 10  # passes over the training split
    seed: int = 0  # seeds initialisation, the validation split, shuffling and augmentation
    val_size: int = 5000  # images carved from the 60,000 training images for validation
    train_size: int | None = None  # use only the first N training images after the split (small runs, tests)
    augment: str = "none"  # "elastic": distort each image afresh every epoch; "mirror": flip half (clothes only)
    elastic_alpha: float = 34.0  # elastic displacement scale, pixels (Simard et al. 2003)
    elastic_sigma: float = 4.0  # Gaussian smoothing of the displacement field, pixels (Simard et al. 2003)
    max_rotation: float = 0.2  # radians, uniform in [-r, r]
    max_scale: float = 0.15  # relative, uniform in [1-s, 1+s]
    max_shear: float = 0.3  # shear factor, uniform in [-s, s]
    dataset: str = "mnist"  # mnist (handwritten digits) or fashion-mnist (clothing): same format, other classes

    def __post_init__(self) -> None:
        # Accept lists (from JSON or the CLI) but store tuples, so the config stays hashable and frozen.
        object.__setattr__(self, "hidden", tuple(self.hidden))
        activation = (self.activation,) if isinstance(self.activation, str) else tuple(self.activation)
        object.__setattr__(self, "activation", activation)
        self._validate()

    def _validate(self) -> None:
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in self.hidden):
            raise ConfigError(
                f"hidden: got {list(self.hidden)}; each hidden layer needs a whole number of neurons >= 1"
            )
        if len(self.activation) not in (1, len(self.hidden)) or not self.activation:
            raise ConfigError(
                f"activation: got {_count(len(self.activation), 'value')} "
                f"for {_count(len(self.hidden), 'hidden layer')}; "
                "give one for all layers or one per layer"
            )
        for name in self.activation:
            if name not in ACTIVATIONS:
                raise ConfigError(f"activation: got {name!r}; allowed: {', '.join(ACTIVATIONS)}")
        if self.batch_size != FULL_BATCH and not (
            isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool) and self.batch_size >= 1
        ):
            raise ConfigError(f"batch_size: got {self.batch_size!r}; allowed: a whole number >= 1, or 'full'")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("dataset", self.dataset, DATASET_NAMES)
        _positive("learning_rate", self.learning_rate)
        _positive("epochs", self.epochs, integer=True)
        _fraction("momentum", self.momentum)
        _fraction("dropout", self.dropout)
        if (
            isinstance(self.weight_decay, bool)
            or not isinstance(self.weight_decay, (int, float))
            or not 0 <= self.weight_decay < 1
        ):
            raise ConfigError(f"weight_decay: got {self.weight_decay!r}; allowed: a number in [0, 1)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed: got {self.seed!r}; allowed: a whole number from 0 to {MAX_SEED}")
        if not _whole(self.val_size) or not 1 <= self.val_size < N_TRAIN:
            raise ConfigError(f"val_size: got {self.val_size!r}; allowed: a whole number from 1 to {N_TRAIN - 1}")
        if self.train_size is not None and (not _whole(self.train_size) or self.train_size < 1):
            raise ConfigError(f"train_size: got {self.train_size!r}; allowed: a whole number >= 1, or none for all")
        if _whole(self.val_size) and self.train_size is not None and self.train_size > N_TRAIN - self.val_size:
            raise ConfigError(
                f"train_size: got {self.train_size}; the training split holds {N_TRAIN - self.val_size} images "
                f"({N_TRAIN} less val_size {self.val_size}); give at most that, or none for all"
            )
        for name in ("elastic_alpha", "elastic_sigma", "max_rotation", "max_scale", "max_shear"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) or value < 0:
                raise ConfigError(f"{name}: got {getattr(self, name)!r}; allowed: a number >= 0")

    @property
    def activations(self) -> tuple[str, ...]:
        """The activation of each hidden layer."""
        return self.activation * len(self.hidden) if len(self.activation) == 1 else self.activation

    def training_batch_size(self) -> int:
        """Samples per update of a run of this config: its training split is all that validation leaves, or
        train_size."""
        return self.resolve_batch_size(self.train_size or N_TRAIN - self.val_size)

    def resolve_batch_size(self, n_train: int) -> int:
        """Samples per update: the whole training split for batch descent, else at most all of it."""
        return n_train if self.batch_size == FULL_BATCH else min(int(self.batch_size), n_train)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hidden"], data["activation"] = list(self.hidden), list(self.activation)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from None


def _count(n: int, noun: str) -> str:
    """'1 value', '2 values'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: got {value!r}; allowed: {', '.join(allowed)}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float, such as 10**400
        return False


def _positive(name: str, value: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not _finite(value) or value <= 0:
        raise ConfigError(f"{name}: got {value!r}; allowed: a {'whole' if integer else 'finite'} number > 0")


def _fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:  # NaN fails too
        raise ConfigError(f"{name}: got {value!r}; allowed: a number in [0, 1)")


def recipe_names() -> list[str]:
    """Names of the recipes shipped in the package."""
    return sorted(
        p.name.removesuffix(".json") for p in resources.files("digitnet.recipes").iterdir() if p.name.endswith(".json")
    )


def _recipe_file(name: str) -> dict[str, Any]:
    if name not in recipe_names():
        raise ConfigError(f"recipe: got {name!r}; allowed: {', '.join(recipe_names()) or 'none shipped'}")
    return json.loads(resources.files("digitnet.recipes").joinpath(f"{name}.json").read_text())


def load_recipe(name: str) -> TrainConfig:
    """The config of a named recipe shipped in the package (see `digitnet train --recipe`)."""
    return TrainConfig.from_dict(_recipe_file(name)["config"])


def describe_recipe(name: str) -> str:
    """A recipe's one-line description."""
    return _recipe_file(name).get("description", "")

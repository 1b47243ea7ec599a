"""The sweep's grid: its trials (a cell of width, depth, activation and batch size, and a seed) and its config."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from digitnet.config import ACTIVATIONS, MAX_SEED, ConfigError, TrainConfig
from digitnet.files import write_atomic

N_PIXELS, N_CLASSES = 28 * 28, 10  # as in digitnet.model, which imports JAX


@dataclass(frozen=True)
class Trial:
    """One training run of the sweep: a cell of the grid and a seed."""

    width: int  # neurons in each hidden layer
    depth: int  # hidden layers
    activation: str
    batch_size: int | str  # 1 = stochastic, k = mini-batch, "full" = batch descent
    seed: int

    @property
    def trial_id(self) -> str:
        """The trial's name and its run folder's, e.g. w64-d2-relu-b128-s0."""
        return f"w{self.width}-d{self.depth}-{self.activation}-b{self.batch_size}-s{self.seed}"

    def config(self, base: TrainConfig) -> TrainConfig:
        """The base config with this trial's network, descent and seed."""
        return base.replace(
            hidden=(self.width,) * self.depth, activation=(self.activation,), batch_size=self.batch_size, seed=self.seed
        )


@dataclass(frozen=True)
class SweepConfig:
    """The grid, the seeds and the base config all trials share; saved as SWEEP_DIR/sweep.json."""

    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)  # neurons per hidden layer, doubling
    depths: tuple[int, ...] = (1, 2, 3)  # hidden layers, all of the same width
    activations: tuple[str, ...] = ()  # empty: the base config's activation
    batch_sizes: tuple[int | str, ...] = ()  # empty: the base config's batch size; "full" = batch descent
    seeds: tuple[int, ...] = (0, 1, 2)  # every cell is trained once per seed; mean and spread are over these
    base: TrainConfig = field(
        default_factory=TrainConfig
    )  # all else; each trial sets hidden, activation, batch_size, seed

    def __post_init__(self) -> None:
        # Sorted and without repeats, so the same grid given in another order is the same sweep.
        for name in ("widths", "depths", "seeds"):
            object.__setattr__(self, name, tuple(sorted(set(_whole_numbers(name, getattr(self, name))))))
        activations = tuple(dict.fromkeys(self.activations)) or _base_activation(self.base)
        batch_sizes = tuple(dict.fromkeys(self.batch_sizes)) or (self.base.batch_size,)
        object.__setattr__(self, "activations", activations)
        object.__setattr__(self, "batch_sizes", batch_sizes)
        if not self.widths or not self.depths or not self.seeds:
            raise ConfigError("sweep: give at least one width, one depth and one seed")
        if any(name not in ACTIVATIONS for name in activations):
            raise ConfigError(f"activations: got {list(activations)}; allowed: {', '.join(ACTIVATIONS)}")
        for trial in self.trials()[:: len(self.seeds)]:
            trial.config(self.base)  # validates batch sizes and the base, naming the field at fault

    def trials(self) -> list[Trial]:
        """Every trial, cell by cell (activation, batch size, depth, width), seeds innermost."""
        grid = itertools.product(self.activations, self.batch_sizes, self.depths, self.widths, self.seeds)
        return [
            Trial(width, depth, activation, batch_size, seed) for activation, batch_size, depth, width, seed in grid
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": list(self.widths),
            "depths": list(self.depths),
            "activations": list(self.activations),
            "batch_sizes": list(self.batch_sizes),
            "seeds": list(self.seeds),
            "base": self.base.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepConfig":
        known = ("widths", "depths", "activations", "batch_sizes", "seeds", "base")
        if sorted(data) != sorted(known):
            raise ConfigError(f"sweep config: got fields {', '.join(sorted(data))}; expected {', '.join(known)}")
        return cls(**{k: tuple(v) for k, v in data.items() if k != "base"}, base=TrainConfig.from_dict(data["base"]))

    def save(self, path: Path) -> None:
        write_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "SweepConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read sweep config {path}: {err}") from None


def _whole_numbers(name: str, values: Iterable[Any]) -> list[int]:
    values = list(values)
    low, high = (0, MAX_SEED) if name == "seeds" else (1, None)
    if not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high) for v in values
    ):
        allowed = f"whole numbers from {low} to {high}" if high is not None else f"whole numbers >= {low}"
        raise ConfigError(f"{name}: got {values}; allowed: {allowed}")
    return values


def _base_activation(base: TrainConfig) -> tuple[str]:
    """The one activation of the base config; a sweep gives all hidden layers of a network the same one."""
    if len(set(base.activation)) != 1:
        raise ConfigError(f"activations: the base config has one per layer {list(base.activation)}; name the sweep's")
    return (base.activation[0],)


def count_params(width: int, depth: int) -> int:
    """Weights and biases of a 784 -> width x depth -> 10 network, without building it."""
    return (N_PIXELS + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * N_CLASSES


def largest_first(trials: Sequence[Trial]) -> list[Trial]:
    """Trials in order of falling size, so that no worker is left alone with a big one at the end."""
    return sorted(trials, key=lambda t: -count_params(t.width, t.depth))

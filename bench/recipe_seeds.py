"""A recipe's test accuracy over seeds: `digitnet train --recipe NAME --seed S` for each seed, then mean and spread.

Each seed is a whole run, as the command line makes it (`train_and_evaluate` into RUNS_DIR/NAME-sS: config,
history, checkpoints, model, test evaluation), one after another in this process. The table gives each seed's
last-epoch validation and test accuracy and its training time (the sum of its epochs' seconds, compiling
excluded), then one row in the columns of the README's results table.

    python bench/recipe_seeds.py fashion [--seeds 0 1 2] [--runs-dir runs] [--data-dir DIR] [--record docs/results.md]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from record import add_record_option, append_record, describe_machine, markdown_table  # bench/record.py

import digitnet  # noqa: F401  (sets KERAS_BACKEND)
from digitnet.config import describe_recipe, load_recipe, recipe_names
from digitnet.data import get_dataset, load_dataset
from digitnet.model import N_CLASSES, N_PIXELS
from digitnet.train import train_and_evaluate


def seconds_text(seconds: float) -> str:
    """Seconds below two minutes, minutes from there: 48 s, 3.2 min."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=recipe_names())
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the run folders go")
    parser.add_argument("--data-dir", default=None)
    add_record_option(parser)
    args = parser.parse_args()

    recipe = load_recipe(args.recipe)
    data = load_dataset(recipe.dataset, args.data_dir)
    rows, tests, times = [], [], []
    for seed in args.seeds:
        out = args.runs_dir / f"{args.recipe}-s{seed}"
        metrics = train_and_evaluate(recipe.replace(seed=seed), out, data=data)
        tests.append(metrics["test_accuracy"])
        times.append(metrics["train_seconds"])
        rows.append(
            [
                seed,
                f"{100 * metrics['val_accuracy']:.2f}%",
                f"{100 * metrics['test_accuracy']:.2f}%",
                seconds_text(metrics["train_seconds"]),
                str(out),
            ]
        )
    per_seed = markdown_table(
        ["seed", "val. accuracy", "test accuracy", "training time", "run folder"], rows, align="rrrrl"
    )
    mean = f"{100 * statistics.mean(tests):.2f}%"
    if len(tests) > 1:
        mean += f" +- {100 * statistics.stdev(tests):.2f}%"
    layers = "-".join(str(n) for n in (N_PIXELS, *recipe.hidden, N_CLASSES))
    spent = seconds_text(min(times)) if len(times) == 1 else f"{seconds_text(min(times))} to {seconds_text(max(times))}"
    summary = markdown_table(
        ["recipe", "data set", "layers (ReLU), epochs", "parameters", "test accuracy", "n", "training time", "machine"],
        [
            [
                f"`{args.recipe}`",
                get_dataset(recipe.dataset).title,
                f"{layers}, {recipe.epochs} epochs",
                f"{metrics['params']:,}",
                mean,
                len(tests),
                f"{spent} per seed",
                describe_machine(),
            ]
        ],
        align="llllrrll",
    )
    print("\n" + per_seed + "\n\n" + summary)
    if args.record:
        note = f"`{args.recipe}`: {describe_recipe(args.recipe)}"
        append_record(args.record, [note, per_seed, summary])


if __name__ == "__main__":
    main()

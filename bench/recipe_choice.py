"""Choosing a recipe's settings on validation only: each candidate trained once per seed, the test set never read.

Every candidate is a base config (a recipe, or the defaults) with some fields changed. Each is trained with the
engine a run uses (digitnet.train.Trainer) on the run's own split, 55,000 training and 5,000 validation images,
and judged by the validation accuracy of its last epoch: no epoch is picked, and no test image is loaded.

    python bench/recipe_choice.py --base fashion --candidate '{"hidden": [1024], "dropout": 0.5}' \\
        --candidate '{"hidden": [2048]}' --seeds 0 1 [--data-dir DIR] [--record docs/results.md]
"""

from __future__ import annotations

import argparse
import json
import statistics

from record import add_record_option, append_record, markdown_table  # bench/record.py

import digitnet  # noqa: F401  (sets KERAS_BACKEND)
from digitnet.config import TrainConfig, load_recipe, recipe_names
from digitnet.data import load_dataset, split_validation
from digitnet.train import Trainer


def validation_run(config: TrainConfig, data) -> tuple[float, float, float]:
    """Train one config to its last epoch: that epoch's validation accuracy, the best one's, and training seconds."""
    trainer = Trainer(config, split_validation(data, config.val_size, config.seed, config.train_size))
    rows = [trainer.run_epoch(epoch) for epoch in range(1, config.epochs + 1)]
    return rows[-1]["val_accuracy"], max(row["val_accuracy"] for row in rows), sum(row["seconds"] for row in rows)


def changes_text(changes: dict) -> str:
    """A candidate's changed fields as one short line: hidden=[1024] dropout=0.5."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in changes.items()) or "(the base itself)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help=f"a recipe ({', '.join(recipe_names())}); default: the defaults")
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="JSON",
        help="fields to change in the base, as a JSON object; repeat for more (none: the base alone)",
    )
    parser.add_argument("--dataset", default=None, help="override the base's data set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-dir", default=None)
    add_record_option(parser)
    args = parser.parse_args()

    base = load_recipe(args.base) if args.base else TrainConfig()
    if args.dataset:
        base = base.replace(dataset=args.dataset)
    candidates = [json.loads(text) for text in args.candidate] or [{}]
    configs = [base.replace(**changes) for changes in candidates]  # every candidate checked before any training
    data = load_dataset(base.dataset, args.data_dir)
    print(f"base: {args.base or 'defaults'} on {base.dataset}; seeds {args.seeds}; last-epoch validation accuracy")
    rows = []
    for changes, config in zip(candidates, configs):
        runs = [validation_run(config.replace(seed=seed), data) for seed in args.seeds]
        last = [run[0] for run in runs]
        mean = statistics.mean(last)
        spread = f" +- {100 * statistics.stdev(last):.2f}%" if len(last) > 1 else ""
        rows.append(
            [
                changes_text(changes),
                " ".join(f"{100 * v:.2f}%" for v in last),
                f"{100 * mean:.2f}%{spread}",
                " ".join(f"{100 * run[1]:.2f}%" for run in runs),
                f"{statistics.mean(run[2] for run in runs):.0f} s",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    header = ["changes to the base", "val. accuracy per seed", "mean", "best epoch's (not used)", "training time"]
    table = markdown_table(header, rows, align="lrrrr")
    print("\n" + table)
    if args.record:
        note = (
            f"Base: `{args.base or 'defaults'}` on {base.dataset} ({json.dumps(base.to_dict())}); seeds "
            f"{', '.join(map(str, args.seeds))}; validation accuracy of the last epoch, 5,000 held-out training "
            "images; the test set was not read."
        )
        append_record(args.record, [note, table])


if __name__ == "__main__":
    main()

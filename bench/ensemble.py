"""Would averaging several finished runs close an accuracy gap? Test accuracy of each run and of their mean.

Loads each run's model.keras, computes class probabilities for the 10,000 test images (or the validation
images, below), and prints each run's accuracy, then that of the runs' averaged probabilities (every run
given is used: none is picked by its score). Runs of different seeds hold out different validation images,
so a committee of seeds has no validation figure: this measures a committee, it does not choose one. Runs
of one seed and validation size hold out the same images; `--split validation` compares them there (the
counts of images every run and any run misreads say how many images two settings differ on).

    python bench/ensemble.py runs/deep-s0 runs/deep-s1 runs/deep-s2 [--data-dir DIR]
    python bench/ensemble.py runs/deep-s0 runs/deep-mild-s0 --split validation [--record docs/results.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

# isort: split

import numpy as np
from record import add_record_option, append_record, markdown_table  # bench/record.py

from digitnet.config import TrainConfig
from digitnet.data import Mnist, load_mnist, split_validation
from digitnet.errors import DigitnetError
from digitnet.evaluate import predict_probabilities
from digitnet.model import N_CLASSES, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (two or more)")
    parser.add_argument(
        "--data-dir", default=None, help="folder with the MNIST IDX files (default: DIGITNET_DATA or the cache)"
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="validation: the images the runs held out, for runs of one seed and validation size",
    )
    add_record_option(parser)
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("give two or more run folders")
    data = load_mnist(args.data_dir)
    images, labels = (
        split_images(data, args.runs) if args.split == "validation" else (data.test_images, data.test_labels)
    )
    total = np.zeros((len(labels), N_CLASSES))
    wrong = []  # per run, whether it misreads each image
    for run in args.runs:
        probabilities = predict_probabilities(load_model(run, compile=False), images)
        total += probabilities
        wrong.append(probabilities.argmax(1) != labels)
        print(f"{run}: {args.split} accuracy {100 * (1 - wrong[-1].mean()):.2f}% ({wrong[-1].sum()} errors)")
    # Averaging can only mend the images some runs read right; the overlap says how much room it has.
    overlap = (
        f"images every run misreads: {np.all(wrong, axis=0).sum()}; "
        f"that any run misreads: {np.any(wrong, axis=0).sum()}"
    )
    print(overlap)
    errors = np.sum(total.argmax(1) != labels)
    print(
        f"average of the {len(args.runs)} runs' probabilities: "
        f"{args.split} accuracy {100 * (1 - errors / len(labels)):.2f}% "
        f"({errors} errors of {len(labels)})"
    )
    if args.record:
        rows = [
            (f"`{run}`", f"{100 * (1 - misread.mean()):.2f}%", misread.sum()) for run, misread in zip(args.runs, wrong)
        ]
        rows.append(
            (f"average of the {len(args.runs)} runs' probabilities", f"{100 * (1 - errors / len(labels)):.2f}%", errors)
        )
        append_record(
            args.record,
            [
                f"Committee on the {args.split} images ({len(labels):,}); {overlap}.",
                markdown_table(["run", f"{args.split} accuracy", "errors"], rows),
            ],
        )


def split_images(data: Mnist, runs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The validation images and labels the runs held out, which must be the same images for every run."""
    configs = [TrainConfig.load(Path(run) / "config.json") for run in runs]
    held_out = {(config.seed, config.val_size) for config in configs}  # all the split's validation part depends on
    if len(held_out) > 1:
        raise DigitnetError(
            "--split validation: these runs hold out different images (their seeds or validation sizes differ); "
            "give runs of one seed and validation size, or leave out --split"
        )
    splits = split_validation(data, configs[0].val_size, configs[0].seed)
    return splits.x_val, splits.y_val


if __name__ == "__main__":
    try:
        main()
    except DigitnetError as err:
        raise SystemExit(f"error: {err}") from None

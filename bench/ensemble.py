"""Would averaging several finished runs close an accuracy gap? Test accuracy of each run and of their mean.

Loads each run's model.keras, computes class probabilities for the 10,000 test images, and prints each run's
test accuracy, then that of the runs' averaged probabilities (every run given is used: none is picked by its
score). Runs of different seeds hold out different validation images, so no validation figure is printed
for the average: this measures a committee, it does not choose one.

    python bench/ensemble.py runs/deep-s0 runs/deep-s1 runs/deep-s2 [--data-dir DIR]
"""

from __future__ import annotations

import argparse

import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

import numpy as np

from digitnet.data import load_mnist
from digitnet.errors import DigitnetError
from digitnet.evaluate import load_run_model, predict_probabilities
from digitnet.model import N_CLASSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (two or more)")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default: DIGITNET_DATA or the cache)")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("give two or more run folders")
    data = load_mnist(args.data_dir)
    labels = data.test_labels
    total = np.zeros((len(labels), N_CLASSES))
    wrong = []  # per run, whether it misreads each test image
    for run in args.runs:
        probabilities = predict_probabilities(load_run_model(run, compile=False), data.test_images)
        total += probabilities
        wrong.append(probabilities.argmax(1) != labels)
        print(f"{run}: test accuracy {100 * (1 - wrong[-1].mean()):.2f}% ({wrong[-1].sum()} errors)")
    # Averaging can only mend the images some runs read right; the overlap says how much room it has.
    print(f"images every run misreads: {np.all(wrong, axis=0).sum()}; that any run misreads: {np.any(wrong, axis=0).sum()}")
    errors = np.sum(total.argmax(1) != labels)
    print(f"average of the {len(args.runs)} runs' probabilities: test accuracy {100 * (1 - errors / len(labels)):.2f}% "
          f"({errors} errors of {len(labels)})")


if __name__ == "__main__":
    try:
        main()
    except DigitnetError as err:
        raise SystemExit(f"error: {err}") from None

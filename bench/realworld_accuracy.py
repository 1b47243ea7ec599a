"""Accuracy on digits that are not MNIST's, per kind of picture: digitnet's preprocessing against a plain resize.

    .venv/bin/python bench/realworld_accuracy.py [MODEL] [--split tune|held-out] [--n-per-kind 100]
                                                [--n-fonts 300] [--n-sklearn 300] [--seed 0] [--failures DIR]
                                                [--record docs/preprocessing.md]

MODEL is a .keras file or a run folder holding model.keras; without one, the reference network of the
tests is trained here first (784-128-10 ReLU, Adam, all 60,000 MNIST training images, 5 epochs, seed 0;
MNIST as digitnet finds it: $DIGITNET_DATA, the cache, mirrors, PyPI). The pictures are written to a
temporary folder:
  tests/hardcases.py  kinds new to the project (edge-crop, form-box, thick, thin, pencil, ruled, squared,
                      small, shadow), from Debian handwriting fonts and the Hershey stroke fonts; --split
                      picks the fonts and pictures that rules were tuned on, or the held-out ones
  tests/realworld.py  fonts (handwriting fonts photographed) and sklearn (8x8 digits scanned)
Each picture is read twice:
  digitnet  digitnet.preprocess.preprocess; "refused" counts the pictures it found no digit in
  plain     PIL's convert("L").resize((28, 28)) / 255, inverted when the picture is mostly light (dark ink
            on paper): what a careful first Keras script does
--failures writes the 28x28 inputs that digitnet's preprocessing got wrong, as PNG, for a look.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

# isort: split

import keras
import numpy as np
from PIL import Image

from digitnet.model import make_predict_fn
from digitnet.preprocess import preprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import hardcases  # noqa: E402  (lives beside the tests that use it)
import realworld  # noqa: E402
from record import add_record_option, append_record, markdown_table  # noqa: E402  (bench/record.py)


def plain_resize(path: Path) -> np.ndarray:
    """The naive input: greyscale, squashed to 28x28, scaled to [0, 1], inverted when the picture is mostly light."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L").resize((28, 28)), np.float32) / 255.0
    return 1.0 - pixels if pixels.mean() > 0.5 else pixels


def reference_model(seed: int = 0) -> keras.Model:
    """The tests' reference network, 784-128-10 ReLU, trained with Adam on all of MNIST's training set for 5 epochs."""
    from digitnet.config import TrainConfig
    from digitnet.data import load_mnist
    from digitnet.model import build_model

    mnist = load_mnist()
    model = build_model(TrainConfig(hidden=(128,), activation="relu", seed=seed))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pixels = mnist.train_images.reshape(-1, 784).astype(np.float32) / 255.0
    model.fit(pixels, mnist.train_labels, epochs=5, batch_size=128, verbose=0)
    return model


def load_model(path: Path) -> keras.Model:
    """A model from a .keras file or from a run folder's model.keras."""
    return keras.saving.load_model(path / "model.keras" if path.is_dir() else path, compile=False)


def measure(predict, samples: list[tuple[Path, int]]) -> dict:
    """Correct answers of both readings, refusals of digitnet's, and digitnet's inputs and guesses."""
    labels = np.array([label for _, label in samples])
    ours = np.stack([preprocess(path) for path, _ in samples])
    plain = np.stack([plain_resize(path) for path, _ in samples])
    guess_ours, guess_plain = predict(ours).argmax(axis=1), predict(plain).argmax(axis=1)
    return {
        "n": len(labels),
        "digitnet": int((guess_ours == labels).sum()),
        "plain": int((guess_plain == labels).sum()),
        "refused": int((ours.reshape(len(labels), -1).max(axis=1) == 0).sum()),
        "inputs": ours,
        "labels": labels,
        "guesses": guess_ours,
    }


def save_failures(out_dir: Path, kind: str, result: dict) -> None:
    """Write each misread 28x28 input as <kind>_<index>_true<label>_pred<guess>.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in np.flatnonzero(result["guesses"] != result["labels"]):
        name = f"{kind}_{i:04d}_true{result['labels'][i]}_pred{result['guesses'][i]}.png"
        Image.fromarray(np.round(result["inputs"][i] * 255).astype(np.uint8)).save(out_dir / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "model",
        type=Path,
        nargs="?",
        help="a .keras file, or a run folder holding model.keras (default: train the tests' reference network here)",
    )
    parser.add_argument(
        "--split",
        choices=hardcases.SPLITS,
        default="tune",
        help="fonts and pictures of tests/hardcases.py (default: tune)",
    )
    parser.add_argument(
        "--n-per-kind", type=int, default=100, help="pictures of each kind of tests/hardcases.py (default: 100)"
    )
    parser.add_argument("--n-fonts", type=int, default=300, help="font photos of tests/realworld.py (default: 300)")
    parser.add_argument(
        "--n-sklearn", type=int, default=300, help="scikit-learn scans of tests/realworld.py (default: 300)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated pictures (default: 0)")
    parser.add_argument("--failures", type=Path, default=None, help="write misread 28x28 inputs here as PNG")
    add_record_option(parser)
    args = parser.parse_args()

    model = load_model(args.model) if args.model else reference_model()
    predict = make_predict_fn(model)
    print(
        f"model {args.model or 'reference 784-128-10, 60k x 5 epochs, seed 0'}; split {args.split}; seed {args.seed}; "
        f"python {platform.python_version()}, {platform.machine()}"
    )
    print("| kind | n | digitnet | plain resize | refused |\n| --- | ---: | ---: | ---: | ---: |")
    rows = []  # for --record
    with tempfile.TemporaryDirectory() as tmp:
        sets = hardcases.generate(Path(tmp) / "hard", n_per_kind=args.n_per_kind, split=args.split, seed=args.seed)
        sets.update(
            realworld.generate(Path(tmp) / "realworld", n_fonts=args.n_fonts, n_sklearn=args.n_sklearn, seed=args.seed)
        )
        for kind, samples in sets.items():
            if not samples:
                continue
            result = measure(predict, samples)
            n = result["n"]
            print(
                f"| {kind} | {n} | {result['digitnet'] / n:.3f} | {result['plain'] / n:.3f} | {result['refused']} |",
                flush=True,
            )
            rows.append(
                (kind, str(n), f"{result['digitnet'] / n:.3f}", f"{result['plain'] / n:.3f}", str(result["refused"]))
            )
            if args.failures:
                save_failures(args.failures, kind, result)
    if args.record:
        append_record(
            args.record,
            [
                f"Model: {args.model or 'the reference network, trained here'}; split {args.split}; seed {args.seed}.",
                markdown_table(["kind", "n", "digitnet", "plain resize", "refused"], rows),
            ],
        )


if __name__ == "__main__":
    main()

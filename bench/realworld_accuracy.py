"""Accuracy on digits that are not MNIST's: digitnet's preprocessing against a plain resize.

    .venv/bin/python bench/realworld_accuracy.py MODEL [--n-fonts 1000] [--n-sklearn 500] [--seed 0]
                                                [--failures DIR] [--record docs/realworld.md]

MODEL is a .keras file or a run folder holding model.keras. The images come from tests/realworld.py
(handwriting fonts photographed on paper and boards; scikit-learn's 8x8 digits scanned), written to a
temporary folder. Each is read twice:
  digitnet  digitnet.preprocess.preprocess: polarity, background, specks, 20-pixel box, center of mass
  plain     PIL's convert("L").resize((28, 28)) / 255, no inversion: what a first Keras script does
--failures writes the 28x28 inputs that digitnet's preprocessing got wrong, as PNG, for a look.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

import keras
import numpy as np
from PIL import Image

from digitnet.model import make_predict_fn
from digitnet.preprocess import preprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from realworld import available_fonts, generate  # noqa: E402  (lives beside the tests that use it)
from record import add_record_option, append_record, markdown_table  # noqa: E402  (bench/record.py)


def plain_resize(path: Path) -> np.ndarray:
    """The naive input: greyscale, squashed to 28x28, scaled to [0, 1], whatever the polarity."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L").resize((28, 28)), np.float32) / 255.0


def read_all(samples: list[tuple[Path, int]], read) -> tuple[np.ndarray, np.ndarray, float]:
    """Images (N, 28, 28), labels (N,) and the mean seconds per image of one way of reading files."""
    start = time.perf_counter()
    images = np.stack([read(path) for path, _ in samples])
    seconds = (time.perf_counter() - start) / len(samples)
    return images, np.array([label for _, label in samples]), seconds


def save_failures(out_dir: Path, source: str, images: np.ndarray, labels: np.ndarray, predicted: np.ndarray) -> None:
    """Write each misread 28x28 input as <source>_<index>_true<label>_pred<guess>.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in np.flatnonzero(predicted != labels):
        name = f"{source}_{i:04d}_true{labels[i]}_pred{predicted[i]}.png"
        Image.fromarray(np.round(images[i] * 255).astype(np.uint8)).save(out_dir / name)


def load_model(path: Path) -> keras.Model:
    """A model from a .keras file or from a run folder's model.keras."""
    return keras.saving.load_model(path / "model.keras" if path.is_dir() else path, compile=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a .keras file, or a run folder holding model.keras")
    parser.add_argument("--n-fonts", type=int, default=1000, help="font photos to generate (default: 1000)")
    parser.add_argument("--n-sklearn", type=int, default=500, help="scikit-learn scans to generate (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated set (default: 0)")
    parser.add_argument("--failures", type=Path, default=None, help="write misread 28x28 inputs here as PNG")
    add_record_option(parser)
    args = parser.parse_args()

    predict = make_predict_fn(load_model(args.model))
    fonts = sorted(p.name for files in available_fonts().values() for p in files)
    print(f"model {args.model}; seed {args.seed}; python {platform.python_version()}, {platform.machine()}")
    print(f"fonts: {', '.join(fonts) or 'none installed, Pillow default'}")
    print(f"{'source':<9} {'n':>5} {'digitnet':>9} {'plain':>7} {'ms/image':>9}")
    totals = {"n": 0, "digitnet": 0, "plain": 0}
    rows = []  # for --record
    with tempfile.TemporaryDirectory() as tmp:
        sets = generate(Path(tmp), n_fonts=args.n_fonts, n_sklearn=args.n_sklearn, seed=args.seed)
        for source, samples in sets.items():
            ours, labels, seconds = read_all(samples, preprocess)
            plain, _, _ = read_all(samples, plain_resize)
            guess_ours, guess_plain = predict(ours).argmax(axis=1), predict(plain).argmax(axis=1)
            correct_ours, correct_plain = int((guess_ours == labels).sum()), int((guess_plain == labels).sum())
            print(f"{source:<9} {len(labels):>5} {correct_ours / len(labels):>9.3f} "
                  f"{correct_plain / len(labels):>7.3f} {seconds * 1000:>9.1f}")
            rows.append((source, f"{len(labels):,}", f"{100 * correct_ours / len(labels):.1f}%",
                         f"{100 * correct_plain / len(labels):.1f}%", f"{seconds * 1000:.1f}"))
            totals["n"] += len(labels)
            totals["digitnet"] += correct_ours
            totals["plain"] += correct_plain
            if args.failures:
                save_failures(args.failures, source, ours, labels, guess_ours)
    n = totals["n"]
    print(f"{'overall':<9} {n:>5} {totals['digitnet'] / n:>9.3f} {totals['plain'] / n:>7.3f}")
    if args.record:
        rows.append(("all", f"{n:,}", f"{100 * totals['digitnet'] / n:.1f}%", f"{100 * totals['plain'] / n:.1f}%", ""))
        append_record(args.record, [
            f"Model `{args.model}`; generated set of seed {args.seed}; fonts: {', '.join(fonts) or 'none installed, Pillow default'}.",
            markdown_table(["source", "n", "digitnet preprocessing", 'plain resize (`convert("L").resize((28, 28))`)',
                            "digitnet ms/image"], rows)])


if __name__ == "__main__":
    main()

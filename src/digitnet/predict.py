"""Inference: load a trained model once and read digits (or clothes) from image files, bytes or arrays."""

from __future__ import annotations

import functools
import io
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
from PIL import Image

from digitnet.clothes import NOTE, prepare_clothing
from digitnet.data import class_names, trained_dataset
from digitnet.errors import DigitnetError
from digitnet.images import ImageError
from digitnet.model import (
    N_CLASSES,
    layer_sizes,
    load_model,
    make_numpy_activations_fn,
    make_numpy_predict_fn,
    make_predict_fn,
)
from digitnet.preprocess import preprocess
from digitnet.run import MODEL, RunDir, model_file
from digitnet.segment import Digit, read_digits

# XLA compiles once per input shape: padding every batch up to one of these sizes keeps it to four
# compilations, all done at load time, so no request ever waits for the compiler. (Only for networks
# the NumPy forward pass cannot run; see make_numpy_predict_fn.)
BATCH_SIZES = (1, 8, 32, 128)


class Predictor:
    """A loaded model and its forward pass; safe to share between threads: the pass is pure and the
    weights are never written, so no lock is needed."""

    def __init__(self, model: keras.Model, path: Path | None = None, dataset: str = "mnist") -> None:
        self.model = model
        self.path = path
        self.dataset = dataset
        self.classes = class_names(dataset)
        # Dense networks (all that digitnet trains) run in NumPy; any other goes through XLA, compiled now.
        self._forward = make_numpy_predict_fn(model)
        self.compiled = self._forward is None
        if self.compiled:
            self._forward = make_predict_fn(model)
            self._warm_up()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Predictor":
        """Load a run folder (its model.keras) or a .keras file, ready to predict; the run's config.json says which
        data set it learned (a .keras file on its own: MNIST)."""
        model_path = model_file(path)
        return cls(load_model(model_path, compile=False), model_path, trained_dataset(model_path))

    def prepare(self, source: str | os.PathLike | bytes) -> np.ndarray:
        """The (28, 28) image in [0, 1] the network reads: handwriting brought to MNIST's convention, or a photo of
        clothes brought to Fashion-MNIST's; ImageError if it cannot be read."""
        if self.dataset == "fashion-mnist":
            return prepare_clothing(source)
        return preprocess(source, require_ink=True)

    def read(self, source: str | os.PathLike | bytes, one_digit: bool = False) -> list[Digit]:
        """The inputs in an image, each as the network reads it: the digits of a number, left to right (with
        `one_digit`, the whole ink as one), or a photo of clothes, whole. ImageError if it cannot be read."""
        if not self.reads_numbers:
            return [Digit(prepare_clothing(source), None)]
        return read_digits(source, one=one_digit)

    @property
    def reads_numbers(self) -> bool:
        """Whether an image may hold several inputs read left to right (digits), not one whole picture (clothes)."""
        return self.dataset != "fashion-mnist"

    @property
    def note(self) -> str | None:
        """What `predict` says it does to the images, where it is not MNIST's preprocessing."""
        return NOTE if self.dataset == "fashion-mnist" else None

    def _warm_up(self) -> None:
        """Run each padded batch size once, so that compiling happens now rather than on a request."""
        for size in BATCH_SIZES:
            self._forward(np.zeros((size, 28, 28), np.float32))

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for images (N, 28, 28) of floats in [0, 1], MNIST convention."""
        x = np.asarray(x, np.float32)
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"expected images of shape (N, 28, 28), got {x.shape}")
        largest = BATCH_SIZES[-1]
        chunks = [self._predict_padded(x[i : i + largest]) for i in range(0, len(x), largest)]
        return np.concatenate(chunks) if chunks else np.zeros((0, N_CLASSES), np.float32)

    def _predict_padded(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for at most BATCH_SIZES[-1] images, padded with blanks to a compiled size if compiled."""
        if not self.compiled:
            return self._forward(x)
        size = next(s for s in BATCH_SIZES if s >= len(x))
        padded = np.zeros((size, 28, 28), np.float32)
        padded[: len(x)] = x
        return self._forward(padded)[: len(x)]

    def predict_sources(
        self,
        sources: Sequence[str | os.PathLike | bytes],
        names: Sequence[str] | None = None,
        save_dir: str | os.PathLike | None = None,
        one_digit: bool = False,
    ) -> list[dict[str, Any]]:
        """One result per source, in order: a reading (see `reading`), or {"file", "error"} for an unreadable image.

        `names` label the results (default: the path as given); `save_dir`, when set, receives the
        28x28 PNG that the network saw for each digit, and its path goes in the digit's "preprocessed".
        With `one_digit`, each image is read as one digit, however its ink is laid out.
        """
        sources = list(sources)
        names = list(names) if names is not None else [source_name(s, i) for i, s in enumerate(sources)]
        if len(names) != len(sources):
            raise ValueError(f"got {len(names)} names for {len(sources)} sources")
        numbers, errors = read_numbers(sources, partial(self.read, one_digit=one_digit))
        digits = [digit for i in sorted(numbers) for digit in numbers[i]]
        probabilities = iter(self.predict_arrays(np.stack([d.pixels for d in digits])) if digits else [])
        saved = iter(self._save(numbers, names, save_dir) if save_dir is not None else [])
        results = []
        for i, name in enumerate(names):
            if i not in numbers:
                results.append({"file": name, "error": errors[i]})
                continue
            count = len(numbers[i])
            paths = [str(next(saved)) for _ in range(count)] if save_dir is not None else None
            results.append(
                reading(
                    name,
                    numbers[i],
                    [next(probabilities) for _ in range(count)],
                    paths,
                    self.classes,
                    number=self.reads_numbers,
                )
            )
        return results

    @staticmethod
    def _save(numbers: dict[int, list[Digit]], names: Sequence[str], save_dir: str | os.PathLike) -> list[Path]:
        """Write each digit's 28x28 image, in the order of predict_sources: NAME_28x28.png, or NAME_1_28x28.png,
        NAME_2_28x28.png, ... for the digits of a number."""
        images, stems = [], []
        for i in sorted(numbers):
            for place, digit in enumerate(numbers[i], start=1):
                images.append(digit.pixels)
                stems.append(names[i] if len(numbers[i]) == 1 else f"{Path(names[i]).stem}_{place}.png")
        return save_images(images, stems, Path(save_dir))

    @functools.cached_property
    def _activations(self) -> Any:
        return make_numpy_activations_fn(self.model)

    def activations(self, x: np.ndarray) -> list[np.ndarray] | None:
        """What each Dense layer gives for images (N, 28, 28) in [0, 1], after its activation: one array
        (N, units) per layer, the last being the probabilities; None for a network NumPy cannot run."""
        x = np.asarray(x, np.float32)
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"expected images of shape (N, 28, 28), got {x.shape}")
        return None if self._activations is None else self._activations(x)

    def describe(self) -> dict[str, Any]:
        """What is being served: layer sizes, parameter count, data set and class names and, when the run recorded
        it, test accuracy.

        The run is named by its folder's name alone: the server's own paths are no business of its clients.
        """
        return {
            "name": self.model.name,
            "run": (self.path.parent.name if self.path.name == MODEL else self.path.name) if self.path else None,
            "layers": [{"name": n, "units": u, "activation": a} for n, u, a in layer_sizes(self.model)],
            "parameters": int(self.model.count_params()),
            "test_accuracy": RunDir(self.path.parent).test_accuracy() if self.path else None,
            "dataset": self.dataset,
            "classes": list(self.classes),
        }


def source_name(source: str | os.PathLike | bytes, index: int) -> str:
    """How a result names its input: the path as given, or the position of in-memory bytes."""
    return f"<bytes #{index}>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)


def read_numbers(
    sources: Iterable[str | os.PathLike | bytes], read: Callable[[Any], list[Digit]] = read_digits
) -> tuple[dict[int, list[Digit]], dict[int, str]]:
    """What `read` finds in each readable source (digits, left to right), by position, and an error message for
    each source that failed."""
    numbers: dict[int, list[Digit]] = {}
    errors: dict[int, str] = {}
    for i, source in enumerate(sources):
        try:
            numbers[i] = read(source)
        except ImageError as err:
            errors[i] = str(err)
        except OSError as err:  # e.g. a folder or an unreadable file given as an image
            errors[i] = f"cannot read {source_name(source, i)}: {err.strerror or err}"
    return numbers, errors


def prediction(name: str, probabilities: np.ndarray, classes: Sequence[str] = class_names("mnist")) -> dict[str, Any]:
    """The result object for one input: its label and class name, that label's probability and all ten."""
    probs = [float(p) for p in probabilities]
    label = int(np.argmax(probabilities))
    return {"file": name, "label": label, "class": classes[label], "probability": probs[label], "probabilities": probs}


def reading(
    name: str,
    digits: Sequence[Digit],
    probabilities: Sequence[np.ndarray],
    preprocessed: Sequence[str] | None = None,
    classes: Sequence[str] = class_names("mnist"),
    number: bool = True,
) -> dict[str, Any]:
    """The result object for one image, as `digitnet predict --json` prints it.

    "number" is the digits read left to right, as a string; "digits" gives each one's label, class, probabilities,
    "box" (left, top, right, bottom in the image's pixels) and, when saved, "preprocessed". An image of one
    digit, the common case, also has that digit's "label", "class", "probability" and "probabilities" at the top
    (and its "preprocessed"), as a reader of single digits expects. Without `number` (a photo of clothes, read
    whole) the result is that one object alone.
    """
    each = []
    for digit, probs, place in zip(digits, probabilities, range(len(digits))):
        entry = prediction(name, probs, classes)
        del entry["file"]
        if digit.box is not None:
            entry["box"] = list(digit.box)
        if preprocessed is not None:
            entry["preprocessed"] = preprocessed[place]
        each.append(entry)
    result: dict[str, Any] = {"file": name}
    if len(each) == 1:
        result.update({key: value for key, value in each[0].items() if key != "box"})
    if number:
        result["number"] = "".join(str(entry["label"]) for entry in each)
        result["digits"] = each
    return result


def encode_png(image: np.ndarray) -> bytes:
    """A 28x28 grey PNG of an image in [0, 1]: exactly what the network saw, a white digit or garment on black."""
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def save_images(images: Sequence[np.ndarray], names: Sequence[str], out_dir: Path) -> list[Path]:
    """Write each image as NAME_28x28.png in out_dir, adding -1, -2, ... rather than overwrite a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DigitnetError(f"save-preprocessed: {out_dir} is a file; give a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return [
            _write_new_file(out_dir, _safe_stem(name) + "_28x28", encode_png(image))
            for image, name in zip(images, names)
        ]
    except OSError as err:
        raise DigitnetError(f"save-preprocessed: cannot write into {out_dir}: {err.strerror or err}") from None


def _safe_stem(name: str) -> str:
    """The file name stem of an input, with characters other than letters, digits, '.', '-', '_' made '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem) or "image"


def _write_new_file(out_dir: Path, stem: str, data: bytes) -> Path:
    """Write data to out_dir/STEM.png, or STEM-1.png, STEM-2.png, ... whichever does not exist yet."""
    for attempt in itertools.count():
        path = out_dir / (f"{stem}.png" if attempt == 0 else f"{stem}-{attempt}.png")
        try:
            with open(path, "xb") as file:  # "x" fails if the file exists, even if it appeared a moment ago
                file.write(data)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")

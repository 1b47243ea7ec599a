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
from digitnet.model import (N_CLASSES, layer_sizes, load_model, make_numpy_activations_fn, make_numpy_predict_fn,
                            make_predict_fn)
from digitnet.preprocess import ImageError, preprocess
from digitnet.run import MODEL, RunDir, model_file

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
    ) -> list[dict[str, Any]]:
        """One result per source, in order: a prediction, or {"file", "error"} for an unreadable image.

        `names` label the results (default: the path as given); `save_dir`, when set, receives the
        28x28 PNG that the network saw for each readable image, and its path goes in the result's "preprocessed".
        """
        sources = list(sources)
        names = list(names) if names is not None else [source_name(s, i) for i, s in enumerate(sources)]
        if len(names) != len(sources):
            raise ValueError(f"got {len(names)} names for {len(sources)} sources")
        images, errors = read_images(sources, self.prepare)
        good = sorted(images)
        probabilities = dict(zip(good, self.predict_arrays(np.stack([images[i] for i in good])))) if good else {}
        saved = {}
        if save_dir is not None:
            saved = dict(zip(good, save_images([images[i] for i in good], [names[i] for i in good], Path(save_dir))))
        results = [
            prediction(name, probabilities[i], self.classes) if i in probabilities
            else {"file": name, "error": errors[i]}
            for i, name in enumerate(names)
        ]
        for i, path in saved.items():  # which file holds which input's 28x28 image: names may repeat
            results[i]["preprocessed"] = str(path)
        return results

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


def read_images(sources: Iterable[str | os.PathLike | bytes],
                prepare: Callable[[Any], np.ndarray] = partial(preprocess, require_ink=True),
                ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Images prepared for the network (28x28) by position, and an error message for each source that failed."""
    images: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for i, source in enumerate(sources):
        try:
            images[i] = prepare(source)
        except ImageError as err:
            errors[i] = str(err)
        except OSError as err:  # e.g. a folder or an unreadable file given as an image
            errors[i] = f"cannot read {source_name(source, i)}: {err.strerror or err}"
    return images, errors


def prediction(name: str, probabilities: np.ndarray, classes: Sequence[str] = class_names("mnist")) -> dict[str, Any]:
    """The result object for one image, as `digitnet predict --json` prints it: the label and its class's name."""
    probs = [float(p) for p in probabilities]
    label = int(np.argmax(probabilities))
    return {"file": name, "label": label, "class": classes[label], "probability": probs[label], "probabilities": probs}


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
        return [_write_new_file(out_dir, _safe_stem(name) + "_28x28", encode_png(image)) for image, name in zip(images, names)]
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

"""What the lab shows of the run folders in RUNS_DIR: a summary of each for the table, and a look inside one
(test scores, confusion matrix, most confident mistakes, first-layer weights, each layer's activations).

Runs are read through digitnet.run, whoever trained them (the lab, `digitnet train`, a sweep's copy); a run's
model is loaded once and kept while it stays among the few used last.
"""

from __future__ import annotations

import base64
import collections
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from digitnet.config import TrainConfig
from digitnet.data import ImageSet, get_dataset
from digitnet.errors import DigitnetError
from digitnet.evaluate import classification_metrics
from digitnet.model import N_CLASSES, N_PIXELS, layer_sizes
from digitnet.predict import Predictor, encode_png
from digitnet.run import CHECKPOINT, CONFIG, METRICS, MODEL, PREVIOUS_CHECKPOINT, RunDir

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a folder name that is safe in a URL and a path
MODELS_KEPT = 4  # loaded models kept in memory: the run on show and the few compared with it
MISTAKES_SHOWN = 24  # the most confident mistakes on the test set


class NoSuchRun(DigitnetError):
    """No run folder of that name in RUNS_DIR."""


def run_dir(runs_dir: Path, name: str) -> RunDir:
    """The run folder `name` in runs_dir; NoSuchRun unless it is one (a folder with a config.json)."""
    if not RUN_NAME.fullmatch(name) or not (runs_dir / name / CONFIG).is_file():
        raise NoSuchRun(f"no run named {name!r} in {runs_dir}; pick one from the table")
    return RunDir(runs_dir / name)


def new_run_name(runs_dir: Path, taken: set[str]) -> str:
    """A folder name for a new run: the date and time, as `digitnet train` names its runs, made unique."""
    stem = time.strftime("%Y%m%d-%H%M%S")
    name, n = stem, 1
    while name in taken or (runs_dir / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def parameter_count(hidden: tuple[int, ...]) -> int:
    """Weights and biases of a 784-hidden...-10 network: 784-128-10 has 101,770."""
    sizes = (N_PIXELS, *hidden, N_CLASSES)
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))


def folder_state(run: RunDir) -> str:
    """finished, stopped (resumable), training elsewhere (another process holds it), or empty (never trained)."""
    holder = run.holder()
    if holder is not None and holder != os.getpid():
        return "training elsewhere"
    if run.file(METRICS).is_file() and run.file(MODEL).is_file():
        return "finished"
    if run.file(CHECKPOINT).is_file() or run.file(PREVIOUS_CHECKPOINT).is_file():
        return "stopped"
    return "empty"


def summarize(run: RunDir, config: TrainConfig) -> dict[str, Any]:
    """One row of the runs table: the network, how it was trained, its scores and its time."""
    try:
        history = run.read_history() if run.file("history.csv").is_file() else []
    except DigitnetError:
        history = []
    metrics: dict[str, Any] = {}
    if run.file(METRICS).is_file():
        try:
            metrics = run.read_json(METRICS)
        except DigitnetError:
            pass
    last = history[-1] if history else {}
    return {
        "run": run.path.name,
        "dataset": config.dataset,
        "hidden": list(config.hidden),
        "depth": len(config.hidden),
        "width": max(config.hidden, default=0),
        "activation": "/".join(dict.fromkeys(config.activations)) or "-",
        "batch_size": config.batch_size,
        "optimizer": config.optimizer,
        "learning_rate": config.learning_rate,
        "epochs": config.epochs,
        "epochs_done": len(history),
        "train_size": config.train_size,
        "seed": config.seed,
        "parameters": parameter_count(config.hidden),
        "val_accuracy": last.get("val_accuracy"),
        "test_accuracy": run.test_accuracy(),
        "train_seconds": metrics.get("train_seconds", sum(row["seconds"] for row in history)),
        "state": folder_state(run),
        "modified": run.file(CONFIG).stat().st_mtime,
    }


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """A summary of every run folder directly in runs_dir, by name; folders that hold no readable run are left out."""
    if not runs_dir.is_dir():
        return []
    rows = []
    for folder in sorted(runs_dir.iterdir()):
        if not (RUN_NAME.fullmatch(folder.name) and (folder / CONFIG).is_file()):
            continue
        run = RunDir(folder)
        try:
            rows.append(summarize(run, run.read_config()))
        except (DigitnetError, OSError):  # a config of another version, or a folder removed meanwhile
            continue
    return rows


class RunModels:
    """The loaded model of each run shown lately, and what the lab computed with it, each once per saved model."""

    def __init__(self, data: Callable[[str], ImageSet], keras_lock: threading.Lock) -> None:
        self._data, self._keras_lock = data, keras_lock
        self._lock = threading.Lock()
        self._kept: collections.OrderedDict[Path, tuple[int, Predictor, dict]] = collections.OrderedDict()

    def cached(self, run: RunDir) -> Predictor | None:
        """The run's model if it is loaded and still the one in its folder, without waiting for anything."""
        entry = self._entry(run)
        return entry[1] if entry else None

    def predictor(self, run: RunDir) -> Predictor:
        """The run's model, loaded now if need be (slow: call from a worker thread)."""
        entry = self._entry(run)
        if entry is not None:
            return entry[1]
        stamp = _model_stamp(run)
        with self._keras_lock:  # see TrainingQueue._run: no model loads while a network is being built
            predictor = Predictor.load(run.path)
        with self._lock:
            self._kept[run.path] = (stamp, predictor, {})
            self._kept.move_to_end(run.path)
            while len(self._kept) > MODELS_KEPT:
                self._kept.popitem(last=False)
        return predictor

    def _entry(self, run: RunDir) -> tuple[int, Predictor, dict] | None:
        with self._lock:
            entry = self._kept.get(run.path)
            if entry is None or entry[0] != _model_stamp(run):
                return None
            self._kept.move_to_end(run.path)
            return entry

    def _computed(self, run: RunDir, key: str, compute: Callable[[Predictor], dict]) -> dict:
        """compute(predictor) for this run's model, once per saved model."""
        predictor = self.predictor(run)
        entry = self._entry(run)
        results = entry[2] if entry else {}
        if key not in results:
            results[key] = compute(predictor)
        return results[key]

    def inspection(self, run: RunDir) -> dict[str, Any]:
        """Test accuracy, loss, per-class scores, confusion matrix, the most confident mistakes, the layers."""

        def inspect(predictor: Predictor) -> dict[str, Any]:
            return inspect_model(predictor, self._data(predictor.dataset))  # the test set of the run's data set

        return self._computed(run, "inspection", inspect)

    def weights(self, run: RunDir) -> dict[str, Any]:
        """The first layer's incoming weights, one 28x28 picture per neuron."""
        return self._computed(run, "weights", first_layer_weights)


def _model_stamp(run: RunDir) -> int:
    """What changes when a run's model is written again (a resumed run saves a new one)."""
    try:
        return run.file(MODEL).stat().st_mtime_ns
    except OSError:
        raise DigitnetError(f"{run.path.name}: no trained model yet ({MODEL}); train or resume it first") from None


def inspect_model(predictor: Predictor, data: ImageSet) -> dict[str, Any]:
    """What the lab shows of a model on the test set of its data set, computed with its NumPy forward pass."""
    images = data.test_images.astype(np.float32) / 255.0
    probabilities = predictor.predict_arrays(images)
    scores = classification_metrics(data.test_labels, probabilities)
    return {
        **scores,
        "dataset": data.dataset,
        "title": get_dataset(data.dataset).title,
        "classes": list(data.classes),
        "layers": describe_layers(predictor),
        "mistakes": confident_mistakes(probabilities, data.test_labels, data.test_images),
    }


def describe_layers(predictor: Predictor) -> list[dict[str, Any]]:
    return [
        {"name": name, "units": units, "activation": activation}
        for name, units, activation in layer_sizes(predictor.model)
    ]


def confident_mistakes(
    probabilities: np.ndarray, labels: np.ndarray, images: np.ndarray, count: int = MISTAKES_SHOWN
) -> list[dict[str, Any]]:
    """The test images read wrong with the highest probability, most confident first, each as a PNG data URL."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence, kind="stable")[:count]]
    return [
        {
            "index": int(i),
            "label": int(labels[i]),
            "predicted": int(predicted[i]),
            "probability": float(probabilities[i, predicted[i]]),
            "image": png_data_url(images[i].astype(np.float32) / 255.0),
        }
        for i in worst
    ]


def first_layer_weights(predictor: Predictor) -> dict[str, Any]:
    """Each first-layer neuron's 784 incoming weights, as int8 scaled to its largest magnitude, base64 encoded:
    a 4096-wide layer is 3.2 MB so, against 30 MB as JSON numbers."""
    layer = next(layer for layer in predictor.model.layers if isinstance(layer, keras.layers.Dense))
    kernel = np.asarray(layer.kernel, np.float32).T  # (neurons, 784): one row per neuron
    scale = np.abs(kernel).max(axis=1)
    quantized = np.round(kernel / np.where(scale > 0, scale, 1)[:, None] * 127).astype(np.int8)
    return {
        "layer": layer.name,
        "neurons": int(kernel.shape[0]),
        "scale": scale.tolist(),
        "weights": base64.b64encode(quantized.tobytes()).decode("ascii"),
    }


def drawing_answer(predictor: Predictor, image: np.ndarray) -> dict[str, Any]:
    """What the page shows for a drawing: the label and its class's name, the probabilities, each layer's
    activations, the 28x28 image seen."""
    layers = predictor.activations(image[np.newaxis])
    probabilities = layers[-1][0] if layers else predictor.predict_arrays(image[np.newaxis])[0]
    label = int(np.argmax(probabilities))
    names = describe_layers(predictor)[1:]
    return {
        "label": label,
        "class": predictor.classes[label],
        "probability": float(probabilities[label]),
        "probabilities": [float(p) for p in probabilities],
        "layers": [{**name, "values": np.round(values[0], 4).tolist()} for name, values in zip(names, layers or [])],
        "preprocessed": png_data_url(image),
    }


def png_data_url(image: np.ndarray) -> str:
    """A 28x28 image in [0, 1] as a PNG data URL."""
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")

"""Evaluation on the untouched test set: accuracy, loss, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

import keras
import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

from digitnet.data import Mnist, load_mnist
from digitnet.errors import DigitnetError
from digitnet.model import N_CLASSES, N_PIXELS, make_predict_fn

CLASSES = list(range(N_CLASSES))


def model_file(path: str | Path) -> Path:
    """The .keras file of a run folder (its model.keras) or given directly; a DigitnetError that says what is wrong."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.keras").is_file():
            hint = " (an unfinished run: continue it with digitnet train --resume)" if (path / "checkpoint.npz").is_file() else ""
            raise DigitnetError(f"model: {path} is a folder without model.keras{hint}; give a training run folder")
        return path / "model.keras"
    if not path.exists():
        raise DigitnetError(f"model: {path} does not exist; give a training run folder or a .keras file")
    if path.suffix != ".keras":
        raise DigitnetError(f"model: {path} is not a .keras file; give a training run folder or a .keras file")
    return path


def load_run_model(path: str | Path, compile: bool = True) -> keras.Model:
    """The model of a run folder or of a .keras file, checked to read MNIST digits: 784 pixels in, 10 probabilities out."""
    file = model_file(path)
    if not zipfile.is_zipfile(file):  # Keras reports these as "File not found", which misleads
        raise DigitnetError(f"model: {file} is not a Keras model (a .keras file is a zip archive); retrain or pick another file")
    try:
        model = keras.saving.load_model(file, compile=compile)
    except Exception as err:  # Keras raises many types for a bad file; all mean the same to the user
        raise DigitnetError(f"model: cannot load {file} ({type(err).__name__}: {err}); retrain or pick another file") from None
    check_digit_model(model, file)
    return model


def check_digit_model(model: keras.Model, file: Path) -> None:
    """A DigitnetError unless the model maps 784 pixels to probabilities of the 10 digits, as digitnet's do."""
    shapes = (getattr(model, "input_shape", None), getattr(model, "output_shape", None))
    if not all(isinstance(shape, tuple) for shape in shapes):
        raise DigitnetError(f"model: {file} has several inputs or outputs; digitnet reads models with one of each")
    if tuple(shapes[0][1:]) != (N_PIXELS,):
        raise DigitnetError(f"model: {file} takes inputs of shape {shapes[0][1:]}, not MNIST's ({N_PIXELS},); give a digitnet model")
    if tuple(shapes[1][1:]) != (N_CLASSES,):
        raise DigitnetError(f"model: {file} gives outputs of shape {shapes[1][1:]}, not the {N_CLASSES} digit classes; give a digitnet model")
    last = model.layers[-1] if model.layers else None
    if not (isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) is keras.activations.softmax):
        raise DigitnetError(f"model: {file} does not end in a softmax, so its outputs are not probabilities; give a digitnet model")


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities (N, 10) for uint8 images (N, 28, 28), in fixed-size chunks (one compiled shape)."""
    predict = make_predict_fn(model)
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    padded = np.zeros((-(-len(x) // batch_size) * batch_size, x.shape[1]), np.float32)
    padded[: len(x)] = x
    chunks = [predict(padded[i : i + batch_size]) for i in range(0, len(padded), batch_size)]
    return np.concatenate(chunks)[: len(x)]


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, mean cross-entropy, per-class scores and the confusion matrix (rows: true, columns: predicted)."""
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=CLASSES, zero_division=0)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "loss": float(log_loss(labels, probabilities, labels=CLASSES)),
        "n": int(len(labels)),
        "per_class": {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                      "support": support.tolist()},
        "confusion_matrix": confusion_matrix(labels, predicted, labels=CLASSES).tolist(),
    }


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, data: Mnist | None = None) -> dict:
    """Evaluate a run's model on the test set and write evaluation.json beside it."""
    run_dir = Path(run_dir)
    model = load_run_model(run_dir)
    data = data or load_mnist(data_dir)
    result = classification_metrics(data.test_labels, predict_probabilities(model, data.test_images))
    if run_dir.is_dir():
        (run_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_evaluation(result: dict) -> str:
    """A readable table of an evaluation: the totals, then one line per digit."""
    correct = round(result["accuracy"] * result["n"])
    lines = [f"Test set: loss {result['loss']:.4f}, accuracy {correct}/{result['n']} ({100 * result['accuracy']:.2f}%)",
             "digit  precision  recall      f1  support"]
    scores = result["per_class"]
    for digit in CLASSES:
        lines.append(f"{digit:5d}  {scores['precision'][digit]:9.4f}  {scores['recall'][digit]:6.4f}  "
                     f"{scores['f1'][digit]:6.4f}  {scores['support'][digit]:7d}")
    lines.append("confusion matrix (rows: true digit, columns: predicted digit)")
    lines += ["   " + " ".join(f"{n:5d}" for n in row) for row in result["confusion_matrix"]]
    return "\n".join(lines)

"""Evaluation on the untouched test set: accuracy, loss, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

from digitnet.data import Mnist, class_names, expect_dataset, load_dataset, trained_dataset
from digitnet.model import N_CLASSES, load_model, make_predict_fn
from digitnet.run import EVALUATION, RunDir, model_file

CLASSES = list(range(N_CLASSES))


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
        "per_class": {
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "support": support.tolist(),
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=CLASSES).tolist(),
    }


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, data: Mnist | None = None) -> dict:
    """Evaluate a run's model on the test set of the data set it learned and write evaluation.json beside it."""
    model = load_model(run_dir)
    dataset = trained_dataset(model_file(run_dir))
    data = data or load_dataset(dataset, data_dir)
    expect_dataset(data, dataset)
    result = classification_metrics(data.test_labels, predict_probabilities(model, data.test_images))
    result.update(dataset=dataset, classes=list(class_names(dataset)))
    if Path(run_dir).is_dir():
        RunDir(run_dir).write_json(EVALUATION, result)
    return result


def format_evaluation(result: dict) -> str:
    """A readable table of an evaluation: the totals, then one line per class (digit, or garment by name)."""
    correct = round(result["accuracy"] * result["n"])
    names = result.get("classes") or class_names("mnist")
    noun, width = ("digit", 5) if list(names) == list(class_names("mnist")) else ("class", max(map(len, names)))
    lines = [
        f"Test set: loss {result['loss']:.4f}, accuracy {correct}/{result['n']} ({100 * result['accuracy']:.2f}%)",
        f"{noun:<{width}}  precision  recall      f1  support",
    ]
    scores = result["per_class"]
    for label, name in zip(CLASSES, names):
        lines.append(
            f"{name:>{width}}  {scores['precision'][label]:9.4f}  {scores['recall'][label]:6.4f}  "
            f"{scores['f1'][label]:6.4f}  {scores['support'][label]:7d}"
        )
    order = ", in the order of the rows" if noun == "class" else ""
    lines.append(f"confusion matrix (rows: true {noun}, columns: predicted {noun}{order})")
    for name, row in zip(names, result["confusion_matrix"]):
        lines.append((f"{name:>{width}}" if noun == "class" else "  ") + " " + " ".join(f"{n:5d}" for n in row))
    return "\n".join(lines)

"""The report of a run: its six pictures under RUN_DIR/plots and one self-contained RUN_DIR/report.html.

The HTML embeds every image as a base64 data URI and carries its CSS inline, so the single file opens in any
browser, offline, with no server, and can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

import digitnet
from digitnet import plots
from digitnet.config import TrainConfig
from digitnet.data import Mnist, expect_dataset, get_dataset, load_dataset
from digitnet.errors import DigitnetError
from digitnet.evaluate import evaluate_run, predict_probabilities
from digitnet.files import write_atomic
from digitnet.model import N_CLASSES, N_PIXELS, layer_sizes, load_model
from digitnet.run import EVALUATION, METRICS, MODEL, PLOTS, REPORT, RunDir

PLOT_FILES = ("network", "curves", "confusion", "per_class", "errors", "samples")  # PNG names, in report order

METRIC_LABELS = {
    "test_accuracy": "Test accuracy",
    "test_loss": "Test loss (cross-entropy)",
    "val_accuracy": "Validation accuracy, last epoch",
    "val_loss": "Validation loss, last epoch",
    "accuracy": "Training accuracy, last epoch",
    "loss": "Training loss, last epoch",
    "epochs": "Epochs trained",
    "params": "Parameters",
    "train_seconds": "Training time",
    "compile_seconds": "Build and compile time",
    "n_train": "Training images",
    "n_val": "Validation images",
    "n_test": "Test images",
    "device": "Device",
    "jax": "JAX version",
    "keras": "Keras version",
}

# Captions say "{noun}": a digit for MNIST, a class for a data set of named classes.
CAPTIONS = {
    "network": "Each column is a layer and each circle a neuron; every neuron of a layer feeds every neuron of the "
    "next through one weight, plus one bias per neuron. The ten output neurons give the probability of each {noun}.",
    "samples": "The first training images, as the network sees them: 28\u00d728 grey levels, flattened to 784 inputs.",
    "curves": "Loss and accuracy after each epoch, on the training images and on the held-out validation images. "
    "A validation curve that stalls or turns while the training curve keeps improving means the network is "
    "memorising its training images (overfitting).",
    "confusion": "Rows are the true {noun}, columns the {noun} the network answered; the diagonal holds the correct "
    "answers. Left: image counts. Right: each row as percentages, so the {noun}s can be compared whatever their "
    "number, with mistakes on their own colour scale.",
    "per_class": "Precision of {noun} d: of the images the network called d, the share that really are d. "
    "Recall of d: of the images of d, the share the network recognised. The dashed line is the overall accuracy.",
    "errors": "The test images the network got wrong while most sure of its answer. Some are hard even for a person.",
}

TITLES = {
    "network": "Network",
    "samples": "Training data",
    "curves": "Training curves",
    "confusion": "Confusion matrix",
    "per_class": "Precision and recall per {noun}",
    "errors": "Most confident mistakes",
}


def write_report(run_dir: str | Path, data_dir: str | Path | None = None, data: Mnist | None = None) -> Path:
    """Draw the pictures of a run into RUN_DIR/plots, write RUN_DIR/report.html and return its path.

    `data` (the four arrays of the run's data set) spares loading it from `data_dir`; the test set is used
    for the evaluation, if the run has none yet, and for the mistakes; the training set for the samples.
    """
    run = RunDir(run_dir)
    run.check_finished()
    config = run.read_config()
    history = run.read_history()
    if not history:
        raise DigitnetError(f"{run.file('history.csv')}: no epochs recorded; train the run for at least one epoch")
    metrics = run.read_json(METRICS)
    model = load_model(run.path)
    data = load_dataset(config.dataset, data_dir) if data is None else data
    expect_dataset(data, config.dataset)
    evaluation = load_or_evaluate(run, data)
    images = draw_plots(run.file(PLOTS), model, history, evaluation, data)
    page = render_html(run.path.resolve().name, config, metrics, evaluation, model_summary(model), images)
    path = run.file(REPORT)
    write_atomic(path, page)
    return path


def load_or_evaluate(run: RunDir, data: Mnist) -> dict:
    """evaluation.json if it is newer than the model, else a fresh evaluation on the test set (which writes it)."""
    saved = run.file(EVALUATION)
    if saved.is_file() and saved.stat().st_mtime >= run.file(MODEL).stat().st_mtime:
        return run.read_json(EVALUATION)
    return evaluate_run(run.path, data=data)


def draw_plots(
    plot_dir: Path, model: keras.Model, history: list[dict], evaluation: dict, data: Mnist
) -> dict[str, Path]:
    """Save the six PNGs of a run into plot_dir; returns their paths by name."""
    scores, classes = evaluation["per_class"], data.classes
    probabilities = predict_probabilities(model, data.test_images)
    paths = {
        "network": plots.plot_network(layer_sizes(model), plot_dir / "network.png", model.count_params(), classes),
        "samples": plots.plot_samples(data.train_images, data.train_labels, plot_dir / "samples.png", classes=classes),
        "curves": plots.plot_curves(history, plot_dir / "curves.png"),
        "confusion": plots.plot_confusion(evaluation["confusion_matrix"], plot_dir / "confusion.png", classes),
        "per_class": plots.plot_per_class(
            scores["precision"], scores["recall"], plot_dir / "per_class.png", evaluation["accuracy"], classes
        ),
        "errors": plots.plot_errors(
            data.test_images, data.test_labels, probabilities, plot_dir / "errors.png", classes=classes
        ),
    }
    return {name: paths[name] for name in PLOT_FILES}


def model_summary(model: keras.Model) -> str:
    """Keras' own summary table of the model, as text."""
    lines: list[str] = []
    # A fixed width, so the table does not depend on the terminal the report was made from.
    model.summary(print_fn=lambda text, **_: lines.append(text), line_length=80)
    return "\n".join(lines).rstrip()


# ---------------------------------------------------------------- HTML


def render_html(
    name: str, config: TrainConfig, metrics: dict, evaluation: dict, summary: str, images: dict[str, Path]
) -> str:
    """The whole report page as one string: header, key numbers, the six figures and the tables."""
    sizes = "-".join(str(n) for n in (N_PIXELS, *config.hidden, N_CLASSES))
    activations = ", ".join(sorted(set(config.activations))) or "none"
    dataset = get_dataset(config.dataset)
    noun = plots.class_labels(dataset.classes)[1]
    on = "" if dataset.name == "mnist" else f", on {_e(dataset.title)}"  # MNIST's reports read as they always did
    extras = {"per_class": _per_class_table(evaluation, dataset.classes, noun)}
    figures = {key: _figure(key, path, extras.get(key, ""), noun) for key, path in images.items()}
    body = f"""
<header>
  <h1>Run <code>{_e(name)}</code></h1>
  <p class="lede">A {_e(sizes)} network ({_e(activations)}), trained for {metrics.get("epochs", config.epochs)} epochs
  with {_e(config.optimizer)} at learning rate {config.learning_rate:g} and batch size {_e(config.batch_size)}{on}.</p>
  {_cards(metrics, evaluation)}
  <nav>{" ".join(f'<a href="#{key}">{_e(TITLES[key].format(noun=noun))}</a>' for key in images)}
  <a href="#metrics">Metrics</a> <a href="#config">Configuration</a> <a href="#summary">Model summary</a></nav>
</header>
<main>
  {"".join(figures.values())}
  <div class="pair">
  <section id="metrics"><h2>Metrics</h2>{_metrics_table(metrics)}</section>
  <section id="config"><h2>Configuration</h2>{_config_table(config)}
  <p class="note">Values in bold differ from the defaults. \
The run can be rebuilt from its <code>config.json</code>.</p></section>
  </div>
  <section id="summary"><h2>Model summary</h2><pre>{_e(summary)}</pre></section>
</main>
<footer>Written by digitnet {_e(digitnet.__version__)} on {time.strftime("%Y-%m-%d %H:%M")}.</footer>"""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>digitnet report: {_e(name)}</title>
<style>{CSS}</style>
</head>
<body>{body}
</body>
</html>
"""


def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value))


def _figure(key: str, path: Path, extra: str = "", noun: str = "digit") -> str:
    """One picture, embedded as a base64 data URI, with its title, a caption that says how to read it, and extra
    HTML."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    title, caption = TITLES[key].format(noun=noun), CAPTIONS[key].format(noun=noun)
    return (
        f'<section id="{key}"><h2>{_e(title)}</h2><figure>'
        f'<img src="data:image/png;base64,{encoded}" alt="{_e(title)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>{extra}</section>"
    )


def _cards(metrics: dict, evaluation: dict) -> str:
    """The few numbers a reader wants first, as large tiles."""
    correct = round(evaluation["accuracy"] * evaluation["n"])
    tiles = [
        ("test accuracy", f"{evaluation['accuracy']:.2%}", f"{correct:,} of {evaluation['n']:,} test images"),
        ("test loss", f"{evaluation['loss']:.4f}", "mean cross-entropy"),
        ("parameters", f"{metrics['params']:,}" if "params" in metrics else "?", "weights and biases"),
        (
            "training time",
            _format_metric("train_seconds", metrics.get("train_seconds", "?")),
            f"{metrics.get('epochs', '?')} epochs",
        ),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
            f'<div class="sub">{_e(sub)}</div></div>'
            for label, value, sub in tiles
        )
        + "</div>"
    )


def _format_metric(key: str, value: Any) -> str:
    """A metric as a reader expects it: accuracies in %, losses to 4 places, times in seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if key.endswith("accuracy"):
        return f"{value:.2%}"
    if key.endswith("loss"):
        return f"{value:.4f}"
    if key.endswith("seconds"):
        return f"{value:.1f} s"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """An HTML table of already-escaped cells; columns from numeric_from on are right-aligned."""
    head = "".join(f"<th{' class=num' if i >= numeric_from else ''}>{cell}</th>" for i, cell in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i >= numeric_from else ''}>{cell}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_table(metrics: dict) -> str:
    """Every entry of metrics.json: the known ones by name, in a sensible order, then any others."""
    keys = [k for k in METRIC_LABELS if k in metrics] + sorted(k for k in metrics if k not in METRIC_LABELS)
    rows = [[_e(METRIC_LABELS.get(k, k)), _e(_format_metric(k, metrics[k]))] for k in keys]
    return _table(["metric", "value"], rows)


def _per_class_table(evaluation: dict, classes: tuple[str, ...], noun: str = "digit") -> str:
    """Precision, recall, F1 and support of each class, and the class it is most often mistaken for."""
    scores, matrix = evaluation["per_class"], np.asarray(evaluation["confusion_matrix"])
    rows = []
    for label in range(len(matrix)):
        mistakes = np.where(np.arange(len(matrix)) == label, -1, matrix[label])
        worst = int(mistakes.argmax())
        confused = f"{_e(classes[worst])} ({matrix[label, worst]}\u00d7)" if mistakes[worst] > 0 else "\u2013"
        rows.append(
            [
                _e(classes[label]),
                f"{scores['precision'][label]:.2%}",
                f"{scores['recall'][label]:.2%}",
                f"{scores['f1'][label]:.4f}",
                f"{scores['support'][label]:,}",
                confused,
            ]
        )
    rows.append(["<b>all</b>", "", f"<b>{evaluation['accuracy']:.2%}</b>", "", f"<b>{evaluation['n']:,}</b>", ""])
    table = _table([noun, "precision", "recall", "F1", "test images", "most often read as"], rows)
    return f"<h3>Scores per {noun}</h3>{table}"


def _config_table(config: TrainConfig) -> str:
    """Every field of the run's config, with values that differ from the defaults in bold."""
    defaults = TrainConfig()
    rows = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        shown = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        cell = f"<b>{_e(shown)}</b>" if value != getattr(defaults, field.name) else _e(shown)
        rows.append([f"<code>{_e(field.name)}</code>", cell])
    return _table(["field", "value"], rows, numeric_from=2)


CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #4c72b0; --bg: #f7f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, \
"Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: var(--bg); }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 28px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.3rem; margin: 0 0 12px; border-bottom: 2px solid var(--line); padding-bottom: 6px; }
h3 { font-size: 1.05rem; margin: 20px 0 8px; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace; }
.lede { color: var(--muted); margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 14px; margin-bottom: 18px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 18px; }
.card .label { color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .05em; }
.card .value { font-size: 1.9rem; font-weight: 600; color: var(--accent); }
.card .sub { color: var(--muted); font-size: .85rem; }
nav { display: flex; flex-wrap: wrap; gap: 6px 16px; padding: 10px 0 4px; font-size: .92rem; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 20px 24px; margin: 18px 0; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: .92rem; margin-top: 10px; max-width: 860px; }
table { border-collapse: collapse; font-size: .93rem; min-width: 360px; }
th, td { padding: 5px 14px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: var(--bg); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #f0f4fa; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; overflow-x: auto;
      font-size: .82rem; line-height: 1.15; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 0 18px; align-items: start; }
.pair table { width: 100%; }
.note { color: var(--muted); font-size: .88rem; }
footer { color: var(--muted); font-size: .85rem; padding-bottom: 32px; }
"""

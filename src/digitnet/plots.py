"""Pictures of a run: each function takes plain data and a path, saves one PNG there and returns the path.

Figures are built with `matplotlib.figure.Figure`, not pyplot, so no global backend or figure registry is
touched: drawing is safe in servers and tests, and nothing is ever shown on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, PercentFormatter

from digitnet.config import TrainConfig
from digitnet.files import WriteError, write_atomic
from digitnet.sweep.stats import MIN_SEEDS, best_cell, cell_groups, counted, layers

DPI = 120  # 120 dots per inch: sharp in a browser at 100% zoom, PNGs stay under ~200 kB
MAX_DRAWN = 10  # a layer with more neurons is drawn as a few circles, a vertical ellipsis and its count
HEAD, TAIL = 4, 3  # circles drawn above and below the ellipsis of a large layer
TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#ff7f0e"
PRECISION_COLOR, RECALL_COLOR = "#4c72b0", "#dd8452"
LAYER_COLORS = {"input": "#8c8c8c", "hidden": "#4c72b0", "output": "#dd8452"}
ACTIVATION_NAMES = {
    "relu": "ReLU",
    "elu": "ELU",
    "selu": "SELU",
    "gelu": "GELU",
    "leaky_relu": "leaky ReLU",
    "silu": "swish",
}

Layer = tuple[str, int, str]  # (name, units, activation), as returned by digitnet.model.layer_sizes


def layers_from_config(config: TrainConfig, n_pixels: int = 784, n_classes: int = 10) -> list[Layer]:
    """The (name, units, activation) list that `build_model(config)` would have, without building it."""
    hidden = [(f"hidden_{i}", units, act) for i, (units, act) in enumerate(zip(config.hidden, config.activations), 1)]
    return [("input", n_pixels, ""), *hidden, ("output", n_classes, "softmax")]


def count_params(layers: Sequence[Layer]) -> int:
    """Weights and biases of the dense layers joining consecutive layers."""
    return sum((fan_in + 1) * fan_out for (_, fan_in, _), (_, fan_out, _) in zip(layers, layers[1:]))


def plot_network(
    layers: Sequence[Layer], path: Path, n_params: int | None = None, classes: Sequence[str] | None = None
) -> Path:
    """The layer diagram: one column of neurons per layer, joined by their connections; output neurons named by
    `classes` (default: the digits)."""
    n_params = count_params(layers) if n_params is None else n_params
    fig = Figure(figsize=(max(7.0, 1.9 * len(layers) + 1.0), 6.6), dpi=DPI)
    ax = fig.add_subplot()
    columns = [_neuron_rows(units) for _, units, _ in layers]
    lines = [
        [(i, a), (i + 1, b)] for i, (left, right) in enumerate(zip(columns, columns[1:])) for a in left for b in right
    ]
    ax.add_collection(LineCollection(lines, colors="#9aa5b1", linewidths=0.5, alpha=0.45, zorder=1))
    for i, (layer, rows) in enumerate(zip(layers, columns)):
        _draw_layer(ax, i, layer, rows, _layer_kind(i, len(layers)), class_labels(classes)[0])
    for i, ((_, fan_in, _), (_, fan_out, _)) in enumerate(zip(layers, layers[1:])):
        ax.text(
            i + 0.5, 5.4, f"{(fan_in + 1) * fan_out:,}\nparams", ha="center", va="bottom", fontsize=8, color="#666666"
        )
    sizes = "-".join(str(units) for _, units, _ in layers)
    ax.set_title(f"Network {sizes}: {n_params:,} parameters (weights and biases)", fontsize=13, pad=12)
    ax.text(
        (len(layers) - 1) / 2,
        -8.1,
        "Circles are neurons (large layers: a few, \u22ee, and the layer's size);"
        + ("\n" if len(layers) < 5 else " ")  # narrow diagrams wrap the note rather than widen the figure
        + "each line is a weight: every neuron feeds every neuron of the next layer.",
        ha="center",
        va="top",
        fontsize=8.5,
        color="#555555",
        style="italic",
    )
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(-8.7, 6.4)
    ax.axis("off")
    return _save(fig, path)


def _draw_layer(ax, x: int, layer: Layer, rows: list[float], kind: str, names: Sequence[str]) -> None:
    """One column of the diagram: its circles, the ellipsis and size of a large layer, and its labels."""
    name, units, activation = layer
    ax.scatter([x] * len(rows), rows, s=260, facecolor="white", edgecolor=LAYER_COLORS[kind], linewidth=2, zorder=3)
    if units > MAX_DRAWN:
        middle = (rows[HEAD - 1] + rows[HEAD]) / 2
        ax.text(x, middle, "\u22ee", ha="center", va="center", fontsize=22, zorder=3)
        ax.text(
            x + 0.1,
            middle,
            f"{units:,}",
            ha="left",
            va="center",
            fontsize=9,
            fontweight="bold",
            zorder=4,
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none"},
        )
    ax.text(x, -5.6, _layer_title(name, kind), ha="center", va="top", fontsize=11, fontweight="bold")
    ax.text(x, -6.25, _layer_caption(units, activation, kind), ha="center", va="top", fontsize=9.5, linespacing=1.4)
    if kind == "output" and units <= MAX_DRAWN:
        for name, row in zip(names, rows):
            ax.text(x + 0.17, row, name, ha="left", va="center", fontsize=8, color="#555555")


def _neuron_rows(units: int) -> list[float]:
    """Vertical positions of the circles drawn for a layer, centred on 0, one unit apart."""
    if units <= MAX_DRAWN:
        return [(units - 1) / 2 - k for k in range(units)]
    # The empty rows between head and tail hold the ellipsis; the column is as tall as a full 10-neuron one.
    top = (MAX_DRAWN - 1) / 2
    return [top - k for k in range(HEAD)] + [top - (MAX_DRAWN - TAIL) - k for k in range(TAIL)]


def _layer_kind(index: int, n_layers: int) -> str:
    """Input, hidden or output, from the layer's place in the network."""
    return "input" if index == 0 else "output" if index == n_layers - 1 else "hidden"


def _layer_title(name: str, kind: str) -> str:
    """A readable layer name: 'hidden_2' becomes 'Hidden 2'."""
    return name.replace("_", " ").capitalize() if kind == "hidden" else kind.capitalize()


def _layer_caption(units: int, activation: str, kind: str) -> str:
    """The size of a layer and what its neurons compute."""
    if kind == "input":
        return f"{units:,} pixels\n(28\u00d728 image)" if units == 784 else f"{units:,} inputs"
    neurons = "neuron" if units == 1 else "neurons"
    return f"{units:,} {neurons}\n{ACTIVATION_NAMES.get(activation, activation)}"


def plot_samples(
    images: np.ndarray,
    labels: Sequence[int],
    path: Path,
    n: int = 40,
    cols: int = 10,
    classes: Sequence[str] | None = None,
) -> Path:
    """A grid of the first n images, each titled with its label (a digit) or its class's name."""
    names, noun = class_labels(classes)
    n = min(n, len(images))
    rows = -(-n // cols)
    fig = Figure(figsize=(1.05 * cols, 1.2 * rows + 0.6), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            _show_digit(ax, images[k])
            title = f"label {int(labels[k])}" if noun == "digit" else names[int(labels[k])]
            ax.set_title(title, fontsize=9 if noun == "digit" else 8, pad=3)
    fig.suptitle(f"Training images with their labels (first {n})", fontsize=12)
    return _save(fig, path)


def _show_digit(ax, image: np.ndarray) -> None:
    """A digit as dark ink on white, inside a thin frame that marks the 28x28 image's edge."""
    ax.axis("on")
    ax.imshow(image, cmap="gray_r")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("#cccccc")


def class_labels(classes: Sequence[str] | None) -> tuple[list[str], str]:
    """The name of each class, and what one is called: 'digit' for MNIST's '0' to '9' (the default), else 'class'."""
    digits = [str(d) for d in range(10)]
    names = digits if classes is None else [str(name) for name in classes]
    return names, "digit" if names == digits else "class"


def _probability(p: float) -> str:
    """A probability as a percentage that never rounds a near-certainty up to 100% or a doubt down to 0%."""
    return ">99.9%" if p > 0.999 else "<0.1%" if p < 0.001 else f"{p:.1%}"


def plot_curves(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training against validation, from the rows of history.csv."""
    epochs = [int(row["epoch"]) for row in history]
    fig = Figure(figsize=(11, 4.4), dpi=DPI)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, metric, label in ((loss_ax, "loss", "Loss (cross-entropy)"), (acc_ax, "accuracy", "Accuracy")):
        for prefix, name, color in (("", "training", TRAIN_COLOR), ("val_", "validation", VAL_COLOR)):
            values = [float(row[prefix + metric]) for row in history if row.get(prefix + metric) not in (None, "")]
            if len(values) == len(epochs):
                ax.plot(epochs, values, marker="o", markersize=4, color=color, label=name)
        ax.set_title(label, fontsize=12)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _mark_best(acc_ax, epochs, history)
    fig.suptitle("Training curves", fontsize=13)
    return _save(fig, path)


def _mark_best(ax, epochs: list[int], history: Sequence[Mapping[str, float]]) -> None:
    """Star the epoch with the best validation accuracy, the number a reader looks for first."""
    values = [row.get("val_accuracy") for row in history]
    if not values or any(v in (None, "") for v in values):
        return
    best = int(np.argmax([float(v) for v in values]))
    label = f"best validation: {float(values[best]):.2%} (epoch {epochs[best]})"
    ax.plot(
        [epochs[best]], [float(values[best])], marker="*", markersize=14, color=VAL_COLOR, linestyle="none", label=label
    )
    ax.legend(loc="lower right")


def plot_confusion(matrix: Sequence[Sequence[int]], path: Path, classes: Sequence[str] | None = None) -> Path:
    """The test-set confusion matrix twice: counts, and each true class's row as percentages."""
    counts = np.asarray(matrix, dtype=np.int64)
    names, noun = class_labels(classes)
    fig = Figure(figsize=(14.5, 6.6) if noun == "digit" else (16, 7.6), dpi=DPI)
    count_ax, share_ax = fig.subplots(1, 2)
    _draw_counts(fig, count_ax, counts, noun)
    _draw_shares(fig, share_ax, counts, noun)
    for ax in (count_ax, share_ax):
        ax.set_xticks(
            range(len(counts)),
            names[: len(counts)],
            rotation=0 if noun == "digit" else 45,
            ha="center" if noun == "digit" else "right",
            rotation_mode="anchor",
        )
        ax.set_yticks(range(len(counts)), names[: len(counts)])
        ax.set_xlabel(f"predicted {noun}", fontsize=11)
        ax.set_ylabel(f"true {noun}", fontsize=11)
        ax.tick_params(length=0, labelsize=10)
    n, correct = int(counts.sum()), int(np.trace(counts))
    fig.suptitle(
        f"Confusion matrix on {n:,} test images: {correct:,} correct ({correct / max(n, 1):.2%}); blank = 0",
        fontsize=13,
    )
    return _save(fig, path)


def _draw_counts(fig: Figure, ax, counts: np.ndarray, noun: str) -> None:
    """The confusion matrix as counts of images."""
    # A log scale, so that a handful of mistakes still shows against ~1,000 correct answers.
    image = ax.imshow(np.ma.masked_equal(counts, 0), cmap="Blues", norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="images (log scale)")
    _annotate_cells(ax, [[f"{c:d}" if c else "" for c in row] for row in counts], image.norm(counts) > 0.6)
    ax.set_title("Counts", fontsize=12)


def _draw_shares(fig: Figure, ax, counts: np.ndarray, noun: str) -> None:
    """Each row as percentages: correct answers in green, mistakes in red on their own scale."""
    shares = 100 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    diagonal = np.eye(len(counts), dtype=bool)
    # vmax above 100 keeps the usual 90-100% diagonal a mid green, under which white text stays legible.
    ax.imshow(np.ma.masked_where(~diagonal, shares), cmap="Greens", vmin=0, vmax=140)
    # Mistakes get their own scale, up to the largest, so that error rates of 0.1% to 2% are told apart.
    mistakes = np.ma.masked_where(diagonal | (counts == 0), shares)
    image = ax.imshow(mistakes, cmap="Reds", vmin=0, vmax=max(float(mistakes.max()) if mistakes.count() else 0.0, 1.0))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label=f"% of the true {noun}'s images (mistakes)")
    labels = [[_percent_label(s, c) for s, c in zip(srow, crow)] for srow, crow in zip(shares, counts)]
    _annotate_cells(ax, labels, diagonal | (image.norm(shares) > 0.6))
    ax.set_title(
        f"Row-normalized: % of each true {noun}\n(green: read correctly; red: read as another {noun})", fontsize=12
    )


def _percent_label(share: float, count: int) -> str:
    """A cell's percentage with one decimal, enough to tell a single mistake (~0.1%) from none."""
    return "" if count == 0 else "100" if share >= 99.95 else f"{share:.1f}"


def _annotate_cells(ax, labels: list[list[str]], dark: np.ndarray) -> None:
    """Write each cell's label, white on dark cells and black on light ones."""
    for (i, j), is_dark in np.ndenumerate(np.asarray(dark)):
        if labels[i][j]:
            ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=8.5, color="white" if is_dark else "black")


def plot_errors(
    images: np.ndarray,
    labels: Sequence[int],
    probs: np.ndarray,
    path: Path,
    n: int = 20,
    cols: int = 5,
    classes: Sequence[str] | None = None,
) -> Path:
    """The n mistakes the model was most sure of, with the true label, its guess and its confidence."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    names, noun = class_labels(classes)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probs[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence, kind="stable")][:n]
    rows = max(1, -(-len(worst) // cols))
    row_height = 2.3 if noun == "digit" else 2.6  # named classes take a third line of title per image
    fig = Figure(figsize=(2.3 * cols, row_height * rows + 0.7), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, worst):
        _show_digit(ax, images[k])
        true, guess = labels[k], predicted[k]
        if noun == "digit":
            title = (
                f"true {true}, predicted {guess}\np({guess}) {_probability(probs[k, guess])}  \u00b7  "
                f"p({true}) {_probability(probs[k, true])}"
            )
        else:  # names are long: one line for each
            title = (
                f"true: {names[true]}\nread as: {names[guess]}\np {_probability(probs[k, guess])}  \u00b7  "
                f"p(true) {_probability(probs[k, true])}"
            )
        ax.set_title(title, fontsize=8.5, pad=4)
    if not len(worst):
        axes.flat[0].text(
            0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14, transform=axes.flat[0].transAxes
        )
    legend = (
        "p(d): the probability the model gave to digit d"
        if noun == "digit"
        else "p: the probability the model gave to its answer; p(true): to the true class"
    )
    fig.suptitle(
        f"The {len(worst)} most confident mistakes, of {len(wrong):,} among {len(labels):,} test images\n{legend}",
        fontsize=12,
    )
    return _save(fig, path)


def plot_per_class(
    precision: Sequence[float],
    recall: Sequence[float],
    path: Path,
    accuracy: float | None = None,
    classes: Sequence[str] | None = None,
) -> Path:
    """Precision and recall of each class as grouped bars, the y-axis zoomed to where they differ."""
    precision, recall = np.asarray(precision, float), np.asarray(recall, float)
    names, noun = class_labels(classes)
    digits = np.arange(len(precision))
    fig = Figure(figsize=(11, 4.8), dpi=DPI)
    ax = fig.add_subplot()
    width = 0.4
    for offset, values, name, color in (
        (-width / 2, precision, "precision", PRECISION_COLOR),
        (width / 2, recall, "recall", RECALL_COLOR),
    ):
        bars = ax.bar(digits + offset, values, width, label=name, color=color)
        ax.bar_label(bars, labels=[f"{100 * v:.1f}" for v in values], fontsize=7.5, padding=2)
    # Start the axis a little below the weakest bar, on a round percentage, so differences of 1% are visible.
    low = min(precision.min(), recall.min())
    bottom = max(0.0, np.floor((low - 0.25 * (1 - low) - 0.005) * 50) / 50)
    ax.set_ylim(bottom, 1 + 0.07 * (1 - bottom))
    if accuracy is not None:
        ax.axhline(accuracy, color="#555555", linestyle="--", linewidth=1, label=f"overall accuracy {accuracy:.2%}")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if 1 - bottom >= 0.05 else 1))
    ax.set_yticks([t for t in ax.get_yticks() if bottom <= t <= 1.0])
    ax.set_xticks(digits, names[: len(digits)])
    ax.set_xlabel(noun, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    ax.set_title(
        f"Precision and recall per {noun} on the test set, in % (the y-axis starts at {bottom:.0%})", fontsize=12
    )
    return _save(fig, path)


def _save(fig: Figure, path: Path, tight: bool = True) -> Path:
    """Write the figure as a PNG (whole, or not at all), creating its folder, and return the path; `tight` crops
    it to what is drawn (a figure with a constrained layout fits itself)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"cannot create {path.parent}: {err.strerror or err}") from None
    options = {"bbox_inches": "tight"} if tight else {}
    write_atomic(path, lambda part: fig.savefig(part, format="png", facecolor="white", **options))
    return path


# ---------------------------------------------------------------- the sweep's picture


def plot_sweep(cells: Sequence[dict], path: Path, suffix: str = "") -> Path:
    """Per (activation, batch size): a width x depth heatmap of mean test accuracy ± std, and accuracy against width;
    `suffix` ends the title (' on Fashion-MNIST')."""
    groups = cell_groups(cells)
    best = best_cell(cells)
    fig = Figure(figsize=(15, 5.2 * len(groups)), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(groups), 2, squeeze=False, width_ratios=(1.15, 1))
    for (heat_ax, line_ax), ((activation, batch_size), group) in zip(axes, groups.items()):
        _draw_heatmap(fig, heat_ax, group, best)
        _draw_width_lines(line_ax, group)
        group_name = f" — {activation}, batch size {batch_size}"
        if any(c["n"] >= MIN_SEEDS for c in group):
            heat_ax.set_title(f"Mean test accuracy (%) ± std over seeds{group_name}", fontsize=11)
            line_ax.set_title(f"Test accuracy against width, band = ± std{group_name}", fontsize=11)
        else:  # one seed per cell: no spread to show
            heat_ax.set_title(f"Test accuracy (%), one seed per cell{group_name}", fontsize=11)
            line_ax.set_title(f"Test accuracy against width, one seed per cell{group_name}", fontsize=11)
    n_seeds = sorted({c["n"] for c in cells})
    seeds = counted(n_seeds[0], "seed") if len(n_seeds) == 1 else f"{'/'.join(map(str, n_seeds))} seeds"
    fig.suptitle(
        f"Neurons x hidden layers{suffix}: {counted(sum(c['n'] for c in cells), 'trial')}, "
        f"{seeds} per cell; outlined: best cell by validation accuracy",
        fontsize=13,
    )
    return _save(fig, path, tight=False)


def _grid(group: Sequence[dict], key: str) -> tuple[list[int], list[int], Any]:
    """(widths, depths, depth x width array of `key`), NaN where a cell has no finished trial."""
    widths, depths = sorted({c["width"] for c in group}), sorted({c["depth"] for c in group})
    values = np.full((len(depths), len(widths)), np.nan)
    for c in group:
        values[depths.index(c["depth"]), widths.index(c["width"])] = c[key]
    return widths, depths, values


def _draw_heatmap(fig: Any, ax: Any, group: Sequence[dict], best: dict) -> None:
    """Mean test accuracy per cell, its std written under it; the best cell by validation outlined."""
    widths, depths, means = _grid(group, "test_accuracy")
    _, _, stds = _grid(group, "test_accuracy_std")
    _, _, counts = _grid(group, "n")
    image = ax.imshow(100 * means, cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="mean test accuracy (%)")
    for (i, j), mean in np.ndenumerate(means):
        if not np.isnan(mean):
            dark = image.norm(100 * mean) < 0.6
            # A cell with fewer seeds than the others (a sweep still running) says so; one seed gives no spread.
            count = f"\nn={counts[i, j]:.0f}" if counts[i, j] < np.nanmax(counts) or counts[i, j] < MIN_SEEDS else ""
            std = f"\n± {100 * stds[i, j]:.2f}" if counts[i, j] >= MIN_SEEDS else ""
            ax.text(
                j,
                i,
                f"{100 * mean:.2f}{std}{count}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "black",
            )
    if best in group:
        j, i = widths.index(best["width"]), depths.index(best["depth"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#e8000b", linewidth=2.5))
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("neurons per hidden layer (width)")
    ax.set_ylabel("hidden layers (depth)")
    ax.tick_params(length=0)


def _draw_width_lines(ax: Any, group: Sequence[dict]) -> None:
    """Mean test accuracy against width on a log2 axis, one line per depth, with a ± std band."""
    widths, depths, means = _grid(group, "test_accuracy")
    _, _, stds = _grid(group, "test_accuracy_std")
    for row, depth in enumerate(depths):
        mean, std = 100 * means[row], 100 * stds[row]
        (line,) = ax.plot(widths, mean, marker="o", markersize=5, label=layers(depth))
        ax.fill_between(widths, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("neurons per hidden layer (width, log2 scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")

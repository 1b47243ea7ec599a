"""Each plot function draws a readable PNG from small synthetic data, with no training."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from digitnet import plots
from digitnet.config import TrainConfig
from digitnet.model import build_model, layer_sizes


def assert_png(path, min_width: int = 400, min_height: int = 200) -> None:
    """The file is a complete PNG of a size a reader can use."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert width >= min_width and height >= min_height, (width, height)


@pytest.fixture
def digits():
    """30 random 28x28 uint8 images, labels, and probabilities right for some and confidently wrong for others."""
    rng = np.random.default_rng(0)
    labels = np.arange(30) % 10
    probs = rng.dirichlet(np.ones(10), size=30)
    probs[:20] = np.eye(10)[labels[:20]] * 0.9 + 0.01
    return rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), labels, probs


@pytest.mark.parametrize("hidden", [(1,), (1024, 256, 64, 16)])
def test_network_diagram(tmp_path, hidden):
    layers = plots.layers_from_config(TrainConfig(hidden=hidden))
    path = plots.plot_network(layers, tmp_path / "network.png")
    assert path == tmp_path / "network.png"
    assert_png(path, min_width=600)


def test_network_diagram_from_a_model_matches_its_config(tmp_path):
    config = TrainConfig(hidden=(128,))
    model = build_model(config)
    assert layer_sizes(model) == plots.layers_from_config(config)
    assert plots.count_params(layer_sizes(model)) == model.count_params() == 101_770
    assert_png(plots.plot_network(layer_sizes(model), tmp_path / "network.png", model.count_params()))


def test_network_diagram_stays_readable_with_six_hidden_layers(tmp_path):
    path = plots.plot_network(
        plots.layers_from_config(TrainConfig(hidden=(64,) * 6, activation=("tanh",))), tmp_path / "n.png"
    )
    with Image.open(path) as image:
        width, height = image.size
    assert width > height  # the figure widens with the layers instead of squeezing them


def test_samples(tmp_path, digits):
    images, labels, _ = digits
    assert_png(plots.plot_samples(images, labels, tmp_path / "samples.png", n=20))


@pytest.mark.parametrize("epochs", [1, 5])
def test_curves(tmp_path, epochs):
    history = [
        {
            "epoch": e,
            "loss": 1 / e,
            "accuracy": 1 - 0.1 / e,
            "val_loss": 1.1 / e,
            "val_accuracy": 1 - 0.12 / e,
            "seconds": 1.0,
        }
        for e in range(1, epochs + 1)
    ]
    assert_png(plots.plot_curves(history, tmp_path / "curves.png"))


def test_confusion(tmp_path):
    matrix = np.diag([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]) + np.eye(10, k=1, dtype=int) * 7
    assert_png(plots.plot_confusion(matrix.tolist(), tmp_path / "confusion.png"), min_width=800)


def test_errors(tmp_path, digits):
    images, labels, probs = digits
    assert_png(plots.plot_errors(images, labels, probs, tmp_path / "errors.png", n=16))


def test_errors_without_mistakes(tmp_path, digits):
    images, labels, _ = digits
    assert_png(plots.plot_errors(images, labels, np.eye(10)[labels], tmp_path / "errors.png"), min_height=100)


def test_per_class(tmp_path):
    rng = np.random.default_rng(1)
    precision, recall = rng.uniform(0.93, 0.99, 10), rng.uniform(0.93, 0.99, 10)
    assert_png(plots.plot_per_class(precision, recall, tmp_path / "per_class.png", accuracy=0.96))

"""The report of a tiny fabricated run: six embedded images, no external resources, clear errors."""

from __future__ import annotations

import base64
import csv
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from digitnet import report
from digitnet.cli import app
from digitnet.config import TrainConfig
from digitnet.data import Mnist
from digitnet.errors import DigitnetError
from digitnet.model import build_model

DATA_URI = "data:image/png;base64,"


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href"):
                (self.images if tag == "img" else self.links).append(value or "")


@pytest.fixture
def tiny_data() -> Mnist:
    """Random images standing in for MNIST: enough for every picture, no download."""
    rng = np.random.default_rng(0)
    return Mnist(
        train_images=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        train_labels=np.arange(60, dtype=np.uint8) % 10,
        test_images=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        test_labels=np.arange(50, dtype=np.uint8) % 10,
        source="random",
    )


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as `digitnet train` leaves it, with an untrained 784-16-10 model."""
    config = TrainConfig(hidden=(16,), epochs=3)
    run = tmp_path / "run"
    run.mkdir()
    config.save(run / "config.json")
    with open(run / "history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"])
        writer.writerows([[e, 1 / e, 1 - 0.3 / e, 1.2 / e, 1 - 0.35 / e, 0.5] for e in (1, 2, 3)])
    model = build_model(config)
    model.save(run / "model.keras")
    metrics = {
        "test_accuracy": 0.1,
        "test_loss": 2.3,
        "val_accuracy": 0.88,
        "params": model.count_params(),
        "train_seconds": 1.5,
        "compile_seconds": 0.7,
        "epochs": 3,
        "device": "cpu",
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_report_embeds_six_images_and_nothing_external(run_dir, tiny_data):
    path = report.write_report(run_dir, data=tiny_data)
    assert path == run_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    parser = Links()
    parser.feed(page)
    assert len(parser.images) == 6 and all(src.startswith(DATA_URI) for src in parser.images)
    for src in parser.images:
        with Image.open(io.BytesIO(base64.b64decode(src[len(DATA_URI) :], validate=True))) as image:
            assert image.format == "PNG" and image.size[0] >= 400
    assert all(link.startswith("#") for link in parser.links)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert sorted(p.name for p in (run_dir / "plots").glob("*.png")) == sorted(
        f"{name}.png" for name in report.PLOT_FILES
    )
    assert (run_dir / "evaluation.json").is_file()  # computed because the run had none
    for text in ("hidden_1", "learning_rate", "Test accuracy", "Scores per digit", "Total params"):
        assert text in page


def test_report_uses_a_saved_evaluation(run_dir, tiny_data):
    scores = {"precision": [0.5] * 10, "recall": [0.5] * 10, "f1": [0.5] * 10, "support": [5] * 10}
    matrix = (np.eye(10, dtype=int) * 3 + np.eye(10, k=1, dtype=int) * 2 + np.eye(10, k=-9, dtype=int) * 2).tolist()
    saved = {"accuracy": 0.625, "loss": 1.25, "n": 50, "per_class": scores, "confusion_matrix": matrix}
    (run_dir / "evaluation.json").write_text(json.dumps(saved))
    page = report.write_report(run_dir, data=tiny_data).read_text(encoding="utf-8")
    assert "62.50%" in page and "1.2500" in page


def test_a_folder_missing_files_names_them(run_dir, tiny_data):
    (run_dir / "history.csv").unlink()
    (run_dir / "model.keras").unlink()
    with pytest.raises(DigitnetError, match=r"missing history\.csv, model\.keras.*digitnet train"):
        report.write_report(run_dir, data=tiny_data)


def test_a_missing_folder_and_an_empty_history_are_errors(run_dir, tiny_data):
    with pytest.raises(DigitnetError, match="no such folder"):
        report.write_report(run_dir / "nowhere", data=tiny_data)
    (run_dir / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy,seconds\n")
    with pytest.raises(DigitnetError, match="no epochs"):
        report.write_report(run_dir, data=tiny_data)


def test_cli_report_prints_where_it_wrote(run_dir, tiny_data, monkeypatch):
    monkeypatch.setattr(report, "load_dataset", lambda name, data_dir=None: tiny_data)
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert str(run_dir / "report.html") in result.output and "network.png" in result.output
    result = CliRunner().invoke(app, ["report", str(run_dir / "nowhere")])
    assert isinstance(result.exception, DigitnetError)

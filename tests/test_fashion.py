"""A run remembers its data set: Fashion-MNIST's class names in every picture, report, table and answer."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_run
from fastapi.testclient import TestClient
from matplotlib.text import Text
from PIL import Image, ImageDraw

from digitnet import plots, report
from digitnet.clothes import NOTE, prepare_clothing
from digitnet.config import TrainConfig
from digitnet.data import DataError, class_names
from digitnet.evaluate import evaluate_run, format_evaluation
from digitnet.predict import Predictor
from digitnet.serve import create_app
from digitnet.sweep import SweepConfig, run_sweep

CLASSES = class_names("fashion-mnist")
SMALL = dict(hidden=(16,), epochs=1, train_size=512, val_size=500, dataset="fashion-mnist")


def digitnet(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    """The command line in another process, with DIGITNET_DATA naming a folder (it may hold mnist/, fashion-mnist/)."""
    env = {**os.environ, "DIGITNET_DATA": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "digitnet", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="session")
def both_dir(tmp_path_factory, mnist_dir, fashion_dir) -> Path:
    """One data folder for both data sets, as DIGITNET_DATA may name it: mnist/ and fashion-mnist/ side by side."""
    folder = tmp_path_factory.mktemp("data")
    for name, source in (("mnist", mnist_dir), ("fashion-mnist", fashion_dir)):
        (folder / name).mkdir()
        for path in source.iterdir():
            if path.name.startswith(("train-", "t10k-")):
                (folder / name / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="session")
def fashion_run(tmp_path_factory) -> Path:
    """An untrained 784-16-10 run folder on Fashion-MNIST, as training leaves it."""
    return fake_run(tmp_path_factory.mktemp("fashion-run"), TrainConfig(hidden=(16,), dataset="fashion-mnist"))


def product_photo(colour=(30, 30, 30)) -> bytes:
    """A PNG of a dark trouser shape on white."""
    image = Image.new("RGB", (240, 320), "white")
    draw = ImageDraw.Draw(image)
    draw.polygon([(70, 20), (170, 20), (190, 300), (135, 300), (120, 90), (105, 300), (50, 300)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def drawn(monkeypatch):
    """The strings of every text of the figures the plot functions save, by file name."""
    texts: dict[str, list[str]] = {}
    save = plots._save

    def keep(fig, path, tight=True):
        texts[Path(path).name] = [t.get_text() for t in fig.findobj(Text)]
        return save(fig, path, tight)

    monkeypatch.setattr(plots, "_save", keep)
    return texts


def test_a_fashion_run_trains_evaluates_and_reports_by_class_name(tmp_path, both_dir):
    run = tmp_path / "run"
    done = digitnet(
        "train",
        "--dataset",
        "fashion-mnist",
        "--hidden",
        16,
        "--epochs",
        1,
        "--train-size",
        2000,
        "--val-size",
        500,
        "--out",
        run,
        data_dir=both_dir,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "config.json").read_text())["dataset"] == "fashion-mnist"
    done = digitnet("evaluate", run, data_dir=both_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("class ") and lines[2].lstrip().startswith("T-shirt/top ")
    assert any(line.lstrip().startswith("Ankle boot ") for line in lines)
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["dataset"] == "fashion-mnist" and evaluation["classes"] == list(CLASSES)


def test_a_run_resumes_on_its_own_data_set(tmp_path, both_dir):
    run = tmp_path / "run"
    flags = ["--dataset", "fashion-mnist", "--hidden", 16, "--epochs", 2, "--train-size", 1000, "--val-size", 500]
    assert digitnet("train", *flags, "--out", run, data_dir=both_dir).returncode == 0
    (run / "metrics.json").unlink()  # as if stopped before writing it
    done = digitnet("train", "--resume", run, data_dir=both_dir)
    assert done.returncode == 0, done.stderr
    assert "all 2 epochs were done before" in done.stdout and (run / "metrics.json").is_file()


def test_mnist_files_in_the_data_folder_are_refused_for_a_fashion_run(tmp_path, both_dir):
    done = digitnet(
        "train",
        "--dataset",
        "fashion-mnist",
        "--out",
        tmp_path / "run",
        "--data-dir",
        both_dir / "mnist",
        data_dir=both_dir,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "this is MNIST's" in done.stderr and "not Fashion-MNIST's" in done.stderr
    assert not (tmp_path / "run").exists()


def test_evaluate_loads_the_data_set_the_run_learned(fashion_run, mnist, fashion):
    with pytest.raises(DataError, match="the data given is MNIST, but the run is on Fashion-MNIST"):
        evaluate_run(fashion_run, data=mnist)
    result = evaluate_run(fashion_run, data=fashion)
    table = format_evaluation(result)
    assert "class        precision  recall      f1  support" in table
    assert "confusion matrix (rows: true class, columns: predicted class, in the order of the rows)" in table
    assert table.splitlines()[-1].startswith(" Ankle boot ")


def test_the_report_and_its_pictures_name_the_classes(tmp_path, fashion, drawn):
    config = TrainConfig(**SMALL)
    run = fake_run(tmp_path / "run", config)
    with open(run / "history.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(
            [["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"], [1, 1.0, 0.5, 1.1, 0.45, 0.4]]
        )
    page = report.write_report(run, data=fashion).read_text(encoding="utf-8")
    assert "Scores per class" in page and "Precision and recall per class" in page and "on Fashion-MNIST" in page
    assert "Ankle boot" in page and "T-shirt/top" in page
    for picture in ("confusion.png", "per_class.png", "samples.png", "network.png"):
        assert {"Ankle boot", "T-shirt/top", "Sneaker"} <= set(drawn[picture]), picture
    assert "true class" in drawn["confusion.png"] and "class" in drawn["per_class.png"]
    mistakes = " ".join(drawn["errors.png"])
    assert "true: " in mistakes and "read as: " in mistakes and any(name in mistakes for name in CLASSES)
    assert "most confident mistakes, of " in mistakes and "p(true): to the true class" in mistakes


def test_mnist_pictures_keep_their_digits(tmp_path, drawn):
    matrix = np.eye(10, dtype=int) * 5
    plots.plot_confusion(matrix, tmp_path / "confusion.png")
    plots.plot_per_class([0.9] * 10, [0.8] * 10, tmp_path / "per_class.png")
    assert {"predicted digit", "true digit"} <= set(drawn["confusion.png"]) and "digit" in drawn["per_class.png"]
    assert set("0123456789") <= set(drawn["confusion.png"])


def test_predict_names_the_garment_and_says_how_it_read_the_photo(fashion_run, tmp_path):
    from typer.testing import CliRunner

    from digitnet.cli import app

    (tmp_path / "trousers.png").write_bytes(product_photo())
    result = CliRunner().invoke(app, ["predict", str(fashion_run), str(tmp_path / "trousers.png"), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)[0]
    assert answer["class"] == CLASSES[answer["label"]]
    assert set(answer) == {"file", "label", "class", "probability", "probabilities"}
    assert result.stderr.strip() == f"note: {NOTE}"
    plain = CliRunner().invoke(app, ["predict", str(fashion_run), str(tmp_path / "trousers.png")])
    assert plain.stdout.strip().startswith(f"{tmp_path / 'trousers.png'}: {answer['class']} (p=")


def test_a_fashion_model_reads_photos_as_the_data_set_was_made_not_as_handwriting(fashion_run):
    predictor = Predictor.load(fashion_run)
    assert predictor.dataset == "fashion-mnist" and predictor.classes == CLASSES
    np.testing.assert_array_equal(predictor.prepare(product_photo()), prepare_clothing(product_photo()))
    seen = predictor.prepare(product_photo())
    assert seen[:, 0].any() is not None and seen.max() == pytest.approx(1.0)
    assert (seen[0] > 0).any() and (seen[-1] > 0).any()  # fills 28 rows, not MNIST's 20-pixel box


def test_a_keras_file_on_its_own_is_read_as_mnist(fashion_run, tmp_path):
    shutil.copy(fashion_run / "model.keras", tmp_path / "copy.keras")
    assert Predictor.load(tmp_path / "copy.keras").dataset == "mnist"


def test_the_server_says_its_data_set_and_answers_with_class_names(fashion_run):
    predictor = Predictor.load(fashion_run)
    with TestClient(create_app(predictor)) as client:
        model = client.get("/model").json()
        assert model["dataset"] == "fashion-mnist" and model["classes"] == list(CLASSES)
        response = client.post("/predict", files={"file": ("trousers.png", product_photo(), "image/png")})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["class"] == CLASSES[answer["label"]]
        png = base64.b64decode(answer["preprocessed"].partition(",")[2])
        seen = np.asarray(Image.open(io.BytesIO(png)), np.float32) / 255
        np.testing.assert_allclose(seen, prepare_clothing(product_photo()), atol=1 / 255)
        page = client.get("/static/app.js").text
        assert "model.classes" in page and "answer.class" in page


def test_a_sweep_on_fashion_mnist_trains_on_it_and_says_so(tmp_path, fashion, drawn):
    grid = SweepConfig(widths=(8,), depths=(1,), seeds=(0,), base=TrainConfig(**SMALL))
    rows = run_sweep(grid, tmp_path / "sweep", data=fashion, log=lambda _: None)
    assert len(rows) == 1
    assert (tmp_path / "sweep/summary.md").read_text().startswith("# Neurons x hidden layers on Fashion-MNIST\n")
    assert any("on Fashion-MNIST" in text for text in drawn["sweep.png"])
    config = json.loads((tmp_path / "sweep/runs/w8-d1-relu-b128-s0/config.json").read_text())
    assert config["dataset"] == "fashion-mnist"
    assert SweepConfig.load(tmp_path / "sweep/sweep.json").base.dataset == "fashion-mnist"

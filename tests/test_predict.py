"""`digitnet predict` and the Predictor behind it, on a small untrained model and drawn test images."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import UNTRAINED_TEST_ACCURACY
from hardcases import number_picture
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from digitnet.cli import app
from digitnet.errors import DigitnetError
from digitnet.model import load_model
from digitnet.predict import BATCH_SIZES, Predictor
from digitnet.preprocess import ImageError, preprocess
from digitnet.run import RunDir, model_file
from digitnet.segment import split_digits


def draw_digit_png(path: Path, dark_ink: bool = True, size: int = 200) -> Path:
    """A hand-drawn-looking "7": two thick strokes, dark on light paper or light on dark."""
    ink, paper = (20, 235) if dark_ink else (255, 0)
    image = Image.new("L", (size, size), paper)
    draw = ImageDraw.Draw(image)
    s = size / 10
    draw.line([(3 * s, 2 * s), (7 * s, 2 * s), (4 * s, 8 * s)], fill=ink, width=int(1.4 * s), joint="curve")
    image.save(path)
    return path


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """Good and bad image files, by what they are."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "other").mkdir()
    good = {
        "dark": draw_digit_png(folder / "seven.png"),
        "light": draw_digit_png(folder / "other" / "seven.png", dark_ink=False),  # same name, other folder
        "jpeg": folder / "seven.jpg",
    }
    Image.open(good["dark"]).convert("RGB").save(good["jpeg"], quality=90)
    bad = {"text": folder / "notes.png", "empty": folder / "empty.png", "truncated": folder / "cut.png"}
    bad["text"].write_text("not an image\n")
    bad["empty"].write_bytes(b"")
    bad["truncated"].write_bytes(good["dark"].read_bytes()[:60])
    return {**good, **bad, "missing": folder / "missing.png"}


ONE_DIGIT_KEYS = {"file", "label", "class", "probability", "probabilities", "number", "digits"}


def invoke(*args: str):
    """Run the CLI in-process; stdout and stderr kept apart."""
    return CliRunner().invoke(app, [str(arg) for arg in args])


def test_predict_prints_one_line_per_file(run_dir, images):
    result = invoke("predict", run_dir, images["dark"], images["light"], images["jpeg"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, [images["dark"], images["light"], images["jpeg"]]):
        assert re.fullmatch(rf"{re.escape(str(path))}: \d \(p=[01]\.\d{{3}}\)", line)


def test_predict_json_has_the_documented_keys(run_dir, images):
    result = invoke("predict", run_dir / "model.keras", images["dark"], images["jpeg"], "--json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert [r["file"] for r in results] == [str(images["dark"]), str(images["jpeg"])]
    for r in results:
        assert set(r) == ONE_DIGIT_KEYS
        assert len(r["probabilities"]) == 10 and all(isinstance(p, float) for p in r["probabilities"])
        assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == int(np.argmax(r["probabilities"])) and r["class"] == str(r["label"])
        assert r["probability"] == max(r["probabilities"])
        assert r["number"] == str(r["label"])
        [digit] = r["digits"]
        assert {key: digit[key] for key in ("label", "class", "probability", "probabilities")} == {
            key: r[key] for key in ("label", "class", "probability", "probabilities")
        }
        left, top, right, bottom = digit["box"]
        width, height = Image.open(r["file"]).size
        assert 0 <= left < right <= width and 0 <= top < bottom <= height


def number_png(path: Path, text: str) -> tuple[Path, list[tuple]]:
    """A photo-like picture of a number written as separate digits, and the box drawn for each."""
    picture, boxes = number_picture(text, "tune", np.random.default_rng(7), canvas=False)
    Image.fromarray(np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8), "RGB").save(path)
    return path, boxes


def test_a_number_is_read_digit_by_digit_left_to_right(run_dir, tmp_path):
    path, boxes = number_png(tmp_path / "2026.png", "2026")
    result = invoke("predict", run_dir, path, "--json", "--save-preprocessed", tmp_path / "seen")
    assert result.exit_code == 0, result.output
    [r] = json.loads(result.stdout)
    assert set(r) == {"file", "number", "digits"}  # no one label for the whole
    expected = Predictor.load(run_dir).predict_arrays(np.stack([d.pixels for d in split_digits(Image.open(path))]))
    assert r["number"] == "".join(str(int(np.argmax(p))) for p in expected) and len(r["number"]) == 4
    lefts = [digit["box"][0] for digit in r["digits"]]
    assert lefts == sorted(lefts) and all(left >= box[0] - 10 for left, box in zip(lefts, boxes))
    for place, digit in enumerate(r["digits"], start=1):
        assert digit["label"] == int(r["number"][place - 1])
        assert digit["preprocessed"] == str(tmp_path / "seen" / f"2026_{place}_28x28.png")
        np.testing.assert_allclose(digit["probabilities"], expected[place - 1], atol=1e-6)
    line = invoke("predict", run_dir, path).stdout.strip()
    assert re.fullmatch(
        rf"{re.escape(str(path))}: {r['number']} \(\d p=[01]\.\d{{3}}(, \d p=[01]\.\d{{3}}){{3}}\)", line
    )


def test_one_digit_reads_the_whole_ink_as_one_digit(run_dir, tmp_path):
    path, _ = number_png(tmp_path / "42.png", "42")
    result = invoke("predict", run_dir, path, "--json", "--one-digit")
    [r] = json.loads(result.stdout)
    assert set(r) == ONE_DIGIT_KEYS and len(r["digits"]) == 1
    np.testing.assert_allclose(
        r["probabilities"], Predictor.load(run_dir).predict_arrays(preprocess(path)[None])[0], atol=1e-6
    )


def test_bad_files_get_errors_and_exit_code_1_while_good_ones_are_predicted(run_dir, images):
    bad = [images["text"], images["empty"], images["truncated"], images["missing"], images["text"].parent]
    result = invoke("predict", run_dir, images["dark"], *bad, "--json")
    assert result.exit_code == 1
    results = json.loads(result.stdout)
    assert set(results[0]) == ONE_DIGIT_KEYS
    for r, path in zip(results[1:], bad):
        assert set(r) == {"file", "error"} and r["file"] == str(path) and r["error"]
    assert len(result.stderr.strip().splitlines()) == len(bad)
    plain = invoke("predict", run_dir, images["missing"], images["dark"])
    assert plain.exit_code == 1
    assert plain.stdout.startswith(f"{images['dark']}: ")
    assert str(images["missing"]) in plain.stderr


def test_save_preprocessed_writes_what_the_network_saw_without_overwriting(run_dir, images, tmp_path):
    out = tmp_path / "seen"
    sources = [images["dark"], images["light"], images["text"]]
    result = invoke("predict", run_dir, *sources, "--save-preprocessed", out)
    assert result.exit_code == 1  # the text file; the two images are still saved
    written = sorted(p.name for p in out.iterdir())
    assert written == ["seven_28x28-1.png", "seven_28x28.png"]
    lines = result.stdout.splitlines()  # both inputs are named seven.png: each line says which file is its own
    assert lines[0].endswith(f"saved as {out / 'seven_28x28.png'}") and lines[1].endswith(
        f"saved as {out / 'seven_28x28-1.png'}"
    )
    saved = np.asarray(Image.open(out / "seven_28x28.png"))
    assert saved.shape == (28, 28) and saved.dtype == np.uint8
    np.testing.assert_array_equal(saved, np.round(preprocess(images["dark"]) * 255).astype(np.uint8))
    invoke("predict", run_dir, images["dark"], "--save-preprocessed", out)
    assert (out / "seven_28x28-2.png").exists()


def test_a_bad_model_path_is_a_one_line_error_with_exit_code_2(images, tmp_path):
    command = [sys.executable, "-m", "digitnet", "predict", str(tmp_path / "nowhere"), str(images["dark"])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert re.fullmatch(r"digitnet: error: model: .*nowhere does not exist; .*\n", done.stderr)


@pytest.mark.parametrize(
    "make, words",
    [
        ("empty folder", "without model.keras"),
        ("wrong suffix", "is not a .keras file"),
        ("corrupt file", "is not a Keras model (a .keras file is a zip archive)"),
        ("not an MNIST model", "takes inputs of shape (10,)"),
        ("three classes", "gives outputs of shape (3,), not the 10 digit classes"),
        ("no softmax", "does not end in a softmax"),
    ],
)
def test_bad_model_paths_raise_digitnet_error(tmp_path, make, words):
    layers = {
        "not an MNIST model": [keras.Input(shape=(10,)), keras.layers.Dense(2)],
        "three classes": [keras.Input(shape=(784,)), keras.layers.Dense(3, activation="softmax")],
        "no softmax": [keras.Input(shape=(784,)), keras.layers.Dense(10)],
    }
    if make in layers:
        path = tmp_path / "model.keras"
        keras.Sequential(layers[make]).save(path)
    elif make == "empty folder":
        path = tmp_path
    elif make == "wrong suffix":
        path = tmp_path / "model.h5"
        path.write_bytes(b"x")
    else:
        path = tmp_path / "model.keras"
        path.write_bytes(b"not a zip archive")
    for load in (Predictor.load, load_model):  # predict, serve, and evaluate alike
        with pytest.raises(DigitnetError, match="model: ") as info:
            load(path)
        assert words in str(info.value) and "\n" not in str(info.value)


def test_a_blank_image_is_an_error_entry_not_a_digit(run_dir, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "white").save(blank)
    result = invoke("predict", run_dir, blank, "--json")
    assert result.exit_code == 1
    [entry] = json.loads(result.stdout)
    assert set(entry) == {"file", "error"} and "shows no digit" in entry["error"]


def test_an_empty_file_gets_the_same_message_by_path_and_by_bytes(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for source in (empty, b""):
        with pytest.raises(ImageError, match=r"is empty \(0 bytes\); use a PNG or JPEG file"):
            preprocess(source)


def test_model_file_accepts_a_run_folder_or_a_keras_file(run_dir):
    assert model_file(run_dir) == run_dir / "model.keras"
    assert model_file(run_dir / "model.keras") == run_dir / "model.keras"


@pytest.mark.parametrize("n", [0, 1, 5, 32, BATCH_SIZES[-1] + 3])
def test_predict_arrays_pads_and_splits_batches_without_changing_results(predictor, n):
    x = np.random.default_rng(n).random((n, 28, 28), dtype=np.float32)
    probs = predictor.predict_arrays(x)
    assert probs.shape == (n, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    one_by_one = [predictor.predict_arrays(x[i : i + 1])[0] for i in range(min(n, 4))]
    np.testing.assert_allclose(probs[: len(one_by_one)], np.array(one_by_one).reshape(-1, 10), atol=1e-6)


def test_predict_arrays_rejects_wrong_shapes(predictor):
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        predictor.predict_arrays(np.zeros((2, 784), np.float32))


def test_predict_arrays_is_thread_safe(predictor):
    x = np.random.default_rng(0).random((64, 28, 28), dtype=np.float32)
    expected = predictor.predict_arrays(x)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = np.concatenate([predictor.predict_arrays(x[j : j + 1 + i % 9]) for j in range(0, 64, 1 + i % 9)])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(8)), "a thread failed before returning its results"
    for got in results.values():
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_predict_sources_takes_bytes_and_names(predictor, images):
    data = images["dark"].read_bytes()
    results = predictor.predict_sources([data, b"junk"], names=["upload.png", "junk.bin"])
    assert results[0]["file"] == "upload.png" and "label" in results[0]
    assert results[1]["file"] == "junk.bin" and "error" in results[1]
    assert results[0]["probabilities"] == predictor.predict_sources([images["dark"]])[0]["probabilities"]


def test_describe_reports_layers_parameters_and_test_accuracy(predictor):
    info = predictor.describe()
    assert [(layer["name"], layer["units"]) for layer in info["layers"]] == [
        ("input", 784),
        ("hidden_1", 16),
        ("output", 10),
    ]
    assert info["parameters"] == 784 * 16 + 16 + 16 * 10 + 10
    assert info["test_accuracy"] == UNTRAINED_TEST_ACCURACY
    assert info["run"] == predictor.path.parent.name and str(predictor.path.parent) not in json.dumps(info)
    assert info["dataset"] == "mnist" and info["classes"] == list("0123456789")
    json.dumps(info)  # served as JSON by /model


def test_test_accuracy_falls_back_to_evaluation_json(tmp_path):
    assert RunDir(tmp_path).test_accuracy() is None
    (tmp_path / "evaluation.json").write_text(json.dumps({"accuracy": 0.97, "n": 10000}))
    assert RunDir(tmp_path).test_accuracy() == 0.97
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.96}))
    assert RunDir(tmp_path).test_accuracy() == 0.96


def test_save_preprocessed_into_a_file_is_a_clear_error(run_dir, images, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke("predict", run_dir, images["dark"], "--save-preprocessed", blocker)
    assert isinstance(result.exception, DigitnetError)
    assert "save-preprocessed" in str(result.exception)


def test_digitnet_networks_run_in_numpy_and_others_compiled(run_dir, tmp_path):
    assert not Predictor.load(run_dir).compiled
    # A layer the NumPy pass does not know: the compiled pass serves it, with Keras' own numbers.
    other = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(8, activation="gelu"), keras.layers.Dense(10), keras.layers.Softmax()]
    )
    other.save(tmp_path / "other.keras")
    predictor = Predictor.load(tmp_path / "other.keras")
    assert predictor.compiled
    x = np.random.default_rng(4).random((3, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(predictor.predict_arrays(x), other.predict(x.reshape(3, 784), verbose=0), atol=1e-6)

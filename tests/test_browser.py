"""The drawing page in headless Chromium: draw digits with the mouse on the real server and read the answer.

Set DIGITNET_SCREENSHOT=docs/serve.png to also save the screenshot shown in the README.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import chromium
import numpy as np
import pytest
import uvicorn
from chromium import CHROMIUM

from digitnet.config import TrainConfig
from digitnet.model import build_model
from digitnet.predict import Predictor
from digitnet.serve import create_app

TRAIN_IMAGES = 20_000  # 3 epochs on these reach about 95% test accuracy in a few seconds
EPOCHS = 3

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")


@pytest.fixture(scope="module")
def run_dir(mnist, tmp_path_factory) -> Path:
    """A 784-128-10 network trained briefly on real MNIST: enough to read a clearly drawn digit."""
    x_train = mnist.train_images[:TRAIN_IMAGES].reshape(-1, 784).astype(np.float32) / 255
    x_test = mnist.test_images.reshape(-1, 784).astype(np.float32) / 255
    config = TrainConfig(hidden=(128,), epochs=EPOCHS, train_size=TRAIN_IMAGES)
    model = build_model(config)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, mnist.train_labels[:TRAIN_IMAGES], batch_size=128, epochs=EPOCHS, verbose=0)
    _, accuracy = model.evaluate(x_test, mnist.test_labels, verbose=0)
    folder = tmp_path_factory.mktemp("run")
    model.save(folder / "model.keras")
    config.save(folder / "config.json")
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": float(accuracy)}))
    return folder


@pytest.fixture(scope="module")
def server_url(run_dir):
    """The real server, uvicorn on a loopback socket, in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # port 0: the system picks a free one, so parallel runs never clash
    config = uvicorn.Config(create_app(Predictor.load(run_dir)), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    with chromium.browser_context(sync_api, tmp_path_factory.mktemp("chromium-profile"), 760, 600) as context:
        yield context


@pytest.fixture
def page(browser_context, server_url):
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server_url)
    sync_api.expect(page.locator("#model")).to_contain_text("parameters")
    yield page
    page.close()
    assert not errors, f"JavaScript errors: {errors}"


def draw(page, *strokes: list[tuple[float, float]], slot: int = 0, slots: int = 1) -> None:
    """Draw strokes with the mouse; points are fractions of a square as tall as the canvas, centred in the
    canvas, or in the slot-th of `slots` equal columns of it (the squares then shrink to fit the columns)."""
    box = page.locator("#canvas").bounding_box()
    column = box["width"] / slots
    side = min(box["height"], column)
    left = box["x"] + slot * column + (column - side) / 2
    top = box["y"] + (box["height"] - side) / 2
    for stroke in strokes:
        points = [(left + fx * side, top + fy * side) for fx, fy in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=12)
        page.mouse.up()


def answer(page) -> str:
    """The digit shown once the last drawing's prediction has arrived."""
    sync_api.expect(page.locator(".result")).to_have_attribute("aria-busy", "false", timeout=15_000)
    return page.locator("#digit").inner_text()


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 16) -> list[tuple[float, float]]:
    """Points along an elliptic arc, angles in turns (0.25 = a quarter turn, clockwise on screen)."""
    angles = np.linspace(2 * np.pi * start, 2 * np.pi * end, n)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


ONE = [[(0.52, 0.15), (0.48, 0.85)]]
SEVEN = [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]]
THREE = [arc(0.5, 0.33, 0.22, 0.17, 0.55, 1.25) + arc(0.5, 0.66, 0.25, 0.19, -0.25, 0.42)]


def test_drawing_a_one_reads_one(page):
    draw(page, *ONE)
    assert answer(page) == "1"
    top = page.locator("#bars li.top .label")
    assert top.inner_text() == "1"
    assert page.locator("#bars li").count() == 10
    assert page.locator("#preprocessed").get_attribute("src").startswith("data:image/png;base64,")


def test_drawing_a_seven_reads_seven_and_clear_resets(page):
    draw(page, *SEVEN)
    assert answer(page) == "7"
    page.click("#clear")
    assert answer(page) == "?"
    assert page.locator("#bars li.top").count() == 0
    assert page.locator("#preprocessed").get_attribute("src") is None
    assert page.locator("#digits button").count() == 0


def test_drawing_a_three_with_curves_reads_three(page):
    draw(page, *THREE)
    assert answer(page) == "3"


def test_a_number_reads_digit_by_digit_and_each_digit_shows_its_bars(page, tmp_path):
    for slot, strokes in enumerate([SEVEN, ONE, THREE, ONE]):
        draw(page, *strokes, slot=slot, slots=4)
    assert answer(page) == "7131"
    buttons = page.locator("#digits button")
    assert buttons.all_inner_texts() == ["7", "1", "3", "1"]
    assert page.locator("#bars li.top .label").inner_text() == "7"  # the first digit's bars
    first_image = page.locator("#preprocessed").get_attribute("src")
    buttons.nth(2).click()
    assert buttons.nth(2).get_attribute("aria-pressed") == "true"
    assert page.locator("#bars li.top .label").inner_text() == "3"
    assert page.locator("#preprocessed").get_attribute("src") != first_image
    assert "4 digits" in page.locator("#confidence").inner_text()
    page.wait_for_timeout(300)  # the bars' 120 ms transition, for the picture
    page.screenshot(path=tmp_path / "serve.png", full_page=True)
    if os.environ.get("DIGITNET_SCREENSHOT"):
        shutil.copy(tmp_path / "serve.png", os.environ["DIGITNET_SCREENSHOT"])


def test_the_page_fits_a_phone_screen(browser_context, server_url):
    page = browser_context.new_page()
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(server_url)
    box = page.locator("#canvas").bounding_box()
    assert box["width"] <= 360 and box["width"] == pytest.approx(2 * box["height"], abs=1)
    draw(page, *ONE)  # pointer events: the same code path serves mouse, pen and touch
    assert answer(page) == "1"
    page.close()


def test_a_fashion_mnist_model_names_its_classes_on_the_page(browser_context, tmp_path):
    """An untrained 784-16-10 Fashion-MNIST run: the page asks for clothing and names the ten classes."""
    from conftest import fake_run

    from digitnet.data import class_names

    folder = fake_run(tmp_path / "fashion-run", TrainConfig(hidden=(16,), dataset="fashion-mnist"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(Predictor.load(folder)), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    page = browser_context.new_page()
    try:
        page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}")
        sync_api.expect(page.locator("#hint")).to_contain_text("Draw a piece of clothing")
        sync_api.expect(page.locator("#bars .label")).to_have_text(list(class_names("fashion-mnist")))
        draw(page, [(0.3, 0.15), (0.7, 0.15), (0.75, 0.85)], [(0.3, 0.15), (0.25, 0.85)])
        assert answer(page) in class_names("fashion-mnist")
        assert page.locator("#bars li.top .label").inner_text() == answer(page)
    finally:
        page.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

"""The lab's page in headless Chromium, on the real server: train from the page on a slice of MNIST and see each
epoch arrive, stop and resume, a bad width, a drawing read layer by layer, a neuron's weights, two runs compared.

Set DIGITNET_SCREENSHOT=docs/lab.png to also save the screenshot shown in docs/lab.md.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import chromium
import pytest
import uvicorn
from chromium import CHROMIUM

from digitnet.config import ConfigError, TrainConfig
from digitnet.lab import Lab, create_app
from digitnet.train import train_and_evaluate

# Runs trained before the page opens: enough to read a clearly drawn digit, and a second one to compare it with.
READER = {"hidden": [64], "epochs": 3, "train_size": 20_000, "val_size": 1000}
SMALL = {"hidden": [16, 16], "epochs": 2, "train_size": 3000, "val_size": 1000}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
expect = sync_api.expect


@pytest.fixture(scope="module")
def lab(mnist, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for name, settings in (("reader", READER), ("small", SMALL)):
        train_and_evaluate(TrainConfig.from_dict(settings), runs / name, data=mnist, log=lambda line: None)
    lab = Lab(runs, data=mnist)
    lab.start()
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def server_url(lab):
    """The real server, uvicorn on a loopback socket, in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # port 0: the system picks a free one, so parallel runs never clash
    config = uvicorn.Config(create_app(lab), log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    lab.events.publish(None)  # ends the pages' event streams, which uvicorn would wait for
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    with chromium.browser_context(sync_api, tmp_path_factory.mktemp("chromium-profile"), 1280, 900) as context:
        yield context


@pytest.fixture
def page(browser_context, server_url):
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server_url)
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator('#runs-table tr[data-run="reader"]')).to_be_visible()
    yield page
    page.close()
    assert not errors, f"JavaScript errors: {errors}"


def design(page, widths: list[int], epochs: int, train_size: int, descent: str = "mini-batch") -> None:
    """Fill in the form: one field per hidden layer, the descent, the epochs and the training images."""
    while page.locator("#layer-list li").count() > len(widths):
        page.locator("#layer-list .remove-layer").last.click()
    while page.locator("#layer-list li").count() < len(widths):
        page.click("#add-layer")
    for field, width in zip(page.locator("#layer-list .width").all(), widths):
        field.fill(str(width))
    page.check(f'input[name="descent"][value="{descent}"]')
    page.fill('input[name="epochs"]', str(epochs))
    page.fill('input[name="train_size"]', str(train_size))


def draw(page, *strokes: list[tuple[float, float]]) -> None:
    """Draw strokes on the pad with the mouse; points are fractions of its width and height."""
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=12)
        page.mouse.up()


def select(page, run: str) -> None:
    """Look inside a run: click its name in the table and wait for its test scores."""
    page.locator(f'#runs-table tr[data-run="{run}"] .select').click()
    expect(page.locator("#inspect-summary")).to_contain_text("Test accuracy", timeout=30_000)


ONE = [[(0.52, 0.15), (0.48, 0.85)]]


def test_training_a_small_network_from_the_page_shows_each_epoch_as_it_arrives(page):
    design(page, [32], epochs=3, train_size=2000)
    # Epochs this small end a few milliseconds apart: the page records each change of its epoch log as it happens.
    page.evaluate("""() => {
        window.epochCounts = [];
        const log = document.getElementById("epoch-log");
        new MutationObserver(() => window.epochCounts.push(log.children.length)).observe(log, { childList: true });
    }""")
    page.click("#train")
    expect(page.locator("#run-status")).to_contain_text("finished: test accuracy", timeout=60_000)
    counts = [n for n in page.evaluate("window.epochCounts") if n > 0]
    assert counts == [1, 2, 3]  # one at a time, in order
    log = page.locator("#epoch-log li")
    expect(log).to_have_count(3)
    expect(log.first).to_contain_text("epoch 3: loss ")
    run = page.locator("#run-status").inner_text().split(":")[0]
    row = page.locator(f'#runs-table tr[data-run="{run}"]')
    expect(row).to_contain_text("784-32-10")
    expect(row).to_contain_text("3/3")
    expect(row.locator(".state")).to_have_text("finished")


def test_a_bad_width_shows_the_configs_own_message_next_to_the_field(page):
    with pytest.raises(ConfigError) as expected:
        TrainConfig(hidden=(64, 0))
    design(page, [64, 0], epochs=1, train_size=1000)
    error = page.locator('#train-form .error[data-field="hidden"]')
    expect(error).to_have_text(str(expected.value))
    page.click("#train")
    expect(error).to_have_text(str(expected.value))
    expect(page.locator("#queue li")).to_have_text(["nothing"])
    page.locator("#layer-list .width").last.fill("8")
    expect(error).to_be_hidden()


def test_a_run_stopped_from_the_page_can_be_resumed_to_its_end(page):
    design(page, [16], epochs=20, train_size=2000, descent="stochastic")
    # An epoch here lasts a tenth of a second: Stop is pressed as the first one shows, from within the page.
    page.evaluate("""() => {
        const log = document.getElementById("epoch-log");
        const observer = new MutationObserver(() => {
            if (log.children.length) { document.getElementById("stop").click(); observer.disconnect(); }
        });
        observer.observe(log, { childList: true });
    }""")
    page.click("#train")
    expect(page.locator("#run-status")).to_contain_text("stopped", timeout=60_000)
    run = page.locator("#run-status").inner_text().split(":")[0]
    stopped_after = page.locator("#epoch-log li").count()
    assert 1 <= stopped_after < 20
    row = page.locator(f'#runs-table tr[data-run="{run}"]')
    expect(row.locator(".state")).to_contain_text("stopped")
    expect(row).to_contain_text(f"{stopped_after}/20")
    row.locator(".resume").click()
    expect(page.locator("#run-status")).to_contain_text(f"{run}: finished", timeout=120_000)
    expect(row).to_contain_text("20/20")
    expect(page.locator("#epoch-log li")).to_have_count(20)


def test_drawing_a_digit_shows_the_probabilities_and_each_layers_activations(page):
    select(page, "reader")
    expect(page.locator("#confusion tr")).to_have_count(11)
    assert page.locator("#mistakes figure").count() > 0
    layers = page.locator("#network .layer")
    expect(layers).to_have_count(3)  # the image seen, the hidden layer, the output
    expect(layers.nth(1).locator(".layer-title")).to_have_text("hidden_1: 64 relu")
    draw(page, *ONE)
    expect(page.locator("#probabilities")).to_have_attribute("aria-busy", "false", timeout=15_000)
    expect(page.locator("#drawn-digit")).to_have_text("1")
    expect(page.locator("#probabilities li.top .label")).to_have_text("1")
    expect(layers.nth(1).locator(".peak")).to_contain_text("largest")
    expect(layers.nth(2).locator(".peak")).to_contain_text("largest 0.")  # a probability
    page.click("#clear")
    expect(page.locator("#drawn-digit")).to_have_text("?")
    expect(layers.nth(1).locator(".peak")).to_have_text("")


def test_clicking_a_neuron_opens_its_weight_picture_large(page):
    select(page, "reader")
    grid = page.locator("#weights-grid")
    grid.scroll_into_view_if_needed()
    expect(grid).to_have_attribute("width", str(8 * 30 - 2))  # 64 neurons: 8 columns of 28 px and a 2 px gap
    box = grid.bounding_box()
    scale = box["width"] / (8 * 30 - 2)
    grid.click(position={"x": (2 * 30 + 14) * scale, "y": (1 * 30 + 14) * scale})  # the 3rd of the 2nd row
    expect(page.locator("#neuron-view")).to_be_visible()
    expect(page.locator("#neuron-title")).to_have_text("hidden_1, neuron 11 of 64: its 784 incoming weights")


def test_comparing_two_runs_overlays_their_curves_and_the_table_sorts(page, tmp_path):
    for run in ("reader", "small"):
        page.locator(f'#runs-table tr[data-run="{run}"] .pick').check()
    expect(page.locator("#overlay-note")).to_have_text("Comparing 2 runs.")
    legend = page.locator("#overlay-chart .u-legend .u-series .u-label")
    expect(legend).to_have_text(["reader", "small"])
    expect(page.locator("#scatter-chart .u-legend .u-series .u-label")).to_contain_text(
        ["1 hidden layer", "2 hidden layers"]
    )
    page.click('#runs-table th[data-key="test_accuracy"]')
    expect(page.locator('#runs-table th[data-key="test_accuracy"]')).to_have_attribute("aria-sort", "descending")
    cells = page.locator("#runs-table tbody td:nth-child(10)").all_inner_texts()  # the test accuracy column
    accuracies = [float(text.rstrip("%")) for text in cells if text.endswith("%")]
    assert len(accuracies) >= 2 and accuracies == sorted(accuracies, reverse=True)


def test_a_run_on_fashion_mnist_picked_in_the_form_is_shown_with_its_class_names(page):
    page.select_option('select[name="dataset"]', "fashion-mnist")
    design(page, [32], epochs=1, train_size=2000)
    page.click("#train")
    expect(page.locator("#run-status")).to_contain_text("finished: test accuracy", timeout=60_000)
    expect(page.locator("#run-status")).to_contain_text("on Fashion-MNIST")
    run = page.locator("#run-status").inner_text().split(":")[0]
    expect(page.locator(f'#runs-table tr[data-run="{run}"] td').nth(1)).to_have_text("Fashion-MNIST")
    expect(page.locator('#runs-table tr[data-run="reader"] td').nth(1)).to_have_text("MNIST")
    select(page, run)
    expect(page.locator("#inspect-summary")).to_contain_text("Test accuracy on Fashion-MNIST")
    expect(page.locator("#pad-title")).to_have_text("Draw a piece of clothing")
    expect(page.locator("#probabilities .label").first).to_have_text("T-shirt/top")
    expect(page.locator("#probabilities .label").last).to_have_text("Ankle boot")
    expect(page.locator("#confusion th[scope=row]").last).to_have_text("Ankle boot")
    assert " read as " in page.locator("#mistakes figcaption").first.inner_text()
    draw(page, [(0.3, 0.15), (0.7, 0.15), (0.75, 0.85)], [(0.3, 0.15), (0.25, 0.85)])  # a pair of trousers, roughly
    expect(page.locator("#probabilities")).to_have_attribute("aria-busy", "false", timeout=15_000)
    answer = page.locator("#drawn-digit").inner_text()
    assert answer in page.locator("#probabilities .label").all_inner_texts()
    expect(page.locator("#probabilities li.top .label")).to_have_text(answer)
    page.select_option("#scatter-dataset", "fashion-mnist")
    expect(page.locator("#scatter-chart .u-legend .u-series .u-label")).to_have_text(["1 hidden layer"])
    select(page, "reader")  # back to digits
    expect(page.locator("#pad-title")).to_have_text("Draw a digit")
    expect(page.locator("#probabilities .label").first).to_have_text("0")
    page.select_option('select[name="dataset"]', "mnist")


def test_the_whole_lab_while_a_run_trains(page, tmp_path):
    """Every part of the page at once; the screenshot in docs/lab.md."""
    design(page, [128], epochs=30, train_size=20_000, descent="stochastic")  # 20,000 steps an epoch
    page.click("#train")
    select(page, "reader")
    for run in ("reader", "small"):
        page.locator(f'#runs-table tr[data-run="{run}"] .pick').check()
    draw(page, *ONE)
    expect(page.locator("#drawn-digit")).to_have_text("1", timeout=15_000)
    grid = page.locator("#weights-grid")
    scale = grid.bounding_box()["width"] / (8 * 30 - 2)
    grid.click(position={"x": 14 * scale, "y": 14 * scale})
    page.wait_for_function("document.querySelectorAll('#epoch-log li').length >= 2", timeout=120_000)
    expect(page.locator("#time-left")).to_contain_text("left")
    page.screenshot(path=tmp_path / "lab.png", full_page=True)
    if os.environ.get("DIGITNET_SCREENSHOT"):
        shutil.copy(tmp_path / "lab.png", os.environ["DIGITNET_SCREENSHOT"])
    page.click("#stop")
    expect(page.locator("#run-status")).to_contain_text("stopped", timeout=60_000)

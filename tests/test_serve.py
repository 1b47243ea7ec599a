"""The web API: uploads, canvas data URLs, limits, and junk that must never make it answer 500."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import logging
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hardcases import number_picture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digitnet.machine import available_cores
from digitnet.predict import Predictor
from digitnet.serve import (
    MAX_BODY_BYTES,
    BatchedReader,
    create_app,
    hand_out_connections,
    listen_socket,
    loaded_app,
    predict_image,
)

PREDICTION_KEYS = {
    "file",
    "label",
    "class",
    "probability",
    "probabilities",
    "number",
    "digits",
}  # as `digitnet predict --json`
SMALL_LIMIT = 64 * 1024  # bytes; a body limit that tests can exceed cheaply


@pytest.fixture(scope="session")
def client(predictor) -> TestClient:
    # raise_server_exceptions=False: a bug must show up as the 500 a real client would get.
    return TestClient(create_app(predictor), raise_server_exceptions=False)


@pytest.fixture(scope="session")
def small_client(predictor) -> TestClient:
    return TestClient(create_app(predictor, max_body_bytes=SMALL_LIMIT), raise_server_exceptions=False)


def canvas_png(size: int = 280, lines: int = 1) -> bytes:
    """A drawing like the page sends: a white "1" on an opaque black RGBA canvas (lines=0: a cleared canvas)."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    if lines:
        ImageDraw.Draw(image).line(
            [(size * 0.55, size * 0.15), (size * 0.45, size * 0.85)], fill="white", width=size // 14
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def assert_prediction(answer: dict, file: str) -> None:
    """A /predict answer: the predict --json object plus the preprocessed 28x28 PNG."""
    assert set(answer) == PREDICTION_KEYS | {"preprocessed"}
    assert answer["file"] == file
    assert len(answer["probabilities"]) == 10
    assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert answer["label"] == int(np.argmax(answer["probabilities"]))
    header, _, payload = answer["preprocessed"].partition(",")
    assert header == "data:image/png;base64"
    seen = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert seen.size == (28, 28) and seen.mode == "L"
    assert answer["number"] == str(answer["label"]) and len(answer["digits"]) == 1
    assert answer["digits"][0]["preprocessed"] == answer["preprocessed"]


def assert_client_error(response, status: int | None = None) -> None:
    """A 4xx with a JSON {"detail": message}."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], (str, list))


def test_upload_answers_the_predict_json_object(client, predictor, tmp_path):
    png = canvas_png()
    response = client.post("/predict", files={"file": ("one.png", png, "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert_prediction(answer, "one.png")
    (tmp_path / "one.png").write_bytes(png)
    cli_object = predictor.predict_sources([tmp_path / "one.png"], names=["one.png"])[0]
    for digit in answer["digits"]:
        del digit["preprocessed"]  # a data URL here; a file, when asked for, on the command line
    assert {key: answer[key] for key in PREDICTION_KEYS} == cli_object


def test_a_number_answers_each_digit_in_order_with_its_picture(client, predictor):
    picture, _ = number_picture("907", "tune", np.random.default_rng(3), canvas=False)
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
    response = client.post("/predict", files={"file": ("907.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"file", "number", "digits"} and len(answer["digits"]) == 3
    assert answer["number"] == "".join(str(digit["label"]) for digit in answer["digits"])
    assert all(digit["preprocessed"].startswith("data:image/png;base64,") for digit in answer["digits"])
    lefts = [digit["box"][0] for digit in answer["digits"]]
    assert lefts == sorted(lefts)
    whole = client.post("/predict?one_digit=true", files={"file": ("907.png", buffer.getvalue(), "image/png")})
    assert_prediction(whole.json(), "907.png")
    assert_client_error(client.post("/predict?one_digit=maybe", files={"file": ("907.png", buffer.getvalue())}), 422)


def test_canvas_data_url_is_named_canvas(client):
    response = client.post("/predict", json={"image": data_url(canvas_png())})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), "canvas")


def test_bare_base64_and_other_image_formats_are_accepted(client):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(canvas_png())).convert("RGB").save(buffer, format="JPEG")
    response = client.post("/predict", json={"image": base64.b64encode(buffer.getvalue()).decode()})
    assert response.status_code == 200, response.text


def test_a_large_photo_is_read_off_the_event_loop(client):
    photo = Image.new("RGB", (1600, 1200), (200, 190, 170))  # 1.9 megapixels: goes to the threadpool
    ImageDraw.Draw(photo).line([(820, 250), (780, 950)], fill=(30, 30, 60), width=60)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=85)
    response = client.post("/predict", files={"file": ("photo.jpg", buffer.getvalue(), "image/jpeg")})
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), "photo.jpg")


def test_healthz_model_and_page(client, predictor):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/model").json() == predictor.describe()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="canvas"' in page.text


def test_page_assets_are_served_and_nothing_is_fetched_from_elsewhere(client):
    page = client.get("/").text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert sorted(assets) == ["/static/app.js", "/static/style.css"]
    for asset in assets:
        assert client.get(asset).status_code == 200
    static = resources.files("digitnet").joinpath("static")
    for name in ("index.html", "style.css", "app.js"):
        text = static.joinpath(name).read_text()
        assert not re.search(r"https?://|@import|url\(", text), f"{name} refers to an outside resource"


def test_body_over_the_limit_by_content_length_is_413(small_client):
    response = small_client.post(
        "/predict", content=b"x" * (SMALL_LIMIT + 1), headers={"content-type": "application/json"}
    )
    assert_client_error(response, 413)


def test_body_over_the_limit_without_content_length_is_413(small_client):
    def chunks():  # a generator body goes out chunked, with no Content-Length to trust
        for _ in range(SMALL_LIMIT // 1000 + 2):
            yield b"x" * 1000

    response = small_client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert_client_error(response, 413)


def test_default_limit_is_five_megabytes(client):
    assert MAX_BODY_BYTES == 5 * 1024 * 1024
    response = client.post(
        "/predict", content=b"{" + b" " * MAX_BODY_BYTES + b"}", headers={"content-type": "application/json"}
    )
    assert_client_error(response, 413)


def test_a_huge_image_header_is_refused_without_decoding(client):
    # 20000x20000 pixels of 1-bit black compress to a few kB: a decompression bomb.
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < SMALL_LIMIT
    response = client.post("/predict", files={"file": ("bomb.png", buffer.getvalue(), "image/png")})
    assert_client_error(response, 422)
    assert "too large" in response.json()["detail"]


MALFORMED = {
    "bad json": ({"content": b'{"image": ', "headers": {"content-type": "application/json"}}, 400),
    "json not an object": ({"json": ["data:image/png;base64,AAAA"]}, 400),
    "missing image field": ({"json": {"picture": "x"}}, 400),
    "image not a string": ({"json": {"image": 7}}, 400),
    "data url not base64": ({"json": {"image": "data:image/png,rawbytes"}}, 400),
    "bad base64": ({"json": {"image": "data:image/png;base64,!!!notbase64"}}, 400),
    "base64 of text": ({"json": {"image": data_url(b"hello world")}}, 422),
    "empty image": ({"json": {"image": "data:image/png;base64,"}}, 422),
    "truncated png": ({"json": {"image": data_url(canvas_png()[:100])}}, 422),
    "no content type": ({"content": b"\x89PNG"}, 415),
    "wrong content type": ({"content": canvas_png(), "headers": {"content-type": "image/png"}}, 415),
    "url-encoded form": ({"data": {"file": "x"}}, 415),
    "multipart without file field": ({"files": {"upload": ("a.png", b"x", "image/png")}}, 400),
    "multipart file as text field": ({"files": {"file": (None, "just text")}}, 400),
    "multipart without boundary": ({"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400),
    "multipart garbage": (
        {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=zz"}},
        400,
    ),
    "multipart not an image": ({"files": {"file": ("a.png", b"GIF89a but not really", "image/png")}}, 422),
    "blank canvas": ({"json": {"image": data_url(canvas_png(lines=0))}}, 422),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_bodies_are_client_errors_with_a_detail(client, name):
    request, status = MALFORMED[name]
    assert_client_error(client.post("/predict", **request), status)


def test_unknown_routes_and_methods_are_client_errors(client):
    assert_client_error(client.get("/predict"), 405)
    assert_client_error(client.get("/nowhere"), 404)


def junk_request(rng: random.Random, png: bytes) -> dict:
    """One random, mostly broken request body of a random kind."""
    kind = rng.randrange(6)
    noise = rng.randbytes(rng.randrange(0, 3000))
    broken = bytearray(png)
    for _ in range(rng.randrange(1, 20)):  # flip bytes anywhere, header and checksums included
        broken[rng.randrange(len(broken))] = rng.randrange(256)
    broken = bytes(broken[: rng.randrange(1, len(broken) + 1)])
    if kind == 0:
        types = [
            "application/json",
            "multipart/form-data; boundary=b",
            "text/plain",
            "",
            "application/json; charset=utf-8",
        ]
        return {"content": noise, "headers": {"content-type": rng.choice(types)}}
    if kind == 1:
        return {"json": {"image": data_url(broken)}}
    if kind == 2:
        return {"files": {"file": (rng.choice(["a.png", "", "../../etc/passwd", "\u00e9.png"]), broken, "image/png")}}
    if kind == 3:
        short = "data:image/png;base64," + "A" * rng.randrange(9)
        value = rng.choice([None, 1.5, [], {}, "", "data:", "data:;base64,", short, noise.hex()])
        return {"json": {"image": value} if rng.random() < 0.8 else value}
    if kind == 4:
        text = json.dumps({"image": data_url(png)})
        return {"content": text[: rng.randrange(len(text))].encode(), "headers": {"content-type": "application/json"}}
    nested = "[" * rng.randrange(1, 100_000)  # deep nesting: a RecursionError in many JSON parsers
    return {"content": nested.encode(), "headers": {"content-type": "application/json"}}


def test_junk_never_makes_it_answer_500(client):
    rng = random.Random(20240601)
    png = canvas_png(56)
    statuses = set()
    for _ in range(300):
        response = client.post("/predict", **junk_request(rng, png))
        statuses.add(response.status_code)
        assert response.status_code < 500, response.text
        assert response.status_code == 200 or "detail" in response.json()
    assert statuses - {200}, "the junk should include some client errors"
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "workers, public_api_only",
    [(1, False), (2, False), (2, True), (None, False)],
    ids=["one worker", "two workers", "two workers, public API only", "one per core"],
)
def test_serve_command_answers_on_loopback_and_stops_on_interrupt(run_dir, workers, public_api_only):
    # --port 0: the system picks a free port, and the first line names it
    command = [sys.executable, "-m", "digitnet", "serve", str(run_dir), "--port", "0"]
    command += ["--workers", str(workers)] if workers else []
    env = {**os.environ, "DIGITNET_PUBLIC_API_ONLY": "1" if public_api_only else "0"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        while not (found := re.search(r"serving on http://127\.0\.0\.1:(\d+)", lines[-1] if lines else "")):
            lines.append(server.stdout.readline())
            assert lines[-1], "server stopped before it named its port:\n" + "".join(lines)
        port = int(found.group(1))
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "server did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json={"image": data_url(canvas_png())})
        assert response.status_code == 200
        assert_prediction(response.json(), "canvas")
    finally:
        server.send_signal(signal.SIGINT)
        output = "".join(lines) + server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    assert len(re.findall(r"Started server process", output)) == (workers or available_cores()), output


def test_connections_are_handed_to_the_workers_in_turn():
    """Six clients connect one after another; two workers' channels get them alternately, each connection
    itself (not a copy of another), and the hand-out ends when a worker ends."""
    listener = listen_socket("127.0.0.1", 0)
    listener.listen()
    listener.setblocking(False)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    theirs = [worker_end for _, worker_end in pairs]
    worker_ended, end_worker = os.pipe()  # stands in for a worker process's sentinel
    handed = []  # (which worker, whether the connection it got is the client's that just connected)

    def connect_clients():
        clients = []
        try:
            for _ in range(6):
                clients.append(socket.create_connection(listener.getsockname(), timeout=5))
                ready, _, _ = select.select(theirs, [], [], 5)
                for channel in ready:
                    _, fds, _, _ = socket.recv_fds(channel, 1, 1)
                    with socket.socket(fileno=fds[0]) as connection:
                        handed.append((theirs.index(channel), connection.getpeername() == clients[-1].getsockname()))
        finally:
            os.write(end_worker, b"x")
            for client in clients:
                client.close()

    try:
        with ThreadPoolExecutor(1) as pool:
            clients = pool.submit(connect_clients)
            ended = hand_out_connections(listener, [ours for ours, _ in pairs], [worker_ended])
            clients.result()
        assert ended == [worker_ended]
        assert handed == [(0, True), (1, True), (0, True), (1, True), (0, True), (1, True)]
    finally:
        for sock in (listener, *[end for pair in pairs for end in pair]):
            sock.close()
        os.close(worker_ended)
        os.close(end_worker)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_stops_with_one_line(run_dir, workers):
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: nobody else may bind the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "digitnet", "serve", str(run_dir), "--port", str(port), "--workers", str(workers)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"digitnet: error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port or --host"
    ]


def test_serve_refuses_zero_workers_and_a_missing_model(run_dir, tmp_path):
    for args, message in (
        ([str(run_dir), "--workers", "0"], "workers: got 0"),
        ([str(tmp_path / "nope"), "--workers", "2"], "nope"),
        ([str(run_dir), "--port", "99999"], "port: got 99999; allowed: 1 to 65535"),
        ([str(run_dir), "--port", "-1"], "port: got -1"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "digitnet", "serve", *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr


def test_the_loaded_app_is_kept_out_of_full_garbage_collections(run_dir):
    gc.unfreeze()
    try:
        app = loaded_app(run_dir)
        # What loading left (Keras, JAX, the model: hundreds of thousands of objects) is frozen ...
        assert gc.get_freeze_count() > 50_000
        # ... so a full collection no longer walks it.
        assert len(gc.get_objects(generation=2)) < gc.get_freeze_count() / 10
        assert TestClient(app).get("/healthz").json() == {"status": "ok"}
    finally:
        gc.unfreeze()


def test_a_malformed_multipart_body_adds_no_bare_line_to_the_log(client, caplog):
    with caplog.at_level(logging.WARNING):
        response = client.post(
            "/predict", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=zz"}
        )
    assert_client_error(response, 400)
    assert "Invalid multipart data" in response.json()["detail"]
    assert not [record for record in caplog.records if record.name.startswith("python_multipart")]


class CountingPredictor:
    """A Predictor's predict_arrays that records the batch size of each call, and can be made to fail."""

    def __init__(self, predictor: Predictor, error: Exception | None = None) -> None:
        self.predictor, self.error, self.batches = predictor, error, []
        self.read, self.classes, self.reads_numbers = predictor.read, predictor.classes, predictor.reads_numbers

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        if self.error is not None:
            raise self.error
        return self.predictor.predict_arrays(x)


def read_together(reader: BatchedReader, drawings: list[bytes]) -> list:
    """The reader's answers (or errors) for drawings whose requests are ready at the same time."""

    async def together():
        return await asyncio.gather(*(reader(f"d{i}", data) for i, data in enumerate(drawings)), return_exceptions=True)

    return asyncio.run(together())


def test_drawings_ready_together_share_one_forward_pass(predictor):
    drawings = [canvas_png(size) for size in (280, 200, 140)] + [b"not an image", canvas_png(lines=0)]
    counting = CountingPredictor(predictor)
    answers = read_together(BatchedReader(counting), drawings)
    assert counting.batches == [3]  # the three readable drawings
    for i, data in enumerate(drawings[:3]):  # as each alone would get, but for float rounding in the batch
        alone = predict_image(predictor, f"d{i}", data)
        for answer in (alone, alone["digits"][0]):
            answer["probabilities"] = pytest.approx(answer["probabilities"], abs=1e-6)
            answer["probability"] = pytest.approx(answer["probability"], abs=1e-6)
        assert answers[i] == alone
    assert [(error.status_code, error.detail.split(":")[0]) for error in answers[3:]] == [(422, "d3"), (422, "d4")]
    assert read_together(BatchedReader(counting), drawings[:1])[0]["label"] == answers[0]["label"]
    assert counting.batches == [3, 1]


def test_a_failing_forward_pass_fails_each_waiting_request(predictor):
    reader = BatchedReader(CountingPredictor(predictor, error=RuntimeError("broken")))
    answers = read_together(reader, [canvas_png(), canvas_png(), b"junk"])
    assert [str(answer) for answer in answers[:2]] == ["broken", "broken"] and answers[2].status_code == 422


# Header values a client can send: visible ASCII and spaces (HTTP forbids control characters in them).
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
CONTENT_TYPES = st.one_of(
    st.sampled_from(["application/json", "multipart/form-data", "image/png", "text/plain", ""]),
    st.builds("multipart/form-data; boundary={}".format, HEADER_TEXT),
    HEADER_TEXT,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        st.builds(lambda v: json.dumps({"image": v}).encode(), st.text()),
        st.builds(
            lambda v: json.dumps(v).encode(),
            st.recursive(
                st.none() | st.booleans() | st.floats() | st.text(max_size=20),
                lambda children: st.lists(children) | st.dictionaries(st.text(max_size=5), children),
            ),
        ),
    ),
    content_type=CONTENT_TYPES,
    extra=st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True), HEADER_TEXT, max_size=3),
)
def test_any_body_headers_and_content_type_get_200_or_a_4xx(client, body, content_type, extra):
    headers = {
        **{k: v for k, v in extra.items() if k.lower() not in ("content-length", "transfer-encoding", "host")},
        "content-type": content_type,
    }
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == 200 or 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.status_code == 200 or "detail" in response.json()

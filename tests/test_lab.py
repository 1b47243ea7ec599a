"""The lab's API: training small networks on a slice of MNIST, its events, queue, stop and resume, the runs
table, a look inside a run, the token, the limits, and bodies that must never make it answer 500."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digitnet.config import ConfigError, TrainConfig
from digitnet.errors import DigitnetError
from digitnet.lab import Lab, LabLimits, create_app, is_loopback, run_lab
from digitnet.model import build_model, make_numpy_activations_fn, make_numpy_predict_fn
from digitnet.predict import Predictor
from digitnet.run import CHECKPOINT, FINISHED, METRICS, RunDir

pytestmark = pytest.mark.slow

# A network and a slice of MNIST that train in a fraction of a second an epoch.
SMALL = {"hidden": [16], "epochs": 2, "train_size": 2000, "val_size": 500, "batch_size": 100}


@pytest.fixture(scope="module")
def lab(mnist, tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("runs"), data=mnist)
    lab.start()
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def client(lab) -> TestClient:
    # raise_server_exceptions=False: a bug must show up as the 500 a real client would get.
    return TestClient(create_app(lab), raise_server_exceptions=False)


def read_events(client: TestClient, until) -> list[dict]:
    """The lab's server-sent events, from the state it sends first, up to the first for which until(event)."""
    events = []
    with client.stream("GET", "/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if until(events[-1]):
                    return events
    raise AssertionError(f"the event stream ended early, after {events}")


def began(run: str):
    """Until the run trains: its begin event, or a first state that shows it training already (a begin sent before
    the stream was opened is not sent again)."""

    def training(event: dict) -> bool:
        if event["type"] == "state":
            current = event["current"]
            return current is not None and current["run"] == run and current["state"] == "training"
        return event["type"] == "begin" and event["job"]["run"] == run

    return training


def ended(run: str):
    return lambda event: event["type"] == "end" and event["job"]["run"] == run


def train(client: TestClient, **changes) -> str:
    """Queue a run of SMALL with changes; its folder's name."""
    answer = client.post("/api/train", json={**SMALL, **changes})
    assert answer.status_code == 202, answer.text
    return answer.json()["job"]["run"]


def run_row(client: TestClient, run: str) -> dict:
    return next(row for row in client.get("/api/runs").json()["runs"] if row["run"] == run)


@pytest.fixture(scope="module")
def trained(client) -> str:
    """A finished run of SMALL, trained by the lab."""
    run = train(client)
    read_events(client, ended(run))
    return run


def canvas_png(lines: int = 1) -> str:
    """A drawing as the page sends it: a white "1" on an opaque black canvas (lines=0: a cleared one)."""
    image = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    if lines:
        ImageDraw.Draw(image).line([(154, 42), (126, 238)], fill="white", width=20)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# ---------------------------------------------------------------- designing: the config's own messages, limits


def test_a_bad_width_answers_422_with_the_configs_own_message_next_to_its_field(client):
    with pytest.raises(ConfigError) as expected:
        TrainConfig(hidden=(0,))
    answer = client.post("/api/validate", json={**SMALL, "hidden": [0]})
    assert answer.status_code == 422
    assert answer.json() == {"detail": str(expected.value), "field": "hidden"}
    assert client.post("/api/train", json={**SMALL, "hidden": [0]}).json()["field"] == "hidden"


def test_each_settings_field_is_checked_by_the_config(client):
    for field, value in (
        ("activation", "softsign"),
        ("batch_size", 0),
        ("optimizer", "lbfgs"),
        ("learning_rate", -1),
        ("epochs", 0),
        ("seed", -1),
        ("train_size", 0),
    ):
        answer = client.post("/api/validate", json={**SMALL, field: value})
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["field"] == field and answer.json()["detail"].startswith(f"{field}: got ")


def test_good_settings_come_back_as_the_config_the_run_will_use(client):
    answer = client.post("/api/validate", json={"hidden": [32, 16], "activation": "tanh", "batch_size": "full"})
    assert answer.status_code == 200
    config = answer.json()["config"]
    assert config["hidden"] == [32, 16] and config["activation"] == ["tanh"] and config["batch_size"] == "full"
    assert config["epochs"] == TrainConfig().epochs


def test_settings_over_the_labs_limits_name_the_flag_that_sets_them(mnist, tmp_path):
    limits = LabLimits(max_width=64, max_depth=2, max_epochs=3)
    client = TestClient(create_app(Lab(tmp_path, limits, data=mnist)), raise_server_exceptions=False)
    for changes, flag in (
        ({"hidden": [65]}, "--max-width"),
        ({"hidden": [8, 8, 8]}, "--max-depth"),
        ({"epochs": 4}, "--max-epochs"),
    ):
        answer = client.post("/api/train", json={**SMALL, **changes})
        assert answer.status_code == 422 and flag in answer.json()["detail"], answer.text
    assert client.post("/api/validate", json={**SMALL, "hidden": [64, 64], "epochs": 3}).status_code == 200
    assert client.get("/api/state").json()["limits"] == {"max_width": 64, "max_depth": 2, "max_epochs": 3}


def test_limits_must_be_whole_numbers_of_one_or_more():
    with pytest.raises(DigitnetError, match="--max-width: got 0"):
        LabLimits(max_width=0)


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{", 400),
        (b"[1, 2]", 422),
        (b'{"hidden": 5}', 422),
        (b'{"hidden": [true]}', 422),
        (b'{"epochs": true}', 422),
        (b'{"augment": "elastic"}', 422),
        (b'{"learning_rate": 1' + b"0" * 400 + b"}", 422),
        (b'{"activation": {"a": 1}}', 422),
        (b'{"hidden": [1e400]}', 422),
        (b'{"batch_size": [1]}', 422),
    ],
)
def test_malformed_settings_answer_4xx_with_a_message(client, body, status):
    for path in ("/api/validate", "/api/train"):
        answer = client.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status, (path, body, answer.text)
        assert answer.json()["detail"]


def test_a_body_over_the_size_limit_answers_413(client):
    assert client.post("/api/train", content=b" " * (6 * 1024 * 1024)).status_code == 413


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "hidden",
        "activation",
        "batch_size",
        "optimizer",
        "learning_rate",
        "momentum",
        "epochs",
        "seed",
        "val_size",
        "train_size",
        "dropout",
        "weight_decay",
        "schedule",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(FIELDS, JSON, max_size=5) | JSON)
def test_random_json_settings_never_answer_500(mnist, tmp_path, body):
    lab = Lab(tmp_path, LabLimits(max_width=64, max_depth=2, max_epochs=2), data=mnist)  # never started: nothing trains
    client = TestClient(create_app(lab), raise_server_exceptions=False)
    for path in ("/api/validate", "/api/train"):
        # json.dumps, not httpx's json=: it writes NaN and Infinity, which Python's JSON reader takes.
        answer = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        assert answer.status_code in (200, 202, 422, 429), (path, body, answer.text)


# ---------------------------------------------------------------- training: events, queue, stop and resume


def test_training_streams_each_epoch_as_it_ends_then_the_run_is_an_ordinary_finished_run(client, lab):
    started = time.time()
    run = train(client, epochs=3)
    events = read_events(client, ended(run))
    assert events[0]["type"] == "state"
    epochs = [event for event in events if event["type"] == "epoch" and event["run"] == run]
    assert [event["row"]["epoch"] for event in epochs] == [1, 2, 3]
    for event in epochs:
        assert set(event["row"]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
        assert started < event["epoch_ended"] <= event["time"]
    assert events[-1]["job"]["state"] == "finished"
    folder = RunDir(lab.runs_dir / run)
    assert all(folder.file(name).is_file() for name in FINISHED)
    assert [row["epoch"] for row in folder.read_history()] == [1, 2, 3]
    row = run_row(client, run)
    assert row["state"] == "finished" and row["epochs_done"] == 3 and row["parameters"] == 784 * 16 + 16 + 16 * 10 + 10
    assert row["test_accuracy"] == folder.test_accuracy() > 0.5


def test_a_second_train_while_one_runs_waits_in_the_queue_and_trains_after_it(client):
    first, second = train(client), train(client, seed=1)
    waiting = client.get("/api/state").json()["waiting"]
    assert second in [job["run"] for job in waiting]
    assert run_row(client, second)["state"] == "queued"
    events = read_events(client, ended(second))
    order = [(event["type"], event["job"]["run"]) for event in events if event["type"] in ("begin", "end")]
    assert order.index(("end", first)) < order.index(("begin", second))
    assert run_row(client, first)["state"] == run_row(client, second)["state"] == "finished"


def test_a_waiting_run_can_be_taken_out_of_the_queue(client):
    first, second = train(client), train(client, seed=2)
    assert client.post(f"/api/runs/{second}/stop").json()["job"]["state"] == "cancelled"
    read_events(client, ended(first))
    assert second not in [row["run"] for row in client.get("/api/runs").json()["runs"]]


def test_stop_leaves_a_resumable_run_and_resume_finishes_it(client, lab):
    run = train(client, epochs=30)
    read_events(client, lambda event: event["type"] == "epoch" and event["run"] == run)
    assert client.post(f"/api/runs/{run}/stop").status_code == 200
    end = read_events(client, ended(run))[-1]["job"]
    assert end["state"] == "stopped" and f"digitnet train --resume {lab.runs_dir / run}" in end["message"]
    folder = RunDir(lab.runs_dir / run)
    done = len(folder.read_history())
    assert 1 <= done < 30 and folder.file(CHECKPOINT).is_file() and not folder.file(METRICS).is_file()
    assert run_row(client, run)["state"] == "stopped"

    assert client.post(f"/api/runs/{run}/resume").status_code == 202
    events = read_events(client, ended(run))
    assert events[-1]["job"]["state"] == "finished"
    resumed = [event["row"]["epoch"] for event in events if event["type"] == "epoch" and event["run"] == run]
    assert resumed == list(range(done + 1, 31))
    assert [row["epoch"] for row in folder.read_history()] == list(range(1, 31))
    assert client.post(f"/api/runs/{run}/resume").status_code == 409  # finished: nothing to resume


def test_closing_the_page_leaves_the_run_training_and_a_new_page_gets_its_state(client):
    run = train(client, epochs=40, batch_size=1)  # 2,000 steps an epoch: progress events inside it
    events = read_events(client, lambda event: event["type"] == "epoch" and event["run"] == run)
    assert any(event["type"] == "progress" and event["run"] == run for event in events)
    state = read_events(client, lambda event: True)[0]  # a page opened again
    assert state["type"] == "state" and state["current"]["run"] == run and state["current"]["history"]
    assert state["current"]["seconds_left"] > 0
    client.post(f"/api/runs/{run}/stop")
    assert read_events(client, ended(run))[-1]["job"]["state"] in ("stopped", "finished")


def test_a_run_trained_outside_the_lab_appears_in_its_table(client, lab, mnist):
    from digitnet.train import train_and_evaluate

    config = TrainConfig.from_dict({**SMALL, "hidden": [8, 8], "epochs": 1})
    train_and_evaluate(config, lab.runs_dir / "from-the-cli", data=mnist, log=lambda line: None)
    row = run_row(client, "from-the-cli")
    assert row["state"] == "finished" and row["depth"] == 2 and row["epochs_done"] == 1
    assert row["test_accuracy"] == RunDir(lab.runs_dir / "from-the-cli").test_accuracy()
    history = client.get("/api/runs/from-the-cli").json()["history"]
    assert [r["epoch"] for r in history] == [1]


# ---------------------------------------------------------------- looking inside a run


def test_inspecting_a_run_gives_its_confusion_matrix_and_most_confident_mistakes(client, lab, trained):
    answer = client.get(f"/api/runs/{trained}/inspect").json()
    assert answer["accuracy"] == pytest.approx(RunDir(lab.runs_dir / trained).test_accuracy(), abs=2e-4)
    matrix = np.array(answer["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 10_000
    assert np.trace(matrix) == round(answer["accuracy"] * 10_000)
    mistakes = answer["mistakes"]
    assert mistakes and all(m["label"] != m["predicted"] for m in mistakes)
    assert [m["probability"] for m in mistakes] == sorted((m["probability"] for m in mistakes), reverse=True)
    assert all(m["image"].startswith("data:image/png;base64,") for m in mistakes)
    assert [(layer["name"], layer["units"]) for layer in answer["layers"]] == [
        ("input", 784),
        ("hidden_1", 16),
        ("output", 10),
    ]


def test_the_weights_of_each_first_layer_neuron_come_as_784_numbers_scaled_to_its_largest(client, lab, trained):
    answer = client.get(f"/api/runs/{trained}/weights").json()
    values = np.frombuffer(base64.b64decode(answer["weights"]), np.int8).reshape(answer["neurons"], 784)
    assert answer["neurons"] == 16 and answer["layer"] == "hidden_1"
    assert (np.abs(values).max(axis=1) == 127).all()
    kernel = np.asarray(Predictor.load(lab.runs_dir / trained).model.get_layer("hidden_1").kernel).T
    restored = values / 127 * np.array(answer["scale"])[:, None]
    np.testing.assert_allclose(restored, kernel, atol=np.abs(kernel).max() / 200)  # int8: half a step of 127


def test_a_drawing_gets_the_probabilities_and_each_layers_activations(client, trained):
    answer = client.post(f"/api/runs/{trained}/draw", json={"image": canvas_png()})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert [(layer["name"], len(layer["values"])) for layer in result["layers"]] == [("hidden_1", 16), ("output", 10)]
    assert sum(result["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert result["layers"][-1]["values"] == pytest.approx(result["probabilities"], abs=1e-4)
    assert min(result["layers"][0]["values"]) >= 0  # relu
    assert result["label"] == int(np.argmax(result["probabilities"])) and result["class"] == str(result["label"])
    assert result["preprocessed"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("body", [{"image": canvas_png(lines=0)}, {"image": "data:image/png;base64,AAAA"}, {}, [1]])
def test_a_drawing_that_cannot_be_read_answers_4xx(client, trained, body):
    answer = client.post(f"/api/runs/{trained}/draw", json=body)
    assert 400 <= answer.status_code < 500 and answer.json()["detail"], answer.text


@pytest.mark.parametrize("name", ["no-such-run", "..", ".hidden", "a%2F..%2F..", "x" * 200])
def test_a_run_that_is_not_in_the_folder_answers_404(client, name):
    for method, path in (("GET", ""), ("GET", "/inspect"), ("GET", "/weights"), ("POST", "/resume"), ("POST", "/stop")):
        answer = client.request(method, f"/api/runs/{name}{path}")
        assert answer.status_code == 404, (method, path, answer.text)


def test_a_run_still_training_cannot_be_inspected_yet(client):
    run = train(client, epochs=30)
    read_events(client, began(run))
    answer = client.get(f"/api/runs/{run}/inspect")
    assert answer.status_code == 409 and "still training" in answer.json()["detail"]
    client.post(f"/api/runs/{run}/stop")
    read_events(client, ended(run))


def test_the_numpy_activations_end_in_the_same_probabilities_as_the_forward_pass():
    model = build_model(TrainConfig(hidden=(12, 7), activation=("tanh", "sigmoid")))
    x = np.random.default_rng(0).random((5, 784), np.float32)
    layers = make_numpy_activations_fn(model)(x)
    assert [layer.shape for layer in layers] == [(5, 12), (5, 7), (5, 10)]
    np.testing.assert_array_equal(layers[-1], make_numpy_predict_fn(model)(x))
    assert (np.abs(layers[0]) <= 1).all() and ((layers[1] > 0) & (layers[1] < 1)).all()
    assert Predictor(model).activations(x.reshape(5, 28, 28))[-1] == pytest.approx(layers[-1])


# ---------------------------------------------------------------- Fashion-MNIST: the run's own data set and classes


def product_photo() -> str:
    """A data URL of a dark trouser shape on white, as a photo of clothing is sent."""
    image = Image.new("RGB", (240, 320), "white")
    ImageDraw.Draw(image).polygon(
        [(70, 20), (170, 20), (190, 300), (135, 300), (120, 90), (105, 300), (50, 300)], fill=(30, 30, 30)
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_page_is_offered_each_data_set_with_its_class_names(client):
    state = client.get("/api/state").json()
    assert state["defaults"]["dataset"] == "mnist"
    offered = {dataset["name"]: dataset for dataset in state["datasets"]}
    assert offered["mnist"]["classes"] == list("0123456789")
    assert offered["fashion-mnist"]["title"] == "Fashion-MNIST"
    classes = offered["fashion-mnist"]["classes"]
    assert (classes[0], classes[9]) == ("T-shirt/top", "Ankle boot")
    answer = client.post("/api/validate", json={**SMALL, "dataset": "cifar10"})
    assert answer.status_code == 422 and answer.json()["field"] == "dataset"
    assert answer.json()["detail"] == "dataset: got 'cifar10'; allowed: mnist, fashion-mnist"


def test_a_fashion_run_trains_on_fashion_mnist_and_is_shown_with_its_class_names(client, lab, fashion):
    run = train(client, dataset="fashion-mnist")
    events = read_events(client, ended(run))
    assert events[-1]["job"]["state"] == "finished", events[-1]
    folder = RunDir(lab.runs_dir / run)
    assert folder.read_config().dataset == "fashion-mnist"
    assert run_row(client, run)["dataset"] == "fashion-mnist"
    inspection = client.get(f"/api/runs/{run}/inspect").json()
    assert inspection["dataset"] == "fashion-mnist" and inspection["title"] == "Fashion-MNIST"
    assert inspection["classes"] == list(fashion.classes)
    assert inspection["accuracy"] == pytest.approx(folder.test_accuracy(), abs=2e-4)  # on Fashion's test set
    assert np.array(inspection["confusion_matrix"]).sum(axis=1).tolist() == np.bincount(fashion.test_labels).tolist()
    drawn = client.post(f"/api/runs/{run}/draw", json={"image": product_photo()})
    assert drawn.status_code == 200, drawn.text
    result = drawn.json()
    assert result["class"] == fashion.classes[result["label"]]
    png = base64.b64decode(result["preprocessed"].partition(",")[2])
    seen = np.asarray(Image.open(io.BytesIO(png)), np.float32) / 255
    assert (seen[0] > 0).any() and (seen[-1] > 0).any()  # fitted to 28 rows as the data set was, not to MNIST's 20


# ---------------------------------------------------------------- one machine, shared honestly: the token


@pytest.fixture(scope="module")
def guarded(lab) -> TestClient:
    return TestClient(create_app(lab, token="s3cret/+"), raise_server_exceptions=False)


@pytest.mark.parametrize("path", ["/", "/api/state", "/api/runs", "/static/lab.js", "/api/events"])
def test_with_a_token_every_request_without_it_answers_401(guarded, path):
    for headers, query in (
        ({}, ""),
        ({"Authorization": "Bearer wrong"}, ""),
        ({}, "?token=wrong"),
        ({"Authorization": "s3cret/+"}, ""),
    ):
        answer = guarded.get(path + query, headers=headers)
        assert answer.status_code == 401 and "token" in answer.json()["detail"]


def test_with_a_token_a_request_carries_it_as_a_bearer_header_or_a_query_parameter(guarded):
    assert guarded.get("/api/runs", headers={"Authorization": "Bearer s3cret/+"}).status_code == 200
    assert guarded.get("/api/runs?token=s3cret%2F%2B").status_code == 200
    page = guarded.get("/?token=s3cret%2F%2B").text
    assert '/static/lab.js?token=s3cret%2F%2B"' in page  # the page's own files are asked for with it
    assert guarded.get("/static/lab.js?token=s3cret%2F%2B").status_code == 200


def test_the_lab_refuses_to_listen_beyond_this_machine_without_a_token(tmp_path):
    with pytest.raises(DigitnetError, match="--token"):
        run_lab(tmp_path, host="0.0.0.0")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")

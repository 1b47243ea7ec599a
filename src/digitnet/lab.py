"""`digitnet lab`: design networks, train them on MNIST or Fashion-MNIST and watch them learn, look inside and
compare them, in the browser.

A FastAPI app, as `digitnet serve`, over a folder of ordinary run folders (RUNS_DIR). Training runs in this
process, one run at a time (digitnet.lab_jobs); its progress reaches the pages as server-sent events. Drawings
are read with the NumPy forward pass of the selected run, so they are answered at once while a run trains.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hmac
import ipaddress
import json
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from digitnet.config import ConfigError, TrainConfig
from digitnet.data import DATASETS, ImageSet, load_dataset_in_background
from digitnet.errors import DigitnetError
from digitnet.interrupts import saves_on_ctrl_c
from digitnet.lab_jobs import EventHub, Job, QueueFull, TrainingQueue
from digitnet.lab_runs import NoSuchRun, RunModels, drawing_answer, folder_state, list_runs, new_run_name, run_dir
from digitnet.serve import (
    MAX_BODY_BYTES,
    internal_error,
    listen_socket,
    parse_data_url_json,
    read_body,
    read_number,
    url,
)

# The fields a page may set; the rest (augmentation and its settings) keep their defaults.
TRAIN_FIELDS = (
    "hidden",
    "activation",
    "batch_size",
    "optimizer",
    "learning_rate",
    "momentum",
    "schedule",
    "weight_decay",
    "dropout",
    "epochs",
    "seed",
    "val_size",
    "train_size",
    "dataset",
)
KEEPALIVE_S = 15.0  # a comment line on a quiet event stream, so a page that has gone is noticed
STOP_WAIT_S = 5.0  # on Ctrl-C, how long the lab waits for the run training to save its epoch under way
UVICORN_OPTIONS = {"access_log": False, "log_level": "info", "timeout_graceful_shutdown": 3}

log = logging.getLogger("digitnet.lab")


@dataclass(frozen=True)
class LabLimits:
    """What one click may ask of the machine: the largest network and the longest run."""

    max_width: int = 4096  # neurons in one hidden layer: 784-4096-10 is 3.3 million parameters
    max_depth: int = 8  # hidden layers
    max_epochs: int = 200

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DigitnetError(f"--{name.replace('_', '-')}: got {value!r}; give a whole number >= 1")

    def check(self, config: TrainConfig) -> None:
        """A ConfigError naming the field and the flag when the config is over a limit."""
        if len(config.hidden) > self.max_depth:
            raise ConfigError(
                f"hidden: got {len(config.hidden)} hidden layers; this lab allows at most "
                f"{self.max_depth} (digitnet lab --max-depth)"
            )
        if any(width > self.max_width for width in config.hidden):
            raise ConfigError(
                f"hidden: got {list(config.hidden)}; this lab allows at most {self.max_width} neurons "
                f"a layer (digitnet lab --max-width)"
            )
        if config.epochs > self.max_epochs:
            raise ConfigError(
                f"epochs: got {config.epochs}; this lab allows at most {self.max_epochs} (digitnet lab --max-epochs)"
            )


class DataSets:
    """The data sets the lab trains on and shows, each read once, on first use, on a thread of its own."""

    def __init__(self, given: Iterable[ImageSet] = (), data_dir: str | os.PathLike | None = None) -> None:
        self._data_dir = data_dir
        self._lock = threading.Lock()
        self._loading: dict[str, Callable[[], ImageSet]] = {data.dataset: (lambda data=data: data) for data in given}

    def start(self, name: str) -> Callable[[], ImageSet]:
        """Begin reading a data set, if not begun yet; the function returned waits for it."""
        with self._lock:
            if name not in self._loading:
                self._loading[name] = load_dataset_in_background(name, self._data_dir)
            return self._loading[name]

    def __call__(self, name: str) -> ImageSet:
        """The data set of this name (see digitnet.data.DATASETS), read now if need be."""
        return self.start(name)()


class Lab:
    """The lab's state: its runs folder, the training queue, the events, the loaded models and data sets."""

    def __init__(
        self,
        runs_dir: str | os.PathLike,
        limits: LabLimits = LabLimits(),
        data: ImageSet | Iterable[ImageSet] = (),
        data_dir: str | os.PathLike | None = None,
    ) -> None:
        self.runs_dir = Path(runs_dir)
        self.limits = limits
        self.data = DataSets([data] if isinstance(data, ImageSet) else data, data_dir)
        self.events = EventHub()
        keras_lock = threading.Lock()
        self.queue = TrainingQueue(self.runs_dir, self.data, self.events, keras_lock)
        self.models = RunModels(self.data, keras_lock)

    def start(self) -> None:
        self.queue.start()

    def close(self, timeout: float = STOP_WAIT_S) -> None:
        self.queue.close(timeout)
        self.events.publish(None)

    def config_of(self, body: Any) -> TrainConfig:
        """The TrainConfig a page asks for, checked by the config itself and then against the lab's limits."""
        if not isinstance(body, dict):
            raise ConfigError('expected a JSON object of training settings, such as {"hidden": [128], "epochs": 5}')
        unknown = sorted(set(body) - set(TRAIN_FIELDS))
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(TRAIN_FIELDS)}")
        if "hidden" in body and not isinstance(body["hidden"], list):
            raise ConfigError(f"hidden: got {body['hidden']!r}; give a list of layer widths, such as [128, 64]")
        if "activation" in body and not isinstance(body["activation"], (str, list)):
            raise ConfigError(f"activation: got {body['activation']!r}; give a name, or a list of one per layer")
        for name, value in body.items():
            if isinstance(value, bool):  # JSON's true and false are numbers to Python; no field takes them
                raise ConfigError(f"{name}: got {json.dumps(value)}; give a number or a name, not true or false")
        try:
            config = TrainConfig.from_dict({**TrainConfig().to_dict(), **body})
        except ConfigError:
            raise
        except (TypeError, ValueError, OverflowError) as err:  # a value of a type no check expected
            raise ConfigError(f"invalid settings ({err}); see the fields' allowed values") from None
        self.limits.check(config)
        return config

    def train(self, body: Any) -> Job:
        """Queue a new run with the settings a page sent."""
        config = self.config_of(body)
        return self.queue.submit(Job(new_run_name(self.runs_dir, self.queue.names()), config))

    def resume(self, name: str) -> Job:
        """Queue the rest of a stopped run."""
        run = run_dir(self.runs_dir, name)
        if self.queue.job(name) is not None:
            raise Conflict(f"{name}: already training or waiting to; stop it first")
        state = folder_state(run)
        if state != "stopped":
            raise Conflict(f"{name}: {state}, not a stopped run; only a stopped run can be resumed")
        return self.queue.submit(Job(name, run.read_config(), resume=True))

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the folder, and those the lab is training or will train, with their state."""
        rows = list_runs(self.runs_dir)
        for row in rows:
            active = self.queue.job(row["run"])
            last = active or self.queue.finished.get(row["run"])
            if last is not None:
                row["message"] = last.message
            if active is not None or (last is not None and row["state"] == "empty"):
                row["state"] = last.state
        listed = {row["run"] for row in rows}
        waiting = [job for job in self.queue.snapshot()["waiting"] if job["run"] not in listed]
        return rows + [
            {
                "run": job["run"],
                "state": "queued",
                "dataset": job["config"]["dataset"],
                "hidden": job["config"]["hidden"],
            }
            for job in waiting
        ]

    def state(self) -> dict[str, Any]:
        """What a page shows first, and again when it reconnects."""
        return {
            "type": "state",
            **self.queue.snapshot(),
            "limits": dataclasses.asdict(self.limits),
            "defaults": {name: TrainConfig().to_dict()[name] for name in TRAIN_FIELDS},
            "datasets": [{"name": d.name, "title": d.title, "classes": list(d.classes)} for d in DATASETS.values()],
        }

    def finished_run(self, name: str):
        """The run folder of a run with a model to show; Conflict while it trains."""
        run = run_dir(self.runs_dir, name)
        if self.queue.job(name) is not None:
            raise Conflict(f"{name}: still training; its model can be shown once the run has ended")
        return run


class Conflict(DigitnetError):
    """The request does not fit the run's state (HTTP 409)."""


def error_response(status: int) -> Callable:
    """An exception handler that answers `status` with the error's one-line message."""

    async def respond(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=status)

    return respond


async def config_error_response(request: Request, err: ConfigError) -> JSONResponse:
    """422 with the config's one-line message and the field it names (the text before its first colon)."""
    message = str(err)
    field = message.split(":", 1)[0]
    return JSONResponse({"detail": message, "field": field if field in TRAIN_FIELDS else None}, status_code=422)


async def json_body(request: Request) -> Any:
    """The request's JSON body (size-limited); 400 when it does not parse."""
    body = await read_body(request, MAX_BODY_BYTES)
    try:
        return json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError) as err:
        raise HTTPException(400, f"malformed JSON: {err}") from None


def create_app(lab: Lab, token: str | None = None) -> FastAPI:
    """The lab's web app; with a token, every request must carry it."""
    logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)
    app = FastAPI(title="digitnet lab", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("digitnet").joinpath("static", "lab.html").read_text()
    app.mount("/static", StaticFiles(packages=[("digitnet", "static")]), name="static")
    app.add_exception_handler(Exception, internal_error)
    app.add_exception_handler(ConfigError, config_error_response)
    # Any other error of digitnet's (a damaged run folder, a run another process trains) is the run's state.
    for error, status in ((NoSuchRun, 404), (Conflict, 409), (QueueFull, 429), (DigitnetError, 409)):
        app.add_exception_handler(error, error_response(status))
    if token is not None:
        app.add_middleware(TokenCheck, token=token)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        """The lab's page; with a token, its links carry it."""
        query = f"?token={urllib.parse.quote(token, safe='')}" if token else ""
        return HTMLResponse(page.replace("{{query}}", query))

    @app.get("/api/state")
    async def state() -> dict[str, Any]:
        return lab.state()

    @app.get("/api/events")
    async def events() -> StreamingResponse:
        """Server-sent events: the state first, then each change as it happens."""
        return StreamingResponse(
            event_stream(lab),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/validate")
    async def validate(request: Request) -> dict[str, Any]:
        """The settings as the run would use them, or 422 naming the field that is wrong."""
        config = lab.config_of(await json_body(request))
        lab.data.start(config.dataset)  # read while the user designs, so that Train does not wait for it
        return {"config": config.to_dict()}

    @app.post("/api/train", status_code=202)
    async def train(request: Request) -> dict[str, Any]:
        """Queue a run; it starts when the runs before it have ended."""
        job = lab.train(await json_body(request))
        return {"job": job.public(), "position": lab.queue.position(job)}

    @app.get("/api/runs")
    async def runs() -> dict[str, Any]:
        return {"runs": await anyio.to_thread.run_sync(lab.runs)}

    @app.get("/api/runs/{name}")
    async def run(name: str) -> dict[str, Any]:
        """The run's config and history, for its curves."""
        folder = run_dir(lab.runs_dir, name)
        job = lab.queue.job(name)
        history = job.history if job else (folder.read_history() if folder.file("history.csv").is_file() else [])
        return {"run": name, "config": folder.read_config().to_dict(), "history": history}

    @app.post("/api/runs/{name}/stop")
    async def stop(name: str) -> dict[str, Any]:
        """Stop a run after its epoch under way (it stays resumable), or take it out of the queue."""
        run_name_or_404(lab, name)
        job = lab.queue.stop(name)
        if job is None:
            raise Conflict(f"{name}: neither training nor waiting; nothing to stop")
        return {"job": job.public()}

    @app.post("/api/runs/{name}/resume", status_code=202)
    async def resume(name: str) -> dict[str, Any]:
        job = lab.resume(name)
        return {"job": job.public(), "position": lab.queue.position(job)}

    @app.get("/api/runs/{name}/inspect")
    async def inspect(name: str) -> dict[str, Any]:
        """Test scores, confusion matrix, most confident mistakes and layers of the run's model."""
        return await anyio.to_thread.run_sync(lab.models.inspection, lab.finished_run(name))

    @app.get("/api/runs/{name}/weights")
    async def weights(name: str) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(lab.models.weights, lab.finished_run(name))

    @app.post("/api/runs/{name}/draw")
    async def draw(name: str, request: Request) -> JSONResponse:
        """A drawing read by the run's model: probabilities and each layer's activations."""
        folder = lab.finished_run(name)
        data = parse_data_url_json(await read_body(request, MAX_BODY_BYTES))
        # A drawing is small and the model loaded: answered here, on the event loop, in about a millisecond.
        predictor = lab.models.cached(folder) or await anyio.to_thread.run_sync(lab.models.predictor, folder)
        # As the run's data set was made; the activations are of one input, so a drawing is read whole.
        image = read_number(predictor, "drawing", data, one_digit=True)[0].pixels
        return JSONResponse(drawing_answer(predictor, image))

    return app


def run_name_or_404(lab: Lab, name: str) -> None:
    """NoSuchRun unless a run of this name is in the folder or in the queue."""
    if lab.queue.job(name) is None:
        run_dir(lab.runs_dir, name)


async def event_stream(lab: Lab):
    """The text of a server-sent event stream: the lab's state, then every event until the lab closes."""
    queue = lab.events.listen()  # before the state is read, so that no event falls between the two
    try:
        yield server_sent(lab.state())
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return
            yield server_sent(event)
    finally:
        lab.events.leave(queue)


def server_sent(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event)}\n\n"


class TokenCheck:
    """Refuses (401) every request that does not carry the lab's token: `Authorization: Bearer TOKEN`, or a
    `token` query parameter (for the page's own links, and EventSource, which cannot set headers)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or self._carries_token(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {
                "detail": "missing or wrong token: open the lab at the address it printed, with "
                "?token=..., or send the header Authorization: Bearer TOKEN"
            },
            status_code=401,
        )
        await response(scope, receive, send)

    def _carries_token(self, scope: dict) -> bool:
        headers = dict(scope.get("headers") or [])
        offered = []
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            offered.append(credentials.strip())
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        offered += [value.encode() for value in query.get("token", [])]
        return any(hmac.compare_digest(value, self.token) for value in offered)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address: 127.0.0.0/8, ::1 or localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


class LabServer(uvicorn.Server):
    """uvicorn, ending the lab's event streams when asked to stop (it waits for open responses to end)."""

    def __init__(self, config: uvicorn.Config, lab: Lab) -> None:
        super().__init__(config)
        self.lab = lab

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.lab.events.publish(None)
        super().handle_exit(sig, frame)


def run_lab(
    runs_dir: str | os.PathLike = "runs",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    limits: LabLimits = LabLimits(),
    data_dir: str | os.PathLike | None = None,
) -> None:
    """Serve the lab until Ctrl-C; a run training then saves its epoch under way and stays resumable."""
    if not is_loopback(host) and not token:
        raise DigitnetError(
            f"--host {host} lets other machines reach the lab and train on this one; "
            "give --token SECRET too (every request must then carry it), or use --host 127.0.0.1"
        )
    if not 0 <= port <= 65535:
        raise DigitnetError(f"port: got {port}; allowed: 1 to 65535, or 0 for any free port")
    runs_dir = Path(runs_dir)
    if runs_dir.exists() and not runs_dir.is_dir():
        raise DigitnetError(f"{runs_dir}: is a file, not a folder; give the folder of run folders")
    listener = listen_socket(host, port)
    port = listener.getsockname()[1]
    lab = Lab(runs_dir, limits, data_dir=data_dir)
    app = create_app(lab, token)
    lab.start()
    # JAX, Keras and the web stack leave many long-lived objects; frozen, the garbage collector never scans them
    # again, which would pause every request (see serve.loaded_app).
    gc.collect()
    gc.freeze()
    address = url(host, port) + "/" + (f"?token={urllib.parse.quote(token, safe='')}" if token else "")
    print(f"digitnet: lab on {address} over {runs_dir}/ (Press CTRL+C to quit)", file=sys.stderr, flush=True)
    with listener, saves_on_ctrl_c(), contextlib.suppress(KeyboardInterrupt):
        try:
            LabServer(uvicorn.Config(app, host=host, port=port, **UVICORN_OPTIONS), lab).run(sockets=[listener])
        finally:
            stopping = lab.queue.current
            lab.close()
            if stopping is not None:
                print(f"digitnet: {stopping.name}: {stop_message(stopping, runs_dir)}", file=sys.stderr)


def stop_message(job: Job, runs_dir: Path) -> str:
    """What became of the run training when the lab was stopped."""
    if job.state in ("stopped", "finished", "failed"):
        return job.message or job.state
    if not job.history:
        return "stopped in its first epoch, before anything was saved"
    return (
        f"stopped in epoch {job.epoch}; epochs 1-{len(job.history)} are saved; continue it in the lab or with: "
        f"digitnet train --resume {runs_dir / job.name}"
    )

"""The web server: a drawing page at / and a JSON API that reads digits (or clothes) with a loaded Predictor."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import io
import itertools
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from importlib import resources
from typing import Any

import anyio
import jax
import numpy as np
import threadpoolctl
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from digitnet.errors import DigitnetError
from digitnet.images import ImageError
from digitnet.internals import uvicorn_hands_connections, uvicorn_protocol_factory
from digitnet.interrupts import saves_on_ctrl_c
from digitnet.machine import available_cores
from digitnet.predict import Predictor, encode_png, reading
from digitnet.run import model_file
from digitnet.segment import Digit

# A 280x280 canvas PNG is 3-20 kB and a phone photo of a digit a few MB; anything larger is refused
# before it is read, so one client cannot make the server hold much memory.
MAX_BODY_BYTES = 5 * 1024 * 1024
# Images up to this many pixels (the page's canvas has 78,400) are preprocessed on the event loop.
INLINE_MAX_PIXELS = 512 * 512
# No access log: a line per request, hundreds a second, costs CPU.
UVICORN_OPTIONS = {"access_log": False, "log_level": "info"}
CANVAS_NAME = "canvas"  # the file name reported for images sent as a JSON data URL
USAGE = 'send multipart/form-data with the image in field "file", or JSON {"image": "data:image/png;base64,..."}'

log = logging.getLogger("digitnet.serve")


def create_app(predictor: Predictor, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI application serving one loaded predictor."""
    # The multipart parser logs each malformed body as a bare line before raising the same error, which
    # the client gets back as a 400 with that message: in the server's log it is only noise.
    logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)
    # No /docs: FastAPI's interactive docs load their scripts from a CDN, and this server works offline.
    app = FastAPI(title="digitnet", summary="Reads handwritten digits", docs_url=None, redoc_url=None)
    page = resources.files("digitnet").joinpath("static", "index.html").read_text()
    description = predictor.describe()
    app.mount("/static", StaticFiles(packages=[("digitnet", "static")]), name="static")
    app.add_exception_handler(Exception, internal_error)
    # One photo per core at a time: each may take a second and a few hundred MB once decoded, so a burst
    # of them queues here instead of filling the memory.
    photo_limiter = anyio.CapacityLimiter(available_cores())
    read_drawing = BatchedReader(predictor)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        """The drawing page."""
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: answers as soon as the model is loaded, which happens before the server listens."""
        return {"status": "ok"}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The served network: layers, parameter count, test accuracy, data set and class names."""
        return description

    @app.post("/predict")
    async def predict(request: Request, one_digit: bool = False) -> JSONResponse:
        """The digits (or the piece of clothing) in an uploaded image or a canvas data URL, as `digitnet predict
        --json` gives them, each with "preprocessed": the 28x28 image the network saw, as a PNG data URL.
        `?one_digit=true` reads the image as one digit, without splitting its ink."""
        body = await read_body(request, max_body_bytes)
        name, data = await parse_image_request(request, body)
        # Drawings are small: reading them on the event loop saves the hand-off to a worker thread (about
        # 0.5 ms of CPU a request). A photo can take a second, so it goes to a worker thread instead and
        # the other clients are not kept waiting.
        if is_small_image(data):
            return JSONResponse(await read_drawing(name, data, one_digit))
        result = await anyio.to_thread.run_sync(predict_image, predictor, name, data, one_digit, limiter=photo_limiter)
        return JSONResponse(result)

    return app


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 if its declared or actual size is over max_bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise HTTPException(400, f"invalid Content-Length {declared!r}")
    if declared is not None and int(declared) > max_bytes:
        raise HTTPException(413, f"request body over the {max_bytes:,}-byte limit (Content-Length: {declared})")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:  # a chunked or lying client: count what actually arrives
                raise HTTPException(413, f"request body over the {max_bytes:,}-byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def parse_image_request(request: Request, body: bytes) -> tuple[str, bytes]:
    """(file name, image bytes) from a multipart upload or a JSON data URL; 4xx for anything else."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await parse_upload(request, body)
    if content_type == "application/json":
        return CANVAS_NAME, parse_data_url_json(body)
    raise HTTPException(415, f"unsupported content type {content_type or '(none)'!r}: {USAGE}")


async def parse_upload(request: Request, body: bytes) -> tuple[str, bytes]:
    """The file in the "file" field of a multipart body already read into memory."""

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    except StarletteHTTPException as err:  # Starlette's own 400 for a malformed multipart body
        raise HTTPException(400, f"malformed multipart body: {err.detail}") from None
    except Exception as err:  # python-multipart reports malformed bodies with several exception types
        raise HTTPException(400, f"malformed multipart body: {err}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, f'no file in field "file": {USAGE}')
    return upload.filename or "upload", await upload.read()


def parse_data_url_json(body: bytes) -> bytes:
    """The image bytes of a JSON body {"image": "data:image/...;base64,..."} (a bare base64 string works too)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise HTTPException(400, f"malformed JSON: {err}") from None
    image = payload.get("image") if isinstance(payload, dict) else None
    if not isinstance(image, str):
        raise HTTPException(400, f'no string field "image" in the JSON body: {USAGE}')
    if image.startswith("data:"):
        header, comma, image = image.partition(",")
        if not comma or not header.endswith(";base64"):
            raise HTTPException(400, 'the "image" data URL must look like data:image/png;base64,...')
    try:
        return base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError) as err:
        raise HTTPException(400, f'the "image" field is not valid base64: {err}') from None


def is_small_image(data: bytes) -> bool:
    """Whether an encoded image has at most INLINE_MAX_PIXELS pixels, from its header alone."""
    try:
        width, height = Image.open(io.BytesIO(data)).size  # reads the header, decodes nothing
    except Exception:  # not an image at all: preprocessing will refuse it at once
        return True
    return width * height <= INLINE_MAX_PIXELS


class BatchedReader:
    """Reads the drawings whose requests one turn of the event loop made ready, stage by stage: each one's
    preprocessing, then one forward pass for all, then each answer.

    Under load several requests are ready at each turn. Running each stage over all of them keeps its
    code in the CPU's caches: a forward pass between two preprocessings costs several times what it costs in
    a tight loop, whatever the network's size, so the time is not in the arithmetic (docs/serve-speed.md).
    """

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self._waiting: list[tuple[str, bytes, asyncio.Future]] = []

    async def __call__(self, name: str, data: bytes, one_digit: bool = False) -> dict[str, Any]:
        """The /predict answer for one encoded drawing; HTTPException 422 if it cannot be read."""
        future = asyncio.get_running_loop().create_future()
        if not self._waiting:  # the first of this turn: the batch runs after the requests already ready
            future.get_loop().call_soon(self._run)
        self._waiting.append((name, data, one_digit, future))
        return await future

    def _run(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            self._read(waiting)
        except Exception as err:  # a bug: each request still waiting answers 500 with it, none hangs
            for *_, future in waiting:
                settle(future, error=err)

    def _read(self, waiting: list[tuple[str, bytes, bool, asyncio.Future]]) -> None:
        readable = []
        for name, data, one_digit, future in waiting:
            try:
                readable.append((name, read_number(self._predictor, name, data, one_digit), future))
            except HTTPException as err:  # this drawing cannot be read: 422 for it alone
                settle(future, error=err)
        if readable:
            digits = [digit for _, number, _ in readable for digit in number]
            probabilities = iter(self._predictor.predict_arrays(np.stack([digit.pixels for digit in digits])))
            for name, number, future in readable:
                settle(future, result=answer(self._predictor, name, number, [next(probabilities) for _ in number]))


def settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    """Give a waiting request its result or error, unless it was cancelled (its client went away)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def read_number(predictor: Predictor, name: str, data: bytes, one_digit: bool = False) -> list[Digit]:
    """The inputs of an encoded image as the predictor's network reads them (digits, left to right); 422 if it
    cannot be read."""
    try:
        return predictor.read(data, one_digit)
    except ImageError as err:
        raise HTTPException(422, f"{name}: {err}") from None
    except Exception as err:  # any other failure to decode arbitrary bytes is still the input's fault
        log.warning("cannot preprocess %s: %r", name, err)
        raise HTTPException(422, f"{name}: cannot read this image ({type(err).__name__})") from None


def answer(predictor: Predictor, name: str, digits: list[Digit], probabilities: list[np.ndarray]) -> dict[str, Any]:
    """The /predict answer: `digitnet predict --json`'s object, with each digit's 28x28 image as a PNG data URL."""
    urls = ["data:image/png;base64," + base64.b64encode(encode_png(digit.pixels)).decode("ascii") for digit in digits]
    return reading(name, digits, probabilities, urls, predictor.classes, number=predictor.reads_numbers)


def predict_image(predictor: Predictor, name: str, data: bytes, one_digit: bool = False) -> dict[str, Any]:
    """The /predict answer for one encoded image, computed on the calling thread (photos: a worker thread)."""
    digits = read_number(predictor, name, data, one_digit)
    return answer(predictor, name, digits, list(predictor.predict_arrays(np.stack([digit.pixels for digit in digits]))))


async def internal_error(request: Request, err: Exception) -> JSONResponse:
    """Last resort: log the bug and answer JSON; the server keeps running."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=err)
    return JSONResponse({"detail": f"internal error ({type(err).__name__})"}, status_code=500)


def run_server(model: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Load the model once per worker process, then serve it with uvicorn until interrupted."""
    if workers < 1:
        raise DigitnetError(f"workers: got {workers}; give a whole number >= 1")
    if not 0 <= port <= 65535:
        raise DigitnetError(f"port: got {port}; allowed: 1 to 65535, or 0 for any free port")
    if workers > 1 and not hasattr(socket, "send_fds"):
        raise DigitnetError(
            "--workers above 1 needs Unix sockets that pass connections between processes; use --workers 1 here"
        )
    model_file(model)  # a missing model is one error here, not one per worker
    listener = listen_socket(host, port)  # bound before the model loads: a busy port fails fast
    port = listener.getsockname()[1]  # the one the system chose, for --port 0
    if workers == 1:
        with listener:  # closed also when the model fails to load
            app = loaded_app(model)
            print(f"digitnet: serving on {url(host, port)} (Press CTRL+C to quit)", file=sys.stderr, flush=True)
            # uvicorn shuts down gracefully on Ctrl-C, then raises the signal again for the handler it found; in
            # this block the `digitnet` command's handler makes that a KeyboardInterrupt, which ends here, instead
            # of exiting at once with code 130: a server stopped by Ctrl-C exits 0, as with --workers above 1.
            with saves_on_ctrl_c(), contextlib.suppress(KeyboardInterrupt):
                uvicorn.Server(uvicorn.Config(app, host=host, port=port, **UVICORN_OPTIONS)).run(sockets=[listener])
        return
    if uvicorn_hands_connections():
        run_handing_workers(model, listener, host, port, workers)
    else:  # uvicorn's public API only: the workers share the listening socket, as uvicorn's own --workers do
        run_sharing_workers(model, listener, host, port, workers)


def run_handing_workers(model: str | os.PathLike, listener: socket.socket, host: str, port: int, workers: int) -> None:
    """Serve with `workers` processes, this one accepting every connection and handing each worker one in turn.

    That is how Node.js's cluster spreads connections: 32 keep-alive clients make 16 per worker. With one socket
    per worker on the port (SO_REUSEPORT) the kernel spreads them by a hash of their addresses, unevenly; with one
    socket shared by all, whichever worker wakes first accepts a whole burst (docs/serve-speed.md).
    """
    channels = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(workers)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=serve_worker, args=(os.fspath(model), theirs)) for _, theirs in channels]
    for process in processes:
        process.start()
    for _, theirs in channels:
        theirs.close()  # the worker has its own copy
    print(
        f"digitnet: {workers} worker processes serving on {url(host, port)} (Press CTRL+C to quit)",
        file=sys.stderr,
        flush=True,
    )
    with listener:
        listener.listen(2048)  # uvicorn's default backlog
        listener.setblocking(False)
        ended = hand_out_connections(
            listener, [ours for ours, _ in channels], [process.sentinel for process in processes]
        )
    for ours, _ in channels:
        ours.close()  # a worker that reads the end of its channel stops taking connections
    end_workers(processes, ended)


def run_sharing_workers(model: str | os.PathLike, listener: socket.socket, host: str, port: int, workers: int) -> None:
    """Serve with `workers` processes that all accept from one listening socket (uvicorn's public API only)."""
    context = multiprocessing.get_context("spawn")
    with listener:
        listener.listen(2048)
        processes = [
            context.Process(target=serve_shared_socket, args=(os.fspath(model), listener)) for _ in range(workers)
        ]
        for process in processes:
            process.start()
    print(
        f"digitnet: {workers} worker processes serving on {url(host, port)} (Press CTRL+C to quit)",
        file=sys.stderr,
        flush=True,
    )
    end_workers(processes, hand_out_connections(None, [], [process.sentinel for process in processes]))


def end_workers(processes: list[multiprocessing.process.BaseProcess], ended: list[int]) -> None:
    """Stop the workers once one ended or Ctrl-C came; a DigitnetError if one had failed."""
    for process in processes:
        if process.sentinel in ended:
            process.join()  # its exit code is known only once it is reaped
    failed = [process.exitcode for process in processes if process.sentinel in ended and process.exitcode != 0]
    stop_workers(processes)
    if failed:
        raise DigitnetError(f"a server worker stopped with exit code {failed[0]}; its message is above")


def hand_out_connections(
    listener: socket.socket | None, channels: list[socket.socket], sentinels: list[int]
) -> list[int]:
    """Accept connections and pass each to the next worker's channel in turn, until a worker ends (its
    sentinels that are ready are returned) or Ctrl-C or SIGTERM arrives ([]). With no listener, only wait."""
    turn = itertools.cycle(channels)
    # The handler only writes a byte that wakes the wait; it raises nothing. A KeyboardInterrupt can be
    # swallowed ("Exception ignored in ...") when it fires inside a garbage-collection callback, as JAX
    # registers one, and then the workers would never be stopped.
    reader, writer = os.pipe()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda *_: os.write(writer, b"!")) for number in signals}
    try:
        while True:
            ready = multiprocessing.connection.wait([*([listener] if listener else []), *sentinels, reader])
            if listener is None or reader in ready or len(ready) > 1 or listener not in ready:
                return [item for item in ready if item in sentinels]
            with contextlib.suppress(BlockingIOError):  # until the burst of connections waiting is taken
                while True:
                    connection, _ = listener.accept()
                    # The worker holds its own copy once sent. OSError: a worker that just ended, whose sentinel
                    # shows at the next wait.
                    with connection, contextlib.suppress(OSError):
                        socket.send_fds(next(turn), [b"c"], [connection.fileno()])
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        os.close(reader)
        os.close(writer)


def serve_worker(model: str, channel: socket.socket) -> None:
    """One of several server processes: load the model, then serve the connections handed to it on `channel`."""
    try:
        app = loaded_app(model)
        HandedConnectionsServer(uvicorn.Config(app, **UVICORN_OPTIONS), channel).run(sockets=[])
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal's group, this one included
        pass


def serve_shared_socket(model: str, listener: socket.socket) -> None:
    """One of several server processes accepting from one listening socket: load the model, then serve."""
    try:
        uvicorn.Server(uvicorn.Config(loaded_app(model), **UVICORN_OPTIONS)).run(sockets=[listener])
    except KeyboardInterrupt:
        pass


class HandedConnectionsServer(uvicorn.Server):
    """A uvicorn server that listens on no socket of its own: it serves the connections another process
    accepted and sent it over a Unix socket (SCM_RIGHTS), each as uvicorn serves one it accepted itself."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        self.protocol = uvicorn_protocol_factory(self)
        self.channel.setblocking(False)
        asyncio.get_running_loop().add_reader(self.channel.fileno(), self.take_connections)

    def take_connections(self) -> None:
        """Serve each connection waiting on the channel; once the supervising process closed it, stop."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.channel, 1, 1)
            except BlockingIOError:
                return
            if not message:  # the supervisor has gone: no more connections will come
                loop.remove_reader(self.channel.fileno())
                self.should_exit = True
                return
            for fd in fds:
                loop.create_task(self.serve_connection(socket.socket(fileno=fd)))

    async def serve_connection(self, connection: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self.protocol, connection)
        except OSError:  # the client went away before it was served
            connection.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        with contextlib.suppress(ValueError, OSError):  # already removed, or the channel closed
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
        await super().shutdown(sockets)


def loaded_app(model: str | os.PathLike) -> FastAPI:
    """The app with its model loaded, and all that loading made kept out of the garbage collector's scans."""
    app = create_app(load_predictor(model))
    # Keras, JAX and the model leave some 300,000 long-lived objects, and a full collection scans them all
    # while every request in flight waits. Frozen, they are never scanned again; each request's own garbage
    # still is, by the cheap young-generation collections.
    gc.collect()
    gc.freeze()
    return app


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port to listen on; a port in use or a bad host is a DigitnetError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart at once after a stop
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as err:
        sock.close()
        reason = getattr(err, "strerror", None) or err
        raise DigitnetError(f"cannot listen on {host}:{port}: {reason}; choose another --port or --host") from None
    return sock


def stop_workers(processes: list[multiprocessing.process.BaseProcess], timeout: float = 10.0) -> None:
    """Let the workers finish as on Ctrl-C (which a terminal sends them too), then end any that remain."""
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(0.5)  # those that got Ctrl-C from the terminal are already shutting down
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0))
        if process.is_alive():
            process.kill()
            process.join()


def load_predictor(model: str | os.PathLike) -> Predictor:
    """The model's Predictor, set up for one request at a time."""
    # For a network that goes through XLA (one the NumPy forward pass does not know): one image through a
    # small MLP takes microseconds, and computing it on the calling thread is cheaper than XLA's default
    # hand-off to its own thread, the more so on a busy machine. The setting applies to the CPU backend JAX
    # creates next, so it comes first.
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    # A worker is one core's worth of server: BLAS threads of its own for an (N, 784) x (784, H) product
    # would only contend with the other workers.
    threadpoolctl.threadpool_limits(1, user_api="blas")
    return Predictor.load(model)

"""Load test of `digitnet serve`: many clients posting canvas drawings to /predict on loopback.

Starts the server as a subprocess on a free 127.0.0.1 port, fires a bounded load of 280x280 PNGs such as the
drawing page sends (MNIST test digits, scaled up tenfold, white on black, RGBA, as JSON data URLs), prints
throughput and latency, and stops the server. The client shares the machine's cores with the server, so the
figures are a lower bound on what the server alone can do.

By default each client sends its next request as soon as it has its answer (a closed loop): the server runs
flat out, and the latency is mostly the queue, 32 clients over the throughput (Little's law). With --rate R
the 32 clients instead send R requests a second between them on a fixed schedule (each client every 32/R
seconds, staggered; an open loop, as wrk2 and k6's constant-arrival-rate measure), and each latency is
counted from the moment its request was due, not from when it went out: a client still waiting for its
previous answer sends late, and the lateness counts, so a server slower than R cannot hide it.

Each client holds one keep-alive HTTP/1.1 connection (as wrk and wrk2 do) and writes prepared requests on it,
so that the client, which shares the machine's cores with the server it measures, takes little of them: the
bench prints the CPU time each side spent per request. Every answer is checked: a status other than 200, or a
JSON body without a digit label, counts as an error; the labels are compared with the drawn digits' own.

With --anchor, the same load also goes to the plain FastAPI app a Keras user writes first, serving the same
model (Pillow's resize to 28x28, `model.predict` per request, no preprocessing: the bench's canvases are MNIST
digits scaled up, which a resize brings back, so its answers are right here as they are not on real drawings;
it is a speed reference); the two servers take turns, --rounds times each, and the bench prints the
ratios of each round.

    python bench/bench_serve.py runs/RUN [--clients 32] [--requests 10000] [--max-seconds 30] [--workers 1]
                                         [--rate R] [--anchor [--rounds 2]] [--record docs/speed.md]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from record import add_record_option, append_record, markdown_table  # bench/record.py

from digitnet.data import load_mnist
from digitnet.run import model_file

CANVAS_SIZE = 280  # px, the drawing page's canvas
# The anchor: a first FastAPI app around a Keras model, as its tutorials show it. (No access log, as in
# digitnet's server: a line per request would cost both the same CPU and flood the bench's output. And an
# async endpoint: as a plain def, FastAPI runs it in a thread pool, and Keras' model.predict called from
# several threads at once fails: half the requests of a trial run got HTTP 500.)
ANCHOR_APP = """
import base64, io, os, sys
os.environ["KERAS_BACKEND"] = "jax"
import keras, numpy as np, uvicorn
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel

model = keras.saving.load_model(sys.argv[1])
app = FastAPI()

class Drawing(BaseModel):
    image: str

@app.get("/healthz")
async def healthz():
    return {"status": "ok"}

@app.post("/predict")
async def predict(drawing: Drawing):  # async: a plain def would call model.predict from many threads at once
    png = base64.b64decode(drawing.image.split(",", 1)[1])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L").resize((28, 28)), np.float32) / 255.0
    probabilities = model.predict(pixels.reshape(1, 784), verbose=0)[0]
    return {"label": int(probabilities.argmax()), "probability": float(probabilities.max()),
            "probabilities": probabilities.tolist()}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=False)
"""
STARTUP_TIMEOUT_S = 120.0  # loading JAX, Keras and the model takes seconds, more on a busy machine


def parse_args() -> argparse.Namespace:
    """The command line: which model, and how much load."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("model", help="training run folder or .keras file to serve")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients, each with its own connection")
    parser.add_argument("--requests", type=int, default=10_000, help="requests in the measured run")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop the measured run after this long")
    parser.add_argument("--warmup", type=int, default=200, help="requests sent before measuring")
    parser.add_argument("--images", type=int, default=100, help="distinct MNIST test digits to draw from")
    parser.add_argument(
        "--data-dir", default=None, help="folder with the MNIST IDX files (default: DIGITNET_DATA or the cache)"
    )
    parser.add_argument(
        "--canvas-size", type=int, default=280, help="side of the PNGs sent, pixels (the page's canvas is 280)"
    )
    parser.add_argument("--upload", action="store_true", help="send multipart file uploads instead of JSON data URLs")
    parser.add_argument("--workers", type=int, default=1, help="server processes (digitnet serve --workers)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help=(
            "requests per second the clients send between them on a fixed schedule (default: each as soon as answered)"
        ),
    )
    parser.add_argument(
        "--anchor", action="store_true", help="also load the plain FastAPI app (one process) and compare"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="with --anchor: alternate the two servers this many times each"
    )
    add_record_option(parser)
    return parser.parse_args()


def canvas_png(digit: np.ndarray, size: int = CANVAS_SIZE) -> bytes:
    """A 28x28 MNIST digit as the page's canvas would send it: an RGBA PNG, white on black, scaled up."""
    grey = Image.fromarray(digit).resize((size, size), Image.BILINEAR)
    buffer = io.BytesIO()
    grey.convert("RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def make_requests(digits: np.ndarray, port: int, upload: bool, size: int = CANVAS_SIZE) -> list[bytes]:
    """For each digit, the whole HTTP request posting its canvas to /predict: a JSON data URL, or a multipart upload."""
    requests = []
    for i, digit in enumerate(digits):
        png = canvas_png(digit, size)
        if upload:
            boundary = "digitnet-bench-boundary"
            body = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digit{i}.png"\r\n'
                    f"Content-Type: image/png\r\n\r\n"
                ).encode()
                + png
                + f"\r\n--{boundary}--\r\n".encode()
            )
            content_type = f"multipart/form-data; boundary={boundary}"
        else:
            body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()
            content_type = "application/json"
        head = (
            f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


class Connection:
    """One client's keep-alive HTTP/1.1 connection to the server, sending prepared requests one at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, request: bytes) -> tuple[int, bytes]:
        """Send one request and read its answer: (status, body). Raises OSError or asyncio errors on failure."""
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])  # b"HTTP/1.1 200 OK"
            _, found, rest = head.lower().partition(b"\r\ncontent-length:")
            if not found:
                raise ValueError("answer without Content-Length")
            return status, await reader.readexactly(int(rest.split(b"\r\n", 1)[0]))
        except BaseException:
            self.close()  # the next request opens a fresh connection
            raise

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def digitnet_command(model: str, port: int, workers: int) -> list[str]:
    """`digitnet serve` on 127.0.0.1:port."""
    return [
        sys.executable,
        "-m",
        "digitnet",
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def anchor_command(model: str, port: int) -> list[str]:
    """The plain FastAPI app serving the same model on 127.0.0.1:port."""
    return [sys.executable, "-c", ANCHOR_APP, os.fspath(model_file(model)), str(port)]


def start_server(command: list[str], port: int, workers: int) -> subprocess.Popen:
    """A server in a subprocess; returns once each of its workers has loaded the model and /healthz answers."""
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    started = threading.Semaphore(0)
    threading.Thread(target=relay_log, args=(server.stderr, started), daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for _ in range(workers):  # uvicorn logs a startup line per worker once its app (and model) is ready
        if not started.acquire(timeout=max(deadline - time.monotonic(), 0)):
            server.kill()
            raise SystemExit(f"server did not start {workers} worker(s) within {STARTUP_TIMEOUT_S:.0f} s")
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with code {server.returncode} before answering")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1.0):
                return server
        except OSError:  # refused until uvicorn listens
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"server did not answer within {STARTUP_TIMEOUT_S:.0f} s")


def relay_log(stream, started: threading.Semaphore) -> None:
    """Copy the server's log to ours, releasing `started` once per worker that finished starting up."""
    for line in stream:
        sys.stderr.write(line)
        if "Application startup complete" in line:
            started.release()


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) used so far by a process and its child processes; None without /proc."""
    stats = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while /proc was read
            continue
    if pid not in stats:
        return None
    tree, grew = {pid}, True
    while grew:  # `digitnet serve --workers N` runs its workers as child processes
        children = {p for p, fields in stats.items() if int(fields[1]) in tree} - tree
        tree |= children
        grew = bool(children)
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree)  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def stop_server(server: subprocess.Popen) -> None:
    """Ask uvicorn to shut down as on Ctrl-C; kill it if it does not."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def fire(
    port: int,
    requests: list[bytes],
    labels: np.ndarray,
    n_requests: int,
    n_clients: int,
    max_seconds: float,
    rate: float | None = None,
) -> dict:
    """Send n_requests from n_clients concurrent clients (or stop at max_seconds).

    Without a rate, each client sends again as soon as it has its answer. With one, request k is due
    k / rate seconds after the start, client k % n_clients sends it, and its latency counts from then.
    Returns the latencies (s), the errors by kind (HTTP status or exception name), the wall time (s) and
    how many answers named the drawn digit's label.
    """
    latencies: list[float] = []
    errors: Counter = Counter()
    right = 0
    next_index = 0

    async def send(connection: Connection, index: int, due: float) -> None:
        nonlocal right
        try:
            async with asyncio.timeout(10):
                status, body = await connection.post(requests[index % len(requests)])
            if status != 200:
                errors[f"HTTP {status}"] += 1
            else:
                right += json.loads(body)["label"] == labels[index % len(labels)]
        except (OSError, ValueError, KeyError, TypeError, asyncio.IncompleteReadError, TimeoutError) as err:
            errors[type(err).__name__] += 1
        latencies.append(time.perf_counter() - due)

    async def closed_loop_client() -> None:
        nonlocal next_index
        connection = Connection(port)
        while next_index < n_requests and time.perf_counter() < deadline:
            next_index += 1
            await send(connection, next_index - 1, time.perf_counter())
        connection.close()

    async def scheduled_client(first: int) -> None:
        connection = Connection(port)
        for index in range(first, n_requests, n_clients):
            due = start + index / rate
            if due >= deadline:
                break
            await asyncio.sleep(due - time.perf_counter())  # returns at once when this client is late
            await send(connection, index, due)
        connection.close()

    start = time.perf_counter()
    deadline = start + max_seconds
    if rate is None:
        await asyncio.gather(*(closed_loop_client() for _ in range(n_clients)))
    else:
        await asyncio.gather(*(scheduled_client(i) for i in range(n_clients)))
    return {"latencies": latencies, "errors": errors, "wall_s": time.perf_counter() - start, "right": right}


def measure(
    command: list[str], port: int, workers: int, digits: np.ndarray, labels: np.ndarray, args: argparse.Namespace
) -> dict:
    """Start a server, warm it up, load it, stop it: its latencies, errors, wall time and CPU time per side."""
    requests = make_requests(digits, port, args.upload, args.canvas_size)
    server = start_server(command, port, workers)
    try:
        asyncio.run(fire(port, requests, labels, args.warmup, args.clients, args.max_seconds))
        server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
        result = asyncio.run(fire(port, requests, labels, args.requests, args.clients, args.max_seconds, args.rate))
        server_after = cpu_seconds(server.pid)
        result["cpu_s"] = {
            "server": server_after - server_cpu if server_cpu is not None else None,
            "client": time.process_time() - client_cpu,
        }
    finally:
        stop_server(server)
    return result


def report(
    name: str, latencies: list[float], errors: Counter, wall_s: float, right: int, cpu_s: dict[str, float | None]
) -> None:
    """One block of figures for one server."""
    ms = np.array(latencies) * 1000
    print(f"{name}:")
    kinds = f" ({', '.join(f'{error}: {n}' for error, n in errors.items())})" if errors else ""
    print(
        f"  requests: {len(ms)} in {wall_s:.2f} s = {len(ms) / wall_s:.0f} requests/s, "
        f"errors: {sum(errors.values())}{kinds}, "
        f"answers naming the drawn digit: {100 * right / len(ms):.1f}%"
    )
    print(
        f"  latency ms: p50 {np.percentile(ms, 50):.1f}, p90 {np.percentile(ms, 90):.1f}, "
        f"p99 {np.percentile(ms, 99):.1f}, max {ms.max():.1f}"
    )
    # CPU per request depends far less on other work on the machine than throughput does.
    per_request = ", ".join(f"{who} {1000 * s / len(ms):.2f}" for who, s in cpu_s.items() if s is not None)
    print(f"  CPU ms per request: {per_request}")


def table_row(
    name: str, latencies: list[float], errors: Counter, wall_s: float, right: int, cpu_s: dict[str, float | None]
) -> tuple:
    """The figures of `report` for one server, as the cells of one row of the recorded table."""
    ms = np.array(latencies) * 1000
    per_request = {who: f"{1000 * s / len(ms):.2f} ms" if s is not None else "" for who, s in cpu_s.items()}
    return (
        name,
        f"{len(ms) / wall_s:.0f}",
        *(f"{np.percentile(ms, q):.1f} ms" for q in (50, 90, 99)),
        f"{ms.max():.1f} ms",
        sum(errors.values()),
        f"{100 * right / len(ms):.1f}%",
        per_request.get("server", ""),
        per_request.get("client", ""),
    )


def main() -> None:
    """Start the server, warm it up, measure, stop it."""
    args = parse_args()
    load_before = os.getloadavg()[0]  # other work on the machine, before this bench adds its own
    if args.rate is not None and not args.rate > 0:
        raise SystemExit(f"--rate: got {args.rate:g}; give requests per second above 0, or leave it out")
    if args.anchor and args.upload:
        raise SystemExit("--anchor reads JSON data URLs only; leave out --upload")
    mnist = load_mnist(args.data_dir)
    digits, labels = mnist.test_images[: args.images], mnist.test_labels[: args.images]
    results: list[tuple[str, dict]] = []
    for _ in range(args.rounds if args.anchor else 1):  # alternating, so a drift in the machine's speed hits both
        port = free_port()
        command = digitnet_command(args.model, port, args.workers)
        results.append(
            (f"digitnet serve --workers {args.workers}", measure(command, port, args.workers, digits, labels, args))
        )
        if args.anchor:
            port = free_port()
            results.append(
                ("plain FastAPI app (anchor)", measure(anchor_command(args.model, port), port, 1, digits, labels, args))
            )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, 1-minute load average before the bench "
        f"{load_before:.2f}; python {platform.python_version()}"
    )
    kind = "multipart uploads" if args.upload else "JSON data URLs"
    pace = (
        f"{args.rate:g} requests/s between them on a fixed schedule, latency from each request's due time"
        if args.rate
        else "each sending again as soon as answered"
    )
    load = f"load: {args.clients} clients, {kind} of {args.canvas_size}x{args.canvas_size} canvas PNGs, {pace}"
    print(load)
    for name, result in results:
        report(name, **result)
    ratios = []
    if args.anchor:
        for round_, ((_, mine), (_, anchor)) in enumerate(zip(results[::2], results[1::2]), start=1):
            rate = [len(r["latencies"]) / r["wall_s"] for r in (mine, anchor)]
            p99 = [np.percentile(r["latencies"], 99) for r in (mine, anchor)]
            ratios.append(
                f"round {round_}, digitnet / anchor: {rate[0] / rate[1]:.2f}x the requests per second, "
                f"{p99[0] / p99[1]:.2f}x the p99 latency"
            )
            print(ratios[-1])
    if args.record:
        rounds = args.anchor and args.rounds > 1
        rows = [
            table_row(f"{name}, round {i // 2 + 1}" if rounds else name, **result)
            for i, (name, result) in enumerate(results)
        ]
        table = markdown_table(
            [
                "server",
                "requests/s",
                "p50",
                "p90",
                "p99",
                "max",
                "errors",
                "right answers",
                "server CPU per request",
                "client CPU per request",
            ],
            rows,
        )
        append_record(
            args.record,
            [
                f"{load[0].upper()}{load[1:]}; 1-minute load average {load_before:.2f} before the bench.",
                table,
                *(["\n".join(f"- {line}" for line in ratios)] if ratios else []),
            ],
        )


if __name__ == "__main__":
    main()

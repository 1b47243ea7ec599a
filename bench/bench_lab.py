"""The lab's two speed targets, measured against a real `digitnet lab` server in a subprocess on loopback.

1. From pressing Train on 784-128-10 (batch 128, all of MNIST) to the first epoch's point reaching the page,
   with the run's programs in XLA's compilation cache (a first, identical run fills it); then each later
   point's delay after its epoch ended, as the server stamps that moment (`epoch_ended`, on the same clock).
   Target: under 3 s, and within 0.3 s.
2. While such a run trains, drawings sent from another process, one after another, as the page sends them (a
   280x280 PNG data URL of an MNIST test digit) to the first run's model: p50 and p95 of the time to each
   answer (probabilities and activations), and the same with nothing training. Target: p95 under 100 ms.

The server and the clients share the machine's cores, as a page and the lab do on a laptop.

    python bench/bench_lab.py [--epochs 5] [--draws 300] [--data-dir DIR] [--keep RUNS_DIR] [--record docs/lab.md]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image
from record import add_record_option, append_record, markdown_table  # bench/record.py

NETWORK = {"hidden": [128], "batch_size": 128, "activation": "relu", "optimizer": "adam"}  # the network
STARTUP_TIMEOUT_S = 120.0  # importing JAX, Keras and loading MNIST take seconds, more on a busy machine
CANVAS_SIZE = 280  # px, the page's drawing pad


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each measured run")
    parser.add_argument("--draws", type=int, default=300, help="drawings sent in each latency measurement")
    parser.add_argument(
        "--data-dir", default=None, help="folder with the MNIST IDX files (default: DIGITNET_DATA or the cache)"
    )
    parser.add_argument(
        "--keep", default=None, metavar="RUNS_DIR", help="train into this folder and keep it (default: a temporary one)"
    )
    parser.add_argument("--draw-client", nargs=3, metavar=("URL", "RUN", "N"), help=argparse.SUPPRESS)
    add_record_option(parser)
    return parser.parse_args()


# ---------------------------------------------------------------- the server and its events


def start_lab(runs_dir: Path, data_dir: str | None) -> tuple[subprocess.Popen, str]:
    """`digitnet lab` on a free loopback port; returns once it answers, with its address."""
    command = [sys.executable, "-m", "digitnet", "lab", str(runs_dir), "--port", "0"]
    if data_dir:
        command += ["--data-dir", data_dir]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for line in server.stderr:
        found = re.search(r"lab on (http://\S+?)/ ", line)
        if found:
            threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()  # keep draining
            while time.monotonic() < deadline:  # the address is printed just before uvicorn starts listening
                try:
                    urllib.request.urlopen(found.group(1) + "/api/state").close()
                    return server, found.group(1)
                except OSError:
                    time.sleep(0.1)
        if time.monotonic() > deadline:
            break
    server.kill()
    raise SystemExit(f"the lab did not start: {server.stderr.read() if server.stderr else ''}")


def post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


class EventLog:
    """The lab's server-sent events, each with the time (time.time()) this process received it."""

    def __init__(self, url: str) -> None:
        self.events: list[tuple[float, dict]] = []
        self._changed = threading.Condition()
        self._stream = urllib.request.urlopen(url + "/api/events")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self._stream:
            line = raw.decode().strip()
            if line.startswith("data: "):
                with self._changed:
                    self.events.append((time.time(), json.loads(line.removeprefix("data: "))))
                    self._changed.notify_all()

    def wait_for(self, test, timeout: float = 600.0) -> tuple[float, dict]:
        """The first event (received time, event) for which test(event), waiting for it if need be."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for item in self.events:
                    if test(item[1]):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit("timed out waiting for the lab's events")
                self._changed.wait(left)

    def ended(self, run: str) -> bool:
        return any(event["type"] == "end" and event["job"]["run"] == run for _, event in self.events)


def train(url: str, events: EventLog, epochs: int) -> tuple[str, float, list[tuple[float, dict]]]:
    """Queue the measured network and wait for its end: its name, when Train was pressed, its epoch events."""
    pressed = time.time()
    run = post(url, "/api/train", {**NETWORK, "epochs": epochs})["job"]["run"]
    end = events.wait_for(lambda e: e["type"] == "end" and e["job"]["run"] == run)[1]
    if end["job"]["state"] != "finished":
        raise SystemExit(f"{run}: {end['job']['state']}: {end['job']['message']}")
    return run, pressed, [(t, e) for t, e in events.events if e["type"] == "epoch" and e["run"] == run]


# ---------------------------------------------------------------- drawings, from another process


def canvas_json(digit: np.ndarray) -> bytes:
    """The page's /draw body for an MNIST digit: an RGBA PNG, white on black, scaled up to the pad's size."""
    grey = Image.fromarray(digit).resize((CANVAS_SIZE, CANVAS_SIZE), Image.BILINEAR)
    buffer = io.BytesIO()
    grey.convert("RGBA").save(buffer, format="PNG")
    return json.dumps({"image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}).encode()


def draw_client(url: str, run: str, n: int) -> None:
    """The client process: n drawings one after another on one keep-alive connection; prints their latencies."""
    from digitnet.data import load_mnist

    bodies = [canvas_json(digit) for digit in load_mnist().test_images[:50]]
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    latencies = []
    for i in range(n + 10):  # the first ten warm the connection and the model's cache
        started = time.perf_counter()
        connection.request(
            "POST", f"/api/runs/{run}/draw", bodies[i % len(bodies)], {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200 or len(answer["probabilities"]) != 10 or not answer["layers"]:
            raise SystemExit(f"bad answer {response.status}: {answer}")
        if i >= 10:
            latencies.append(time.perf_counter() - started)
    print(json.dumps(latencies))


def drawing_latencies(url: str, run: str, n: int) -> np.ndarray:
    """Seconds to each answer, measured by a client in another process."""
    done = subprocess.run(
        [sys.executable, __file__, "--draw-client", url, run, str(n)], capture_output=True, text=True, check=True
    )
    return np.array(json.loads(done.stdout.splitlines()[-1]))


def milliseconds(seconds: float) -> str:
    return f"{1000 * seconds:.1f} ms"


def main() -> None:
    args = parse_args()
    if args.draw_client:
        url, run, n = args.draw_client
        draw_client(url, run, int(n))
        return
    if args.data_dir:
        os.environ["DIGITNET_DATA"] = args.data_dir
    runs_dir = Path(args.keep or tempfile.mkdtemp(prefix="bench-lab-"))
    server, url = start_lab(runs_dir, args.data_dir)
    try:
        events = EventLog(url)
        warm, _, _ = train(url, events, args.epochs)  # fills the compilation cache with this network's programs
        idle = drawing_latencies(url, warm, args.draws)
        run, pressed, epochs = train(url, events, args.epochs)
        first = epochs[0][0] - pressed
        delays = [received - event["epoch_ended"] for received, event in epochs[1:]]
        # A long run to draw against: the same network for the lab's most epochs, stopped once measured.
        busy_run = post(url, "/api/train", {**NETWORK, "epochs": 200})["job"]["run"]
        events.wait_for(lambda e: e["type"] == "epoch" and e["run"] == busy_run)
        busy = drawing_latencies(url, warm, args.draws)
        still_training = not events.ended(busy_run)
        post(url, f"/api/runs/{busy_run}/stop", {})
    finally:
        server.terminate()
        server.wait(30)
    rows = [
        ["Train pressed to the first epoch's point (cached programs)", f"{first:.2f} s", "< 3 s"],
        [
            "each later point after its epoch's end: mean / max",
            f"{np.mean(delays):.3f} / {np.max(delays):.3f} s",
            "< 0.3 s",
        ],
        [
            "a drawing's answer while a run trains: p50 / p95",
            f"{milliseconds(np.percentile(busy, 50))} / {milliseconds(np.percentile(busy, 95))}",
            "p95 < 100 ms",
        ],
        [
            "a drawing's answer, nothing training: p50 / p95",
            f"{milliseconds(np.percentile(idle, 50))} / {milliseconds(np.percentile(idle, 95))}",
            "",
        ],
    ]
    note = (
        f"784-128-10, batch 128, Adam, all 55,000 training images, {args.epochs} epochs a run "
        f"(epochs of {np.mean([e['row']['seconds'] for _, e in epochs]):.2f} s on average); {args.draws} drawings "
        "(MNIST test digits drawn on a 280x280 canvas) from a client process, one after another"
        + ("" if still_training else "; the long run ended before the drawings did")
    )
    table = markdown_table(["measure", "value", "target"], rows, align="lrr")
    print(note)
    print(table)
    if args.record:
        append_record(args.record, [note, table])


if __name__ == "__main__":
    main()

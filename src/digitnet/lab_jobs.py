"""The lab's training: one run at a time on a worker thread, a queue of those waiting, events for every open page.

Every run is `train_and_evaluate` into an ordinary run folder, told of each stage by a callback that keeps the
job's state (what a page that connects, or reconnects, is shown first) and publishes each change as an event.
The events go to the pages as server-sent events; a page that closes loses nothing, since the run goes on here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitnet.config import TrainConfig
from digitnet.data import ImageSet
from digitnet.errors import DigitnetError
from digitnet.run import RunDir
from digitnet.train import Callback, TrainingStopped, train_and_evaluate

# Above this many steps an epoch lasts seconds (batch size 1 on all of MNIST: 55,000 steps), so the page is told
# of progress inside it. Below it, no: a program that calls back to the host is never taken from XLA's
# compilation cache (the callback's address is part of it), and a short epoch would compile afresh every run.
LONG_EPOCH_STEPS = 2000
PROGRESS_REPORTS = 100  # progress events per long epoch: a smooth bar, and few enough not to load the page
MAX_WAITING = 16  # runs queued behind the one training: more is a mistaken click, not a plan

log = logging.getLogger("digitnet.lab")


class QueueFull(DigitnetError):
    """Too many runs are waiting already."""


class EventHub:
    """Hands every event to each page listening; publish from any thread, listen on the server's event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []

    def publish(self, event: dict[str, Any] | None) -> None:
        """Send an event (stamped with the server's clock, seconds since 1970) to every listener; None ends them."""
        if event is not None:
            event = {**event, "time": time.time()}
        with self._lock:
            listeners = list(self._listeners)
        for loop, queue in listeners:
            with contextlib.suppress(RuntimeError):  # a loop that has closed: its page is gone
                loop.call_soon_threadsafe(queue.put_nowait, event)

    def listen(self) -> asyncio.Queue:
        """A queue that receives every event published from now on; call on the event loop, then `leave` it."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._listeners.append((asyncio.get_running_loop(), queue))
        return queue

    def leave(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._listeners = [(loop, q) for loop, q in self._listeners if q is not queue]


@dataclass
class Job:
    """One run the lab trains or will train: its folder's name, its config, and how far it has got."""

    name: str
    config: TrainConfig
    resume: bool = False
    state: str = "queued"  # queued, starting, training, stopping, then finished, stopped, failed or cancelled
    steps: int = 0  # per epoch, once the network is built
    steps_done: int = 0  # in the epoch under way
    epoch: int = 0  # the epoch under way, or the last one done
    history: list[dict] = field(default_factory=list)  # history.csv's rows so far, resumed epochs included
    message: str = ""  # why it stopped or failed
    stop_requested: bool = False
    epoch_started: float = 0.0  # time.time() when the epoch under way began

    def public(self) -> dict[str, Any]:
        """What the page is told of the job."""
        return {
            "run": self.name,
            "state": self.state,
            "config": self.config.to_dict(),
            "epochs": self.config.epochs,
            "epoch": self.epoch,
            "steps": self.steps,
            "steps_done": self.steps_done,
            "history": list(self.history),
            "message": self.message,
            "seconds_left": self.seconds_left(),
        }

    def seconds_left(self) -> float | None:
        """Time left to the last epoch's end, from the epochs done so far and the steps of the one under way."""
        if self.state not in ("training", "stopping"):
            return None
        recent = [row["seconds"] for row in self.history[-5:]]
        per_epoch = sum(recent) / len(recent) if recent else None
        in_progress = self.epoch > len(self.history)
        in_epoch = time.time() - self.epoch_started if in_progress else 0.0
        if in_progress and self.steps_done and self.steps:  # the epoch under way, extrapolated from its steps
            per_epoch = in_epoch * self.steps / self.steps_done
        if per_epoch is None:
            return None
        later = 0 if self.stop_requested else self.config.epochs - self.epoch
        return max(per_epoch - in_epoch, 0.0) + later * per_epoch


class LabCallback(Callback):
    """Keeps a job's state as training goes and publishes each step of it."""

    def __init__(self, job: Job, publish: Callable[[dict], None], progress_every: int, on_built: Callable[[], None]):
        self.job, self.publish, self.progress_every, self.on_built = job, publish, progress_every, on_built

    @property
    def stop_training(self) -> bool:
        return self.job.stop_requested

    def on_train_begin(self, run: RunDir, config: TrainConfig, steps: int, first_epoch: int) -> None:
        self.on_built()
        job = self.job
        job.config, job.steps, job.epoch = config, steps, first_epoch - 1
        job.history = run.read_history()[: first_epoch - 1] if first_epoch > 1 else []
        job.state = "stopping" if job.stop_requested else "training"
        self.publish({"type": "begin", "job": job.public()})

    def on_epoch_begin(self, epoch: int) -> None:
        self.job.epoch, self.job.steps_done, self.job.epoch_started = epoch, 0, time.time()

    def on_progress(self, steps_done: int) -> None:
        job = self.job
        job.steps_done = steps_done
        self.publish(
            {
                "type": "progress",
                "run": job.name,
                "epoch": job.epoch,
                "steps_done": steps_done,
                "steps": job.steps,
                "seconds_left": job.seconds_left(),
            }
        )

    def on_epoch_end(self, row: dict) -> None:
        job = self.job
        job.history.append(row)
        job.steps_done = job.steps
        # When the epoch's work ended (it began just before its `seconds` were counted): the time from there to
        # the page includes saving the checkpoint and sending the event.
        ended = job.epoch_started + row["seconds"]
        self.publish(
            {
                "type": "epoch",
                "run": job.name,
                "row": row,
                "epochs": job.config.epochs,
                "epoch_ended": ended,
                "seconds_left": job.seconds_left(),
            }
        )

    def on_train_end(self, metrics: dict) -> None:
        self.publish({"type": "evaluated", "run": self.job.name, "metrics": metrics})


def progress_every(config: TrainConfig, data: ImageSet) -> int:
    """Steps between progress events for this config: 0 (none) unless its epochs are long."""
    n_train = len(data.train_labels) - config.val_size
    if config.train_size is not None:
        n_train = min(n_train, config.train_size)
    steps = math.ceil(n_train / config.resolve_batch_size(max(n_train, 1)))
    return steps // PROGRESS_REPORTS if steps >= LONG_EPOCH_STEPS else 0


class TrainingQueue:
    """Trains the submitted jobs one after another, in order, on a worker thread of its own."""

    def __init__(
        self,
        runs_dir: Path,
        data: Callable[[str], ImageSet],
        events: EventHub,
        keras_lock: threading.Lock,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self.runs_dir, self._data, self.events, self._keras_lock = runs_dir, data, events, keras_lock
        self.max_waiting = max_waiting
        self.current: Job | None = None
        self.finished: dict[str, Job] = {}  # the last job of each run this lab trained, for its state and message
        self._waiting: collections.deque[Job] = collections.deque()
        self._wakeup = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="lab-training", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        """Queue a job behind those waiting; QueueFull when MAX_WAITING are waiting already."""
        with self._wakeup:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(
                    f"{len(self._waiting)} runs are waiting already; remove one from the queue, or wait for it to move"
                )
            self._waiting.append(job)
            self._wakeup.notify()
        self.events.publish({"type": "queued", "job": job.public(), "position": self.position(job)})
        return job

    def position(self, job: Job) -> int:
        """0 for the job training, 1 for the next to train, and so on; -1 once it is no longer queued."""
        if job is self.current:
            return 0
        with self._wakeup:
            return next((i for i, waiting in enumerate(self._waiting, start=1) if waiting is job), -1)

    def job(self, name: str) -> Job | None:
        """The job training or waiting for the run of this name, if any."""
        with self._wakeup:
            jobs = [self.current, *self._waiting]
        return next((job for job in jobs if job is not None and job.name == name), None)

    def names(self) -> set[str]:
        with self._wakeup:
            return {job.name for job in [self.current, *self._waiting] if job is not None}

    def stop(self, name: str) -> Job | None:
        """Stop the run of this name after its epoch under way, or take it out of the queue; None if neither."""
        with self._wakeup:
            waiting = next((job for job in self._waiting if job.name == name), None)
            if waiting is not None:
                self._waiting.remove(waiting)
        if waiting is not None:
            waiting.state, waiting.message = "cancelled", "taken out of the queue before it started"
            self.finished[name] = waiting
            self.events.publish({"type": "end", "job": waiting.public()})
            return waiting
        job = self.current
        if job is None or job.name != name:
            return None
        job.stop_requested = True
        if job.state == "training":
            job.state = "stopping"
        self.events.publish({"type": "stopping", "job": job.public()})
        return job

    def snapshot(self) -> dict[str, Any]:
        """The job training and those waiting, as the page shows them."""
        with self._wakeup:
            current, waiting = self.current, list(self._waiting)
        return {"current": current.public() if current else None, "waiting": [job.public() for job in waiting]}

    def close(self, timeout: float) -> None:
        """Take no more jobs, stop the one training (after its epoch under way) and wait for it up to `timeout` s."""
        with self._wakeup:
            self._closing = True
            self._waiting.clear()
            self._wakeup.notify()
        if self.current is not None:
            self.current.stop_requested = True
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        self._load_data()
        while True:
            with self._wakeup:
                while not self._waiting and not self._closing:
                    self._wakeup.wait()
                if self._closing:
                    return
                self.current = self._waiting.popleft()
            try:
                self._run(self.current)
            finally:
                self.finished[self.current.name] = self.current
                self.events.publish({"type": "end", "job": self.current.public()})
                self.current = None

    def _load_data(self) -> None:
        """Load the default data set now, so that the first Train does not wait for it (others load when first used)."""
        name = TrainConfig().dataset
        try:
            self._data(name)
        except Exception as err:  # noqa: BLE001  (each job reports it again when it asks for the data)
            log.warning("%s: %s", name, err)

    def _run(self, job: Job) -> None:
        """Train one job to its end, whatever that end is; the job's state and message say which it was."""
        # Building a network draws its weights from generators that loading a model elsewhere would also draw
        # from, so no model loads until the network is built (see LabCallback.on_train_begin).
        built = threading.Event()

        def on_built() -> None:
            if not built.is_set():
                built.set()
                self._keras_lock.release()

        job.state = "starting"
        self.events.publish({"type": "starting", "job": job.public()})
        self._keras_lock.acquire()
        try:
            data = self._data(job.config.dataset)
            callback = LabCallback(job, self.events.publish, progress_every(job.config, data), on_built)
            train_and_evaluate(
                job.config,
                self.runs_dir / job.name,
                data=data,
                resume=job.resume,
                log=lambda line: self._log(job, line),
                callbacks=[callback],
            )
            job.state, job.message = "finished", ""
        except TrainingStopped as err:
            job.state, job.message = "stopped", str(err)
        except DigitnetError as err:
            job.state, job.message = "failed", str(err)
        except Exception as err:  # a bug: the lab keeps serving, and the page says what happened
            log.exception("training %s failed", job.name)
            job.state, job.message = "failed", f"internal error ({type(err).__name__}: {err})"
        finally:
            on_built()

    def _log(self, job: Job, line: str) -> None:
        """Training's own lines (one per epoch, the test score), to the lab's terminal and the page."""
        log.info("%s: %s", job.name, line)
        self.events.publish({"type": "log", "run": job.name, "line": line})

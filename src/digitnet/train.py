"""Training: each epoch is one compiled JAX call over a plain Keras model, checkpointed after every epoch.

Plain `model.fit` pays Python and dispatch overhead on every step, which dominates at small batches. Here the
training split stays on the device and one jitted function shuffles it, scans over all its batches and applies
the optimizer: `model.stateless_call` for the math and `optimizer.stateless_apply` for the update, so the model
stays an ordinary Keras model that is built, saved, summarized and served as Keras.
"""

from __future__ import annotations

import contextlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import keras
import numpy as np

from digitnet.config import TrainConfig
from digitnet.data import Mnist, Splits, expect_dataset, load_dataset, split_validation
from digitnet.errors import DigitnetError
from digitnet.files import WriteError, write_atomic
from digitnet.internals import initial_weights_drawn_together
from digitnet.interrupts import saves_on_ctrl_c
from digitnet.machine import available_cores
from digitnet.model import N_PIXELS, build_model
from digitnet.run import METRICS, MODEL, RunDir
from digitnet.steps import (
    Progress,
    State,
    compile_functions,
    epoch_numbers,
    initial_state,
    shapes_of,
    store_state,
)


class TrainingDiverged(DigitnetError):
    """The loss became NaN or infinite; the last good weights were kept."""


class Callback:
    """Hooks into a training run, in the manner of Keras' callbacks: override what you need.

    Set `stop_training = True` (from any thread) to end the run after the epoch under way: it stays resumable, as
    after Ctrl-C. With `progress_every` > 0, `on_progress` is called every that many steps inside each epoch, on
    a thread of JAX's, while the epoch runs.
    """

    stop_training = False
    progress_every = 0

    def on_train_begin(self, run: RunDir, config: TrainConfig, steps: int, first_epoch: int) -> None:
        """The run is built and compiled; `steps` per epoch; `first_epoch` > 1 when resumed."""

    def on_epoch_begin(self, epoch: int) -> None:
        pass

    def on_progress(self, steps_done: int) -> None:
        pass

    def on_epoch_end(self, row: dict) -> None:
        """An epoch ended and is saved: its row of history.csv."""

    def on_train_end(self, metrics: dict) -> None:
        """Training and the test evaluation are done: the metrics saved in metrics.json."""


class TrainingStopped(DigitnetError):
    """A callback asked the run to stop; what finished is saved and the run can be resumed."""


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer named by the config, with its learning-rate schedule."""
    rate: Any = config.learning_rate
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps_per_epoch * config.epochs)
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate, weight_decay=decay)
    momentum = config.momentum if config.optimizer == "momentum" else 0.0
    return keras.optimizers.SGD(rate, momentum=momentum, weight_decay=decay)


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> keras.Model:
    """Attach optimizer, loss and metric so the saved model also evaluates and fine-tunes with plain Keras."""
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    optimizer.build(model.trainable_variables)
    return model


def save_model(path: Path, model: keras.Model) -> None:
    write_atomic(path, lambda tmp: model.save(tmp))


def format_epoch(row: dict, epochs: int) -> str:
    """The one fixed-format line printed per epoch; the keys are those of history.csv."""
    return (
        f"epoch {row['epoch']:3d}/{epochs}  loss {row['loss']:.4f}  accuracy {row['accuracy']:.4f}  "
        f"val_loss {row['val_loss']:.4f}  val_accuracy {row['val_accuracy']:.4f}  seconds {row['seconds']:.2f}"
    )


# ---------------------------------------------------------------- the top level


def train_and_evaluate(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    data: Mnist | Callable[[], Mnist] | None = None,
    data_dir: str | Path | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Train a model as the config says, checkpoint every epoch, evaluate on the test set; return the metrics.

    `data` is the config's data set, or a function that returns it (called once the run folder is known to be
    usable, so a bad --out or --resume is reported before any wait for the data, and the folder is made only once
    the data is there). The run folder (see digitnet.run) is held by this process until the function returns, and
    ends with config.json, history.csv, checkpoint.npz, model.keras and metrics.json. `callbacks` are told of
    each stage (see Callback); one may stop the run, which then raises TrainingStopped.
    """
    run = RunDir(out_dir)
    if resume:
        run.check_resumable()
        config = run.read_config()  # its data set says which data to load
    else:
        run.check_new()
    data = data() if callable(data) else data or load_dataset(config.dataset, data_dir)
    expect_dataset(data, config.dataset)
    with run.claim():
        if resume:
            config = run.read_config()
        else:
            run.check_new()  # again, now that no other process can start in it
            run.write_config(config)
            log(f"run folder: {run}")
        splits = split_validation(data, config.val_size, config.seed, config.train_size)
        trainer = start_trainer(config, splits, progress_of(callbacks))
        history = resume_from_checkpoint(run, trainer, log) if resume else []
        threads = available_cores()
        log(
            f"built and compiled in {trainer.compile_seconds:.2f} s ({trainer.steps} "
            f"{'step' if trainer.steps == 1 else 'steps'} of {trainer.batch_size} per epoch, "
            f"{threads} {'thread' if threads == 1 else 'threads'})"
        )
        for callback in callbacks:
            callback.on_train_begin(run, config, trainer.steps, len(history) + 1)
        test_loss, test_accuracy = train_epochs(run, trainer, data, history, log, callbacks)
        metrics = final_metrics(trainer, data, history, test_loss, test_accuracy)
        try:
            run.write_json(METRICS, metrics)
        except WriteError as err:
            raise WriteError(
                f"{err}; the model is saved; write its metrics with: digitnet train --resume {run}"
            ) from None
        n_test = len(data.test_labels)
        log(
            f"Test set: loss {test_loss:.4f}, accuracy {round(test_accuracy * n_test)}/{n_test} "
            f"({100 * test_accuracy:.2f}%)"
        )
        for callback in callbacks:
            callback.on_train_end(metrics)
        return metrics


def progress_of(callbacks: Sequence[Callback]) -> Progress | None:
    """What the compiled epoch reports to the callbacks that want to hear of steps, or None if none does."""
    listening = [callback for callback in callbacks if callback.progress_every > 0]
    if not listening:
        return None

    def report(steps_done: int) -> None:
        for callback in listening:
            callback.on_progress(steps_done)

    return Progress(min(callback.progress_every for callback in listening), report)


def resume_from_checkpoint(run: RunDir, trainer: Trainer, log: Callable[[str], None]) -> list[dict]:
    """Load the run's latest good checkpoint into the trainer; the history up to it (empty if it has none)."""
    saved = run.load_checkpoint(tuple(len(group) for group in trainer.state.tree()), log)
    if saved is None:
        return []
    groups, done = saved
    trainer.state = State(*([jnp.asarray(a) for a in group] for group in groups))
    epochs = trainer.config.epochs
    log(
        f"resuming {run} after epoch {done}"
        if done < epochs
        else f"{run}: all {epochs} {'epoch was' if epochs == 1 else 'epochs were'} done before; evaluating it again"
    )
    return run.read_history()[:done]


def train_epochs(
    run: RunDir,
    trainer: Trainer,
    data: Mnist,
    history: list[dict],
    log: Callable[[str], None],
    callbacks: Sequence[Callback],
) -> tuple[float, float]:
    """The epochs not yet in `history` (which grows), each saved as it ends; then the model and its test scores.

    Ctrl-C, a failed write or a callback's stop end it with what finished saved and the run resumable.
    """
    config = trainer.config
    last_good = trainer.state_on_host()
    try:
        with saves_on_ctrl_c():
            for epoch in range(len(history) + 1, config.epochs + 1):
                for callback in callbacks:
                    callback.on_epoch_begin(epoch)
                row = trainer.run_epoch(epoch)
                if not all(math.isfinite(row[k]) for k in ("loss", "val_loss")):
                    trainer.state = last_good
                    trainer.save(run.file(MODEL))
                    raise TrainingDiverged(
                        f"loss became {row['loss']} in epoch {epoch}; kept the weights of the last finished epoch "
                        f"({epoch - 1}) in {run}; lower --learning-rate or choose another optimizer"
                    )
                finished = trainer.state_on_host()
                # History first: a resume trims it to the checkpoint's epoch, so a kill between the two is harmless.
                run.write_history([*history, row])
                run.save_checkpoint(finished.tree(), epoch)
                history.append(row)
                last_good = finished
                log(format_epoch(row, config.epochs))
                for callback in callbacks:
                    callback.on_epoch_end(row)
                if any(callback.stop_training for callback in callbacks) and epoch < config.epochs:
                    raise TrainingStopped(f"stopped after epoch {epoch}")
            trainer.save(run.file(MODEL))
            return trainer.evaluate(data.test_images, data.test_labels)
    except (KeyboardInterrupt, WriteError, TrainingStopped) as stop:
        if not history:  # nothing trained: no model to save, and the folder may be reused as it is
            if isinstance(stop, KeyboardInterrupt):
                log("interrupted in epoch 1, before anything was saved; run the same command again to start over")
            if isinstance(stop, WriteError):
                raise WriteError(
                    f"{stop}; nothing is saved yet; once there is room, start it again with: "
                    f"digitnet train --resume {run}"
                ) from None
            raise
        trainer.state = last_good  # the weights of the last checkpoint
        with contextlib.suppress(WriteError):  # the checkpoint is what resumes; the model is a convenience
            trainer.save(run.file(MODEL))
        saved = f"epochs 1-{len(history)} are saved; continue with: digitnet train --resume {run}"
        if isinstance(stop, KeyboardInterrupt):
            log(f"interrupted; {saved}")
            raise
        if isinstance(stop, TrainingStopped):
            log(f"{stop}; {saved}")
            raise TrainingStopped(f"{stop}; {saved}") from None
        raise WriteError(f"{stop}; {saved} once there is room") from None


def final_metrics(trainer: Trainer, data: Mnist, history: list[dict], test_loss: float, test_accuracy: float) -> dict:
    """What metrics.json holds: the test scores, the last epoch's, the network's size, times and versions."""
    return {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        **({k: history[-1][k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")} if history else {}),
        "epochs": len(history),
        "params": trainer.model.count_params(),
        "train_seconds": sum(row["seconds"] for row in history),
        "compile_seconds": trainer.compile_seconds,
        "n_train": len(trainer.splits.y_train),
        "n_val": len(trainer.splits.y_val),
        "n_test": len(data.test_labels),
        "device": jax.devices()[0].device_kind,
        "threads": available_cores(),
        "jax": jax.__version__,
        "keras": keras.__version__,
    }


def start_trainer(config: TrainConfig, splits: Splits, progress: Progress | None = None) -> Trainer:
    """The Trainer for a config; a network too big for this machine's memory is a DigitnetError, not a traceback."""
    try:
        return Trainer(config, splits, progress)
    except (MemoryError, jax.errors.JaxRuntimeError) as err:
        if isinstance(err, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" not in str(err):
            raise
        raise DigitnetError(
            f"not enough memory for a network with hidden layers {list(config.hidden)} "
            f"and batches of {config.batch_size}; use fewer or narrower hidden layers"
        ) from None


class Trainer:
    """A Keras model, its optimizer and the compiled epoch and evaluation functions, for one config."""

    def __init__(self, config: TrainConfig, splits: Splits, progress: Progress | None = None):
        self.config, self.splits = config, splits
        n_train = len(splits.y_train)
        self.batch_size = config.resolve_batch_size(n_train)
        self.steps = math.ceil(n_train / self.batch_size)
        started = time.perf_counter()
        # The network is built without its initial weights: in a StatelessScope, Keras creates each variable
        # with its shape and defers its initializer. The epoch and evaluation functions compile from those
        # shapes on another thread meanwhile, while this one draws the weights. On a first run, with nothing
        # in the compilation cache, the two took about a second each, one after the other.
        self.optimizer = make_optimizer(config, self.steps)  # outside: it creates its step counter from a number
        with ThreadPoolExecutor(1) as pool:
            with initial_weights_drawn_together():
                self.model = build_model(config)
                compile_model(self.model, self.optimizer)
                shapes = State(
                    *(
                        shapes_of(v)
                        for v in (
                            self.model.trainable_variables,
                            self.model.non_trainable_variables,
                            self.optimizer.variables,
                        )
                    )
                )
                compiling = pool.submit(
                    compile_functions, self.model, self.optimizer, config, shapes, n_train, self.batch_size, progress
                )
            self.state = initial_state(self.model, self.optimizer)
            # The data lives on the device and enters the compiled function as arguments, never as constants.
            # (device_put, not jnp.asarray, which compiles a program per shape to copy the array in.)
            self.images = jax.device_put(splits.x_train.reshape(n_train, N_PIXELS))
            self.labels = jax.device_put(splits.y_train.astype(np.int32))
            self.epoch_fn, self.evaluate_fn = compiling.result()
        self.compile_seconds = time.perf_counter() - started

    def run_epoch(self, epoch: int) -> dict:
        """Train one epoch and measure it; returns the history row."""
        started = time.perf_counter()
        numbers = epoch_numbers(self.config.seed, epoch)
        tree, loss, accuracy = self.epoch_fn(self.state.tree(), self.images, self.labels, *numbers)
        self.state = State(*tree)
        loss, accuracy = float(loss), float(accuracy)  # waits for the device
        val_loss, val_accuracy = self.evaluate(self.splits.x_val, self.splits.y_val)
        return {
            "epoch": epoch,
            "loss": loss,
            "accuracy": accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "seconds": time.perf_counter() - started,
        }

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        return self.evaluate_fn(self.state, images, labels)

    def state_on_host(self) -> State:
        """A host copy of the state: the compiled epoch donates (reuses) the device buffers."""
        return State(*jax.tree_util.tree_map(np.asarray, self.state.tree()))

    def save(self, path: Path) -> None:
        store_state(self.model, self.optimizer, self.state)
        save_model(path, self.model)

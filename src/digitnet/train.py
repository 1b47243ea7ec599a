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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import keras
import numpy as np

from digitnet.machine import available_cores
from digitnet.augment import distort
from digitnet.config import TrainConfig
from digitnet.data import Mnist, Splits, expect_dataset, load_dataset, split_validation
from digitnet.errors import DigitnetError
from digitnet.files import WriteError, write_atomic
from digitnet.internals import initial_weights_drawn_together
from digitnet.interrupts import saves_on_ctrl_c
from digitnet.model import N_PIXELS, build_model, logits_model
from digitnet.run import MODEL, METRICS, RunDir

EVAL_CHUNK = 1000  # images per evaluation call: one compiled shape for validation and test alike


class TrainingDiverged(DigitnetError):
    """The loss became NaN or infinite; the last good weights were kept."""


@dataclass
class State:
    """Everything that changes during training, as JAX arrays: the pytree the compiled epoch carries."""

    trainable: list
    non_trainable: list
    optimizer: list

    def tree(self) -> tuple:
        return (self.trainable, self.non_trainable, self.optimizer)


@dataclass(frozen=True)
class Progress:
    """What the compiled epoch calls on the host every `every` steps, with the number of steps done so far."""

    every: int
    report: Callable[[int], None]

    def __call__(self, done: jax.Array) -> None:
        self.report(int(done))


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


def initial_state(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> State:
    return State(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )


def store_state(model: keras.Model, optimizer: keras.optimizers.Optimizer, state: State) -> None:
    """Write the state back into the Keras variables (before saving or predicting with Keras)."""
    for variables, values in ((model.trainable_variables, state.trainable),
                              (model.non_trainable_variables, state.non_trainable),
                              (optimizer.variables, state.optimizer)):
        for variable, value in zip(variables, values):
            variable.assign(value)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample negative log-likelihood of the true class, from logits (stable where softmax saturates)."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def train_step(network: keras.Model, optimizer: keras.optimizers.Optimizer, config: TrainConfig,
               state: tuple, batch: tuple) -> tuple[tuple, tuple[jax.Array, jax.Array]]:
    """One update on one batch: (trainable, non_trainable, optimizer variables) -> the same after the step.

    `network` ends at the logits; `batch` is (x float32 (B, 784) in [0, 1], labels (B,), weights (B,) of 1 for a
    real sample and 0 for padding, a random key for the distortions). Returns the new state and the batch's
    summed loss and number of correct answers, both weighted.
    """
    trainable, non_trainable, opt_vars = state
    x, y, weights, key = batch
    if config.augment == "elastic":
        x = distort(key, x.reshape(-1, 28, 28), config).reshape(-1, N_PIXELS)

    def loss_fn(trainable):
        logits, new_non_trainable = network.stateless_call(trainable, non_trainable, x, training=True)
        loss = jnp.sum(weights * cross_entropy(logits, y)) / jnp.sum(weights)
        return loss, (new_non_trainable, logits)

    (loss, (non_trainable, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
    correct = jnp.sum(weights * (jnp.argmax(logits, axis=1) == y))
    return (trainable, non_trainable, opt_vars), (loss * jnp.sum(weights), correct)


def train_epoch(network: keras.Model, optimizer: keras.optimizers.Optimizer, config: TrainConfig, batch_size: int,
                state: tuple, images: jax.Array, labels: jax.Array, seed: jax.Array, epoch: jax.Array,
                progress: Progress | None = None) -> tuple[tuple, jax.Array, jax.Array]:
    """One whole epoch, to be compiled: shuffle `images` (uint8 (N, 784)) and `labels`, scan `train_step` over
    all their batches; returns the new state, the mean loss and the accuracy over the epoch.

    Every sample is seen once per epoch, as with `fit`: the shuffled order is padded to whole batches and the
    padding carries weight 0, so the last, shorter batch is averaged over its real samples only. The random
    key comes from the seed and the epoch alone (`epoch_key`), so a resumed run repeats a straight one.
    With `progress`, the host is told how many steps are done every `progress.every` steps, while the epoch runs
    (the same numbers: only a call to the host is added).
    """
    n_train = labels.shape[0]
    steps = math.ceil(n_train / batch_size)
    padding = steps * batch_size - n_train
    # The key is made in here: made outside, it cost four more programs to compile on a first run.
    shuffle_key, augment_key = jax.random.split(epoch_key(seed, epoch))
    order = jax.random.permutation(shuffle_key, n_train)
    order = jnp.concatenate([order, order[:padding]]).reshape(steps, batch_size)
    weights = jnp.concatenate([jnp.ones(n_train), jnp.zeros(padding)]).reshape(steps, batch_size)
    step_keys = jax.random.split(augment_key, steps)

    def step(state, batch):
        idx, w, k, *number = batch
        # Gather and scale inside the step: only one batch of float32 pixels exists at a time.
        x = images[idx].astype(jnp.float32) / 255.0
        if progress is not None:
            done = number[0] + 1
            jax.lax.cond(done % progress.every == 0, lambda: jax.debug.callback(progress, done), lambda: None)
        return train_step(network, optimizer, config, state, (x, labels[idx], w, k))

    steps_in = (order, weights, step_keys) + ((jnp.arange(steps),) if progress is not None else ())
    state, (losses, corrects) = jax.lax.scan(step, state, steps_in)
    return state, jnp.sum(losses) / n_train, jnp.sum(corrects) / n_train


def eval_step(network: keras.Model, trainable: list, non_trainable: list, x: jax.Array, y: jax.Array,
              weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed loss and number of correct answers over one chunk of uint8 images (n, 784), each weighted."""
    logits, _ = network.stateless_call(trainable, non_trainable, x.astype(jnp.float32) / 255.0, training=False)
    return jnp.sum(weights * cross_entropy(logits, y)), jnp.sum(weights * (jnp.argmax(logits, axis=1) == y))


def evaluate_in_chunks(chunk_sums: Callable, state: State, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean loss, accuracy) over uint8 images (N, 784), calling chunk_sums (a compiled `eval_step`) on EVAL_CHUNK
    images at a time: one compiled shape for validation and test alike."""
    n = len(labels)
    padded = math.ceil(n / EVAL_CHUNK) * EVAL_CHUNK
    x = np.zeros((padded, N_PIXELS), np.uint8)
    x[:n] = images.reshape(n, N_PIXELS)
    y = np.zeros(padded, np.int32)
    y[:n] = labels
    w = (np.arange(padded) < n).astype(np.float32)
    loss = correct = 0.0
    for start in range(0, padded, EVAL_CHUNK):
        part = slice(start, start + EVAL_CHUNK)
        chunk_loss, chunk_correct = chunk_sums(state.trainable, state.non_trainable, x[part], y[part], w[part])
        loss, correct = loss + float(chunk_loss), correct + float(chunk_correct)
    return loss / n, correct / n


def compile_functions(model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TrainConfig, shapes: State,
                      n_train: int, batch_size: int, progress: Progress | None = None) -> tuple[Callable, Callable]:
    """`train_epoch` and `eval_step` for this network, compiled from the shapes of the state alone (no weights
    needed); the evaluation comes wrapped by `evaluate_in_chunks`.

    The network and the settings are bound before compiling; the data and the state are arguments, so nothing
    large becomes a constant of the program. Both are traced here, one after the other (tracing calls the Keras
    layers, which are not meant to be called from two threads at once), then XLA compiles them side by side.
    """
    network = logits_model(model)
    data = (jax.ShapeDtypeStruct((n_train, N_PIXELS), np.uint8), jax.ShapeDtypeStruct((n_train,), np.int32))
    epoch = jax.jit(partial(train_epoch, network, optimizer, config, batch_size, progress=progress),
                    donate_argnums=0).lower(shapes.tree(), *data, *epoch_numbers(0, 0))
    chunk = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in
             (((EVAL_CHUNK, N_PIXELS), np.uint8), ((EVAL_CHUNK,), np.int32), ((EVAL_CHUNK,), np.float32))]
    evaluate = jax.jit(partial(eval_step, network)).lower(shapes.trainable, shapes.non_trainable, *chunk)
    with ThreadPoolExecutor(1) as pool:
        compiled_epoch = pool.submit(epoch.compile)
        evaluate_fn = partial(evaluate_in_chunks, evaluate.compile())
        return compiled_epoch.result(), evaluate_fn


def shapes_of(variables: list) -> list[jax.ShapeDtypeStruct]:
    """What a compiled function needs to know of Keras variables, initialised or not: shapes and dtypes."""
    return [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in variables]


def epoch_key(seed: int | jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The random key of one epoch, from the seed and the epoch alone, so a resumed run repeats a straight one."""
    return jax.random.fold_in(jax.random.key(seed), epoch)


def epoch_numbers(seed: int, epoch: int) -> tuple[np.uint32, np.uint32]:
    """The seed and epoch as the compiled epoch takes them: 32-bit, as JAX makes a key of a seed."""
    return np.uint32(seed), np.uint32(epoch)


def save_model(path: Path, model: keras.Model) -> None:
    write_atomic(path, lambda tmp: model.save(tmp))


def format_epoch(row: dict, epochs: int) -> str:
    """The one fixed-format line printed per epoch; the keys are those of history.csv."""
    return (f"epoch {row['epoch']:3d}/{epochs}  loss {row['loss']:.4f}  accuracy {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_accuracy {row['val_accuracy']:.4f}  seconds {row['seconds']:.2f}")


# ---------------------------------------------------------------- the top level


def train_and_evaluate(config: TrainConfig, out_dir: str | Path, *, data: Mnist | Callable[[], Mnist] | None = None,
                       data_dir: str | Path | None = None, resume: bool = False,
                       log: Callable[[str], None] = print, callbacks: Sequence[Callback] = ()) -> dict:
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
        log(f"built and compiled in {trainer.compile_seconds:.2f} s ({trainer.steps} "
            f"{'step' if trainer.steps == 1 else 'steps'} of {trainer.batch_size} per epoch, "
            f"{threads} {'thread' if threads == 1 else 'threads'})")
        for callback in callbacks:
            callback.on_train_begin(run, config, trainer.steps, len(history) + 1)
        test_loss, test_accuracy = train_epochs(run, trainer, data, history, log, callbacks)
        metrics = final_metrics(trainer, data, history, test_loss, test_accuracy)
        try:
            run.write_json(METRICS, metrics)
        except WriteError as err:
            raise WriteError(f"{err}; the model is saved; write its metrics with: digitnet train --resume {run}") from None
        n_test = len(data.test_labels)
        log(f"Test set: loss {test_loss:.4f}, accuracy {round(test_accuracy * n_test)}/{n_test} "
            f"({100 * test_accuracy:.2f}%)")
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
    log(f"resuming {run} after epoch {done}" if done < epochs else
        f"{run}: all {epochs} {'epoch was' if epochs == 1 else 'epochs were'} done before; evaluating it again")
    return run.read_history()[:done]


def train_epochs(run: RunDir, trainer: Trainer, data: Mnist, history: list[dict], log: Callable[[str], None],
                 callbacks: Sequence[Callback]) -> tuple[float, float]:
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
                        f"({epoch - 1}) in {run}; lower --learning-rate or choose another optimizer")
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
                raise WriteError(f"{stop}; nothing is saved yet; once there is room, start it again with: "
                                 f"digitnet train --resume {run}") from None
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
        "test_accuracy": test_accuracy, "test_loss": test_loss,
        **({k: history[-1][k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")} if history else {}),
        "epochs": len(history), "params": trainer.model.count_params(),
        "train_seconds": sum(row["seconds"] for row in history), "compile_seconds": trainer.compile_seconds,
        "n_train": len(trainer.splits.y_train), "n_val": len(trainer.splits.y_val), "n_test": len(data.test_labels),
        "device": jax.devices()[0].device_kind, "threads": available_cores(), "jax": jax.__version__,
        "keras": keras.__version__,
    }


def start_trainer(config: TrainConfig, splits: Splits, progress: Progress | None = None) -> Trainer:
    """The Trainer for a config; a network too big for this machine's memory is a DigitnetError, not a traceback."""
    try:
        return Trainer(config, splits, progress)
    except (MemoryError, jax.errors.JaxRuntimeError) as err:
        if isinstance(err, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" not in str(err):
            raise
        raise DigitnetError(f"not enough memory for a network with hidden layers {list(config.hidden)} "
                            f"and batches of {config.batch_size}; use fewer or narrower hidden layers") from None


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
                shapes = State(*(shapes_of(v) for v in (self.model.trainable_variables,
                                                         self.model.non_trainable_variables, self.optimizer.variables)))
                compiling = pool.submit(compile_functions, self.model, self.optimizer, config, shapes, n_train,
                                        self.batch_size, progress)
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
        return {"epoch": epoch, "loss": loss, "accuracy": accuracy, "val_loss": val_loss,
                "val_accuracy": val_accuracy, "seconds": time.perf_counter() - started}

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        return self.evaluate_fn(self.state, images, labels)

    def state_on_host(self) -> State:
        """A host copy of the state: the compiled epoch donates (reuses) the device buffers."""
        return State(*jax.tree_util.tree_map(np.asarray, self.state.tree()))

    def save(self, path: Path) -> None:
        store_state(self.model, self.optimizer, self.state)
        save_model(path, self.model)

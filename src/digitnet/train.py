"""Training: each epoch is one compiled JAX call over a plain Keras model, checkpointed after every epoch.

Plain `model.fit` pays Python and dispatch overhead on every step, which dominates at small batches. Here the
training split stays on the device and one jitted function shuffles it, scans over all its batches and applies
the optimizer: `model.stateless_call` for the math and `optimizer.stateless_apply` for the update, so the model
stays an ordinary Keras model that is built, saved, summarized and served as Keras.
"""

from __future__ import annotations

import csv
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

import jax
import jax.numpy as jnp
import keras
import numpy as np

from digitnet.augment import distort
from digitnet.config import TrainConfig
from digitnet.data import Mnist, Splits, load_mnist, split_validation
from digitnet.errors import DigitnetError
from digitnet.files import write_atomic
from digitnet.interrupts import saves_on_ctrl_c
from digitnet.model import N_PIXELS, build_model, logits_model

HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
KERAS_VARIABLE_INTERNALS = ("_initializer", "_shape", "_dtype", "_convert_to_tensor", "_initialize")  # draw_deferred_weights
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


def draw_deferred_weights() -> None:
    """Give the variables made in a `keras.StatelessScope(initialize_variables=False)` their initial values.

    Keras would run each initializer on its own, eagerly, and on a first run XLA compiles a program for
    each step of each one (a uniform draw, zeros of each shape, a cast): nine for the `fast` recipe's
    network and optimizer. Run together in one jitted function they are one program, and the numbers are
    the same to the bit (a test compares them with Keras' own). This uses Keras internals; where they
    differ, or where a Keras distribution lays variables out over devices, it leaves the work to Keras.
    """
    from keras.src.backend.common import global_state, variables

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    internals = all(hasattr(v, name) for v in pending for name in KERAS_VARIABLE_INTERNALS)

    @jax.jit
    def initial_values() -> list[jax.Array]:
        return [v._initializer(v._shape, dtype=v._dtype) for v in pending]

    try:
        if not internals or keras.distribution.distribution() is not None:
            variables.initialize_all_variables()
            return
        for variable, value in zip(pending, initial_values()):
            variable._initialize(variable._convert_to_tensor(value))  # as Keras' own path does
            variable._initializer = None
    finally:  # a network that failed to draw (too big for memory) is not left for the next one to draw
        global_state.set_global_attribute("uninitialized_variables", [])


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


def make_epoch_fn(model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TrainConfig,
                  n_train: int, batch_size: int) -> Callable:
    """A function (state, images, labels, seed, epoch) -> (state, loss, accuracy) that runs one whole epoch.

    Every sample is seen once per epoch, as with `fit`: the shuffled order is padded to whole batches and the
    padding carries weight 0, so the last, shorter batch is averaged over its real samples only.
    """
    steps = math.ceil(n_train / batch_size)
    padding = steps * batch_size - n_train
    network = logits_model(model)
    augment = config.augment == "elastic"

    def train_step(state_tree, batch):
        trainable, non_trainable, opt_vars = state_tree
        x, y, weights, key = batch
        if augment:
            x = distort(key, x.reshape(-1, 28, 28), config).reshape(-1, N_PIXELS)

        def loss_fn(trainable):
            logits, new_non_trainable = network.stateless_call(trainable, non_trainable, x, training=True)
            loss = jnp.sum(weights * cross_entropy(logits, y)) / jnp.sum(weights)
            return loss, (new_non_trainable, logits)

        (loss, (non_trainable, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        correct = jnp.sum(weights * (jnp.argmax(logits, axis=1) == y))
        return (trainable, non_trainable, opt_vars), (loss * jnp.sum(weights), correct)

    def epoch(state_tree, images, labels, seed, epoch_number):
        # The key is made in here: made outside, it cost four more programs to compile on a first run.
        shuffle_key, augment_key = jax.random.split(epoch_key(seed, epoch_number))
        order = jax.random.permutation(shuffle_key, n_train)
        order = jnp.concatenate([order, order[:padding]]).reshape(steps, batch_size)
        weights = jnp.concatenate([jnp.ones(n_train), jnp.zeros(padding)]).reshape(steps, batch_size)
        step_keys = jax.random.split(augment_key, steps)

        def step(carry, batch):
            idx, w, k = batch
            # Gather and scale inside the step: only one batch of float32 pixels exists at a time.
            x = images[idx].astype(jnp.float32) / 255.0
            return train_step(carry, (x, labels[idx], w, k))

        state_tree, (losses, corrects) = jax.lax.scan(step, state_tree, (order, weights, step_keys))
        return state_tree, jnp.sum(losses) / n_train, jnp.sum(corrects) / n_train

    return jax.jit(epoch, donate_argnums=0)


def eval_chunk_fn(model: keras.Model) -> Callable:
    """A jitted function (trainable, non_trainable, images uint8 (n, 784), labels, weights) -> (loss sum, correct sum)."""
    network = logits_model(model)

    @jax.jit
    def chunk_sums(trainable, non_trainable, x, y, weights):
        logits, _ = network.stateless_call(trainable, non_trainable, x.astype(jnp.float32) / 255.0, training=False)
        return jnp.sum(weights * cross_entropy(logits, y)), jnp.sum(weights * (jnp.argmax(logits, axis=1) == y))

    return chunk_sums


def make_eval_fn(chunk_sums: Callable) -> Callable:
    """A function (state, images uint8 (N, 784), labels) -> (mean loss, accuracy), calling chunk_sums on
    EVAL_CHUNK images at a time: one compiled shape for validation and test alike."""

    def evaluate(state: State, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
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

    return evaluate


def compile_functions(model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TrainConfig, shapes: State,
                      n_train: int, batch_size: int) -> tuple[Callable, Callable]:
    """The epoch and evaluation functions, compiled from the shapes of the state alone (no weights needed).

    Both are traced here, one after the other (tracing calls the Keras layers, which are not meant to be
    called from two threads at once), then XLA compiles them side by side.
    """
    data = (jax.ShapeDtypeStruct((n_train, N_PIXELS), np.uint8), jax.ShapeDtypeStruct((n_train,), np.int32))
    epoch = make_epoch_fn(model, optimizer, config, n_train, batch_size).lower(
        shapes.tree(), *data, *epoch_numbers(0, 0))
    chunk = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in
             (((EVAL_CHUNK, N_PIXELS), np.uint8), ((EVAL_CHUNK,), np.int32), ((EVAL_CHUNK,), np.float32))]
    evaluate = eval_chunk_fn(model).lower(shapes.trainable, shapes.non_trainable, *chunk)
    with ThreadPoolExecutor(1) as pool:
        compiled_epoch = pool.submit(epoch.compile)
        evaluate_fn = make_eval_fn(evaluate.compile())
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


# ---------------------------------------------------------------- run folder I/O


def write_history(path: Path, history: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_KEYS)
            writer.writeheader()
            writer.writerows(history)

    write_atomic(path, write)


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(handle)]


def save_checkpoint(path: Path, state: State, epoch: int) -> None:
    arrays = {f"{group}_{i}": np.asarray(a) for group, values in zip(("trainable", "non_trainable", "optimizer"), state.tree())
              for i, a in enumerate(values)}
    write_atomic(path, lambda tmp: np.savez(tmp, epoch=epoch, **arrays))


def load_checkpoint(path: Path, like: State) -> tuple[State, int]:
    with np.load(path) as saved:
        groups = [[jnp.asarray(saved[f"{group}_{i}"]) for i in range(len(values))]
                  for group, values in zip(("trainable", "non_trainable", "optimizer"), like.tree())]
        return State(*groups), int(saved["epoch"])


def save_model(path: Path, model: keras.Model) -> None:
    write_atomic(path, lambda tmp: model.save(tmp))


def format_epoch(row: dict, epochs: int) -> str:
    """The one fixed-format line printed per epoch; the keys are those of history.csv."""
    return (f"epoch {row['epoch']:3d}/{epochs}  loss {row['loss']:.4f}  accuracy {row['accuracy']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_accuracy {row['val_accuracy']:.4f}  seconds {row['seconds']:.2f}")


# ---------------------------------------------------------------- the top level


def check_run_dir(out_dir: Path, resume: bool) -> None:
    """Refuse a run folder that is a file, a --resume folder without a run, or another run's folder.

    A folder holding only a config.json (a run stopped before its first epoch, or one that failed to
    start) has nothing to lose, so a new run may take it over.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise DigitnetError(f"{out_dir}: is a file, not a folder; choose another --out")
    if resume:
        if not (out_dir / "config.json").is_file():
            raise DigitnetError(f"{out_dir}: not a run folder (no config.json); give the folder a training run wrote")
    elif out_dir.exists() and any(path.name != "config.json" for path in out_dir.iterdir()):
        raise DigitnetError(f"{out_dir}: folder exists and is not empty; continue it with --resume {out_dir} or choose another --out")


def prepare_run_dir(out_dir: Path, config: TrainConfig, resume: bool) -> TrainConfig:
    """Create the run folder that check_run_dir passed, or read its config for --resume; returns the config to train with."""
    if resume:
        return TrainConfig.load(out_dir / "config.json")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DigitnetError(f"cannot create the run folder {out_dir}: {err.strerror or err}; choose another --out") from None
    config.save(out_dir / "config.json")
    return config


def train_and_evaluate(config: TrainConfig, out_dir: str | Path, *, data: Mnist | Callable[[], Mnist] | None = None,
                       data_dir: str | Path | None = None, resume: bool = False,
                       log: Callable[[str], None] = print) -> dict:
    """Train a model as the config says, checkpoint every epoch, evaluate on the test set; return the metrics.

    `data` is MNIST, or a function that returns it (called once the run folder is known to be usable, so a
    bad --out or --resume is reported before any wait for the data, and the folder is made only once the
    data is there). The run folder ends with config.json, history.csv, checkpoint.npz, model.keras and
    metrics.json.
    """
    out_dir = Path(out_dir)
    check_run_dir(out_dir, resume)
    data = data() if callable(data) else data or load_mnist(data_dir)
    config = prepare_run_dir(out_dir, config, resume)
    if not resume:
        log(f"run folder: {out_dir}")
    splits = split_validation(data, config.val_size, config.seed, config.train_size)
    trainer = start_trainer(config, splits)
    history, start = [], 1
    if resume and (out_dir / "checkpoint.npz").is_file():
        trainer.state, done = load_checkpoint(out_dir / "checkpoint.npz", trainer.state)
        history, start = read_history(out_dir / "history.csv")[:done], done + 1
        log(f"resuming {out_dir} after epoch {done}" if done < config.epochs else
            f"{out_dir}: all {config.epochs} {'epoch was' if config.epochs == 1 else 'epochs were'} done before; evaluating it again")
    log(f"built and compiled in {trainer.compile_seconds:.2f} s ({trainer.steps} {'step' if trainer.steps == 1 else 'steps'} "
        f"of {trainer.batch_size} per epoch)")
    last_good = trainer.state_on_host()
    try:
        with saves_on_ctrl_c():
            for epoch in range(start, config.epochs + 1):
                row = trainer.run_epoch(epoch)
                if not all(math.isfinite(row[k]) for k in ("loss", "val_loss")):
                    trainer.state = last_good
                    trainer.save(out_dir / "model.keras")
                    raise TrainingDiverged(
                        f"loss became {row['loss']} in epoch {epoch}; kept the weights of the last finished epoch ({epoch - 1}) in {out_dir}; "
                        "lower --learning-rate or choose another optimizer")
                history.append(row)
                last_good = trainer.state_on_host()
                # History first: a resume trims it to the checkpoint's epoch, so a kill between the two is harmless.
                write_history(out_dir / "history.csv", history)
                save_checkpoint(out_dir / "checkpoint.npz", last_good, epoch)
                log(format_epoch(row, config.epochs))
            trainer.save(out_dir / "model.keras")
            test_loss, test_accuracy = trainer.evaluate(data.test_images, data.test_labels)
    except KeyboardInterrupt:
        if not history:  # nothing trained: no model to save, and the folder may be reused as it is
            log("interrupted in epoch 1, before anything was saved; run the same command again to start over")
            raise
        trainer.state = last_good
        trainer.save(out_dir / "model.keras")
        log(f"interrupted; epochs 1-{len(history)} are saved; continue with: digitnet train --resume {out_dir}")
        raise
    metrics = {
        "test_accuracy": test_accuracy, "test_loss": test_loss,
        **({k: history[-1][k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")} if history else {}),
        "epochs": len(history), "params": trainer.model.count_params(),
        "train_seconds": sum(row["seconds"] for row in history), "compile_seconds": trainer.compile_seconds,
        "n_train": len(splits.y_train), "n_val": len(splits.y_val), "n_test": len(data.test_labels),
        "device": jax.devices()[0].device_kind, "jax": jax.__version__, "keras": keras.__version__,
    }
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    n_test = len(data.test_labels)
    log(f"Test set: loss {test_loss:.4f}, accuracy {round(test_accuracy * n_test)}/{n_test} ({100 * test_accuracy:.2f}%)")
    return metrics


def start_trainer(config: TrainConfig, splits: Splits) -> "Trainer":
    """The Trainer for a config; a network too big for this machine's memory is a DigitnetError, not a traceback."""
    try:
        return Trainer(config, splits)
    except (MemoryError, jax.errors.JaxRuntimeError) as err:
        if isinstance(err, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" not in str(err):
            raise
        raise DigitnetError(f"not enough memory for a network with hidden layers {list(config.hidden)} "
                            f"and batches of {config.batch_size}; use fewer or narrower hidden layers") from None


class Trainer:
    """A Keras model, its optimizer and the compiled epoch and evaluation functions, for one config."""

    def __init__(self, config: TrainConfig, splits: Splits):
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
            with keras.StatelessScope(initialize_variables=False):
                self.model = build_model(config)
                compile_model(self.model, self.optimizer)
                shapes = State(*(shapes_of(v) for v in (self.model.trainable_variables,
                                                         self.model.non_trainable_variables, self.optimizer.variables)))
                compiling = pool.submit(compile_functions, self.model, self.optimizer, config, shapes, n_train, self.batch_size)
            draw_deferred_weights()
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

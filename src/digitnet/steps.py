"""The compiled pieces of training, each importable and testable alone: one step, one epoch, one evaluation.

`train_step` is the math of one update (`model.stateless_call`, then `optimizer.stateless_apply`), `train_epoch`
shuffles the training split on the device and scans `train_step` over its batches, `eval_step` sums the loss and
counts the right answers of a chunk; `compile_functions` binds a network to them and compiles them from shapes
alone. digitnet.train runs them epoch by epoch.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import keras
import numpy as np

from digitnet.augment import distort, mirror
from digitnet.config import TrainConfig
from digitnet.model import N_PIXELS, logits_model

EVAL_CHUNK = 1000  # images per evaluation call: one compiled shape for validation and test alike


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


def initial_state(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> State:
    return State(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )


def store_state(model: keras.Model, optimizer: keras.optimizers.Optimizer, state: State) -> None:
    """Write the state back into the Keras variables (before saving or predicting with Keras)."""
    for variables, values in (
        (model.trainable_variables, state.trainable),
        (model.non_trainable_variables, state.non_trainable),
        (optimizer.variables, state.optimizer),
    ):
        for variable, value in zip(variables, values):
            variable.assign(value)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample negative log-likelihood of the true class, from logits (stable where softmax saturates)."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def train_step(
    network: keras.Model, optimizer: keras.optimizers.Optimizer, config: TrainConfig, state: tuple, batch: tuple
) -> tuple[tuple, tuple[jax.Array, jax.Array]]:
    """One update on one batch: (trainable, non_trainable, optimizer variables) -> the same after the step.

    `network` ends at the logits; `batch` is (x float32 (B, 784) in [0, 1], labels (B,), weights (B,) of 1 for a
    real sample and 0 for padding, a random key for the distortions). Returns the new state and the batch's
    summed loss and number of correct answers, both weighted.
    """
    trainable, non_trainable, opt_vars = state
    x, y, weights, key = batch
    if config.augment == "elastic":
        x = distort(key, x.reshape(-1, 28, 28), config).reshape(-1, N_PIXELS)
    elif config.augment == "mirror":
        x = mirror(key, x.reshape(-1, 28, 28)).reshape(-1, N_PIXELS)

    def loss_fn(trainable):
        logits, new_non_trainable = network.stateless_call(trainable, non_trainable, x, training=True)
        loss = jnp.sum(weights * cross_entropy(logits, y)) / jnp.sum(weights)
        return loss, (new_non_trainable, logits)

    (loss, (non_trainable, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
    correct = jnp.sum(weights * (jnp.argmax(logits, axis=1) == y))
    return (trainable, non_trainable, opt_vars), (loss * jnp.sum(weights), correct)


def train_epoch(
    network: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    config: TrainConfig,
    batch_size: int,
    state: tuple,
    images: jax.Array,
    labels: jax.Array,
    seed: jax.Array,
    epoch: jax.Array,
    progress: Progress | None = None,
) -> tuple[tuple, jax.Array, jax.Array]:
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


def eval_step(
    network: keras.Model, trainable: list, non_trainable: list, x: jax.Array, y: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Summed loss and number of correct answers over one chunk of uint8 images (n, 784), each weighted."""
    logits, _ = network.stateless_call(trainable, non_trainable, x.astype(jnp.float32) / 255.0, training=False)
    return jnp.sum(weights * cross_entropy(logits, y)), jnp.sum(weights * (jnp.argmax(logits, axis=1) == y))


def evaluate_in_chunks(
    chunk_sums: Callable, state: State, images: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
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


def compile_functions(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    config: TrainConfig,
    shapes: State,
    n_train: int,
    batch_size: int,
    progress: Progress | None = None,
) -> tuple[Callable, Callable]:
    """`train_epoch` and `eval_step` for this network, compiled from the shapes of the state alone (no weights
    needed); the evaluation comes wrapped by `evaluate_in_chunks`.

    The network and the settings are bound before compiling; the data and the state are arguments, so nothing
    large becomes a constant of the program. Both are traced here, one after the other (tracing calls the Keras
    layers, which are not meant to be called from two threads at once), then XLA compiles them side by side.
    """
    network = logits_model(model)
    data = (jax.ShapeDtypeStruct((n_train, N_PIXELS), np.uint8), jax.ShapeDtypeStruct((n_train,), np.int32))
    epoch = jax.jit(
        partial(train_epoch, network, optimizer, config, batch_size, progress=progress), donate_argnums=0
    ).lower(shapes.tree(), *data, *epoch_numbers(0, 0))
    chunk = [
        jax.ShapeDtypeStruct(shape, dtype)
        for shape, dtype in (((EVAL_CHUNK, N_PIXELS), np.uint8), ((EVAL_CHUNK,), np.int32), ((EVAL_CHUNK,), np.float32))
    ]
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

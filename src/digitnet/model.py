"""The network: a Keras Sequential MLP from a config, and a compiled forward pass for inference."""

from __future__ import annotations

import os
import zipfile
from typing import Callable

import jax
import keras
import numpy as np
import scipy.special

from digitnet.config import MAX_SEED, TrainConfig
from digitnet.errors import DigitnetError
from digitnet.run import model_file

N_PIXELS = 28 * 28  # MNIST images, flattened
N_CLASSES = 10


def build_model(config: TrainConfig) -> keras.Sequential:
    """An uncompiled 784 -> hidden... -> 10 softmax network; no training, no side effects."""
    keras.utils.set_random_seed(config.seed)
    layers: list[keras.layers.Layer] = [keras.Input(shape=(N_PIXELS,), name="pixels")]
    for i, (units, activation) in enumerate(zip(config.hidden, config.activations), start=1):
        layers.append(keras.layers.Dense(units, activation=activation, name=f"hidden_{i}"))
        if config.dropout > 0:
            seed = (config.seed + i) % (MAX_SEED + 1)  # Keras' seeds are 32-bit, like the config's
            layers.append(keras.layers.Dropout(config.dropout, seed=seed, name=f"dropout_{i}"))
    output = keras.layers.Dense(N_CLASSES, name="output", kernel_initializer=TransposedGlorotUniform())
    layers.append(output)
    # Softmax as a layer of its own, so training can read the logits for a numerically stable cross-entropy.
    layers.append(keras.layers.Softmax(name="softmax"))
    name = "mlp_" + "-".join(str(n) for n in (N_PIXELS, *config.hidden, N_CLASSES))
    model = keras.Sequential(layers, name=name)  # built: its variables exist (or wait for their initializers)
    # The kernel was drawn (or will be) with Keras' own numbers; the saved model names Keras' own initializer,
    # so that plain Keras loads it without digitnet.
    output.kernel_initializer = keras.initializers.GlorotUniform()
    return model


class TransposedGlorotUniform(keras.initializers.GlorotUniform):
    """Keras' GlorotUniform, to the bit, for a 2-D kernel: it asks for the (fan_out, fan_in) numbers and
    reshapes them (not transposes) to (fan_in, fan_out).

    Both give the same numbers: a uniform draw of a shape depends only on how many numbers it holds,
    filled in row-major order, and Glorot's limit only on fan_in + fan_out. The detour is for XLA on CPU,
    which compiles a uniform draw of shape (10, N) in a third of the time one of shape (N, 10) takes: the
    output layer's kernel is (N, 10), and that compile was a tenth of a first run of the `fast` recipe.
    """

    def __call__(self, shape, dtype=None):
        if len(shape) != 2:
            return super().__call__(shape, dtype)
        return keras.ops.reshape(super().__call__((shape[1], shape[0]), dtype), shape)


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """The model of a run folder or of a .keras file, checked to read MNIST digits: 784 pixels in, 10 probabilities
    out."""
    file = model_file(path)
    if not zipfile.is_zipfile(file):  # Keras reports these as "File not found", which misleads
        raise DigitnetError(
            f"model: {file} is not a Keras model (a .keras file is a zip archive); retrain or pick another file"
        )
    try:
        model = keras.saving.load_model(file, compile=compile)
    except Exception as err:  # Keras raises many types for a bad file; all mean the same to the user
        raise DigitnetError(
            f"model: cannot load {file} ({type(err).__name__}: {err}); retrain or pick another file"
        ) from None
    check_digit_model(model, file)
    return model


def check_digit_model(model: keras.Model, file: os.PathLike) -> None:
    """A DigitnetError unless the model maps 784 pixels to probabilities of the 10 digits, as digitnet's do."""
    shapes = (getattr(model, "input_shape", None), getattr(model, "output_shape", None))
    if not all(isinstance(shape, tuple) for shape in shapes):
        raise DigitnetError(f"model: {file} has several inputs or outputs; digitnet reads models with one of each")
    if tuple(shapes[0][1:]) != (N_PIXELS,):
        raise DigitnetError(
            f"model: {file} takes inputs of shape {shapes[0][1:]}, not MNIST's ({N_PIXELS},); give a digitnet model"
        )
    if tuple(shapes[1][1:]) != (N_CLASSES,):
        raise DigitnetError(
            f"model: {file} gives outputs of shape {shapes[1][1:]}, not the {N_CLASSES} digit classes; "
            "give a digitnet model"
        )
    last = model.layers[-1] if model.layers else None
    if not (isinstance(last, keras.layers.Softmax) or getattr(last, "activation", None) is keras.activations.softmax):
        raise DigitnetError(
            f"model: {file} does not end in a softmax, so its outputs are not probabilities; give a digitnet model"
        )


def layer_sizes(model: keras.Model) -> list[tuple[str, int, str]]:
    """(name, units, activation) of the input, each Dense layer and the output, for diagrams and APIs."""
    sizes = [("input", int(model.input_shape[-1]), "")]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            sizes.append((layer.name, int(layer.units), keras.activations.serialize(layer.activation)))
        elif isinstance(layer, keras.layers.Softmax):
            sizes[-1] = (*sizes[-1][:2], "softmax")
    return sizes


def logits_model(model: keras.Model) -> keras.Model:
    """The same network, sharing its variables, ending at the output layer's logits (before the softmax)."""
    return keras.Model(model.inputs, model.get_layer("output").output, name=f"{model.name}_logits")


def make_predict_fn(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled function from float32 pixels in [0, 1], shape (N, 784), to class probabilities (N, 10).

    The weights are passed as arguments, not captured, so XLA compiles once per input shape.
    Callers that serve many small requests should pad to a few fixed batch sizes.
    """
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, x):
        probs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return probs

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(forward(trainable, non_trainable, np.asarray(x, np.float32).reshape(len(x), N_PIXELS)))

    return predict


def _softmax_rows(h: np.ndarray) -> None:
    """Softmax over each row, in place, shifted by the row's maximum so that exp cannot overflow."""
    h -= h.max(axis=1, keepdims=True)
    np.exp(h, out=h)
    h /= h.sum(axis=1, keepdims=True)


# Each activation a served network may use, as NumPy computes it in place on float32 rows.
_NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], None]] = {
    "linear": lambda h: None,
    "relu": lambda h: np.maximum(h, 0.0, out=h),
    "tanh": lambda h: np.tanh(h, out=h),
    "sigmoid": lambda h: scipy.special.expit(h, out=h),  # no overflow for large negative inputs
    "softmax": _softmax_rows,
}


def make_numpy_predict_fn(model: keras.Model) -> Callable[[np.ndarray], np.ndarray] | None:
    """The forward pass of make_predict_fn in NumPy, for a network of float32 Dense layers (and Dropout,
    Softmax); None for any other network, which make_predict_fn still serves.

    For the few images a server reads at a time this is the quicker one, about twice as quick as a call of
    the compiled function (docs/serve-speed.md), and there is nothing to compile when the model loads.
    Probabilities agree with Keras' to about 1e-7.
    """
    steps = _numpy_steps(model)
    if steps is None:
        return None

    def predict(x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, np.float32).reshape(len(x), N_PIXELS)
        for kernel, bias, activation in steps:
            if kernel is not None:
                h = h @ kernel  # a new array: the caller's x is never written
                if bias is not None:
                    h += bias
            activation(h)
        return h

    return predict


def make_numpy_activations_fn(model: keras.Model) -> Callable[[np.ndarray], list[np.ndarray]] | None:
    """The NumPy forward pass that also keeps what each Dense layer gives, after its activation: one array
    (N, units) per layer, the last being the probabilities. None where make_numpy_predict_fn is None."""
    steps = _numpy_steps(model)
    if steps is None:
        return None

    def activations(x: np.ndarray) -> list[np.ndarray]:
        h = np.asarray(x, np.float32).reshape(len(x), N_PIXELS)
        outputs = []
        for kernel, bias, activation in steps:
            if kernel is not None:
                h = h @ kernel  # a new array, so the layers kept before are never written
                if bias is not None:
                    h += bias
                outputs.append(h)
            activation(h)  # the softmax step turns the output layer's logits into probabilities in place
        return outputs

    return activations


def _numpy_steps(model: keras.Model) -> list[tuple[np.ndarray | None, np.ndarray | None, Callable]] | None:
    """(kernel, bias, in-place activation) for each Dense and Softmax layer, or None for a network the NumPy
    forward pass cannot run."""
    steps: list[tuple[np.ndarray | None, np.ndarray | None, Callable[[np.ndarray], None]]] = []
    for layer in model.layers:
        if layer.dtype_policy.name != "float32":  # mixed precision or quantized weights
            return None
        if isinstance(layer, keras.layers.Dense):
            name = keras.activations.serialize(layer.activation)  # a dict for a custom activation
            activation = _NUMPY_ACTIVATIONS.get(name) if isinstance(name, str) else None
            if activation is None or layer.lora_enabled:
                return None
            bias = np.asarray(layer.bias, np.float32) if layer.use_bias else None
            steps.append((np.asarray(layer.kernel, np.float32), bias, activation))
        elif isinstance(layer, keras.layers.Softmax) and layer.axis in (-1, 1):
            steps.append((None, None, _softmax_rows))
        elif not isinstance(layer, keras.layers.Dropout):  # Dropout does nothing at inference
            return None
    if not steps or steps[0][0] is None or steps[0][0].shape[0] != N_PIXELS or model.output_shape[-1] != N_CLASSES:
        return None
    return steps

"""The small network that tests read non-MNIST digits with: 784-128-10 ReLU trained on a slice of real MNIST."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)

# isort: split

from digitnet.config import TrainConfig
from digitnet.model import build_model, make_predict_fn

N_TRAIN = 20_000  # first images of MNIST's training set: 3 epochs of them take a few seconds


def train_small_model(mnist, n_train: int = N_TRAIN, epochs: int = 3) -> Callable[[np.ndarray], np.ndarray]:
    """A predict function, (N, 28, 28) or (N, 784) float32 in [0, 1] to (N, 10) probabilities, of a 784-128-10
    ReLU network trained the standard way (Adam, batches of 128, seed 0) on the first n_train MNIST images."""
    model = build_model(TrainConfig(hidden=(128,), activation="relu", seed=0))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pixels = mnist.train_images[:n_train].reshape(n_train, 784).astype(np.float32) / 255.0
    model.fit(pixels, mnist.train_labels[:n_train], epochs=epochs, batch_size=128, verbose=0)
    predict = make_predict_fn(model)
    return lambda images: predict(np.asarray(images, np.float32).reshape(len(images), 784))

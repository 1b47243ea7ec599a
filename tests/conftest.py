"""Shared fixtures: the reference copy of MNIST beside the project, and small slices of it."""

from __future__ import annotations

from pathlib import Path

import pytest

import digitnet  # noqa: F401  (sets KERAS_BACKEND before any test imports keras)

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not MNIST_DIR.is_dir():
        pytest.fail(f"the reference MNIST copy is missing at {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from digitnet.data import load_mnist

    return load_mnist(mnist_dir)

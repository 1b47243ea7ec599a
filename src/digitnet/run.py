"""The run folder: its file names, which process may train in it, and reading and writing its records.

A run folder is what `digitnet train` leaves: config.json, history.csv, checkpoint.npz, model.keras and
metrics.json; `evaluate` adds evaluation.json, `report` report.html and plots/. One process at a time trains
in a folder: it holds an exclusive lock on the folder's .lock file, which the operating system releases when
the process ends, however it ends (Ctrl-C, a crash, kill -9), so a folder is never left locked.

This module needs neither JAX nor Keras (and NumPy only for checkpoints): `report`, `predict` and `serve` read
a run through it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitnet.config import TrainConfig
from digitnet.errors import DigitnetError
from digitnet.files import write_atomic

try:
    import fcntl
except ImportError:  # not on Windows: there a run folder is not locked
    fcntl = None

CONFIG = "config.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.npz"
PREVIOUS_CHECKPOINT = "checkpoint.prev.npz"  # the one before: resumed from when the latest is damaged
MODEL = "model.keras"
METRICS = "metrics.json"
EVALUATION = "evaluation.json"
REPORT = "report.html"
PLOTS = "plots"
LOCK = ".lock"
FINISHED = (CONFIG, HISTORY, METRICS, MODEL)  # what a finished training run leaves behind
HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
STATE_GROUPS = ("trainable", "non_trainable", "optimizer")  # the arrays of a checkpoint, by group
# Where a run keeps its test accuracy: written by `digitnet train`, then by `digitnet evaluate`.
TEST_ACCURACY_KEYS = ((METRICS, "test_accuracy"), (EVALUATION, "accuracy"))

_claimed: dict[Path, int] = {}  # the folders this process holds, and the descriptor of each lock


class RunInUse(DigitnetError):
    """Another process is training in the run folder (`pid`, when known)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


@dataclass(frozen=True)
class RunDir:
    """One run folder, whether or not it exists yet."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __str__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------ which process trains here

    def holder(self) -> int | None:
        """The id of the process training in this folder, or None when none is."""
        if self.path.resolve() in _claimed:
            return os.getpid()
        if fcntl is None:
            return None
        try:
            fd = os.open(self.file(LOCK), os.O_RDONLY)
        except OSError:  # no lock file (never trained in), or not readable: nobody holds it
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd) or -1
        finally:
            os.close(fd)  # closing also drops the shared lock just taken
        return None

    def check_idle(self) -> None:
        """RunInUse when another process is training in this folder: its files are not all written yet."""
        pid = self.holder()
        if pid is not None and pid != os.getpid():
            raise RunInUse(
                f"{self.path}: a run is still training here ({describe_process(pid)}); "
                "wait for it to finish, or stop it (Ctrl-C) and continue it later with --resume",
                pid,
            )

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Create the folder if need be and hold it for this process until the block ends; RunInUse if another holds it.

        Claims nest within a process (a sweep's trial, then the training it runs).
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DigitnetError(
                f"cannot create the run folder {self.path}: {err.strerror or err}; choose another --out"
            ) from None
        key = self.path.resolve()
        if key in _claimed or fcntl is None:
            yield
            return
        fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            os.close(fd)
            raise RunInUse(
                f"{self.path}: in use by {describe_process(pid)}, which is training in it; wait for it to end, "
                "or choose another folder",
                pid,
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _claimed[key] = fd
        try:
            yield
        finally:
            del _claimed[key]
            os.close(fd)  # releases the lock; the file stays, with a stale id that no one reads unlocked

    # ------------------------------------------------------------ what the folder holds

    def check_new(self) -> None:
        """Refuse a folder that is a file, is in use, or holds another run.

        A folder holding only a config.json (a run stopped before its first epoch, or one that failed to start)
        has nothing to lose, so a new run may take it over.
        """
        if self.path.exists() and not self.path.is_dir():
            raise DigitnetError(f"{self.path}: is a file, not a folder; choose another --out")
        self.check_idle()
        if self.path.exists() and any(p.name not in (CONFIG, LOCK) for p in self.path.iterdir()):
            raise DigitnetError(
                f"{self.path}: folder exists and is not empty; continue it with "
                f"--resume {self.path} or choose another --out"
            )

    def check_resumable(self) -> None:
        """Refuse a --resume folder that holds no run, or that another process is training in."""
        if not self.file(CONFIG).is_file():
            problem = (
                "not a folder" if self.path.exists() and not self.path.is_dir() else "not a run folder (no config.json)"
            )
            raise DigitnetError(f"{self.path}: {problem}; give the folder a training run wrote")
        self.check_idle()

    def check_finished(self) -> None:
        """A DigitnetError naming what a finished run folder lacks, and what to do about it."""
        if not self.path.is_dir():
            problem = "not a folder" if self.path.exists() else "no such folder"
            raise DigitnetError(f"{self.path}: {problem}; give the run folder that `digitnet train` wrote")
        self.check_idle()
        missing = [name for name in FINISHED if not self.file(name).is_file()]
        if missing:
            raise DigitnetError(
                f"{self.path}: not a finished run folder, missing {', '.join(missing)}"
                f"{self._unfinished_hint()}; give a folder that `digitnet train` completed"
            )

    def _unfinished_hint(self) -> str:
        if self.file(CHECKPOINT).is_file() or self.file(PREVIOUS_CHECKPOINT).is_file():
            return f" (an unfinished run: continue it with `digitnet train --resume {self.path}`)"
        return ""

    def model_file(self) -> Path:
        """The folder's model.keras, once no process is writing the run; a DigitnetError saying what is wrong."""
        self.check_idle()
        if not self.file(MODEL).is_file():
            raise DigitnetError(
                f"model: {self.path} is a folder without {MODEL}{self._unfinished_hint()}; give a training run folder"
            )
        return self.file(MODEL)

    # ------------------------------------------------------------ records

    def write_config(self, config: TrainConfig) -> None:
        write_atomic(self.file(CONFIG), json.dumps(config.to_dict(), indent=2) + "\n")

    def read_config(self) -> TrainConfig:
        return TrainConfig.load(self.file(CONFIG))

    def write_history(self, history: list[dict]) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=HISTORY_KEYS)
                writer.writeheader()
                writer.writerows(history)

        write_atomic(self.file(HISTORY), write)

    def read_history(self) -> list[dict]:
        """The rows of history.csv, one per epoch; a DigitnetError if the file does not parse."""
        path = self.file(HISTORY)
        try:
            with open(path, newline="") as handle:
                return [
                    {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                    for row in csv.DictReader(handle)
                ]
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise DigitnetError(f"{path}: unreadable history ({err}); retrain the run or restore the file") from None

    def write_json(self, name: str, data: dict) -> None:
        write_atomic(self.file(name), json.dumps(data, indent=2) + "\n")

    def read_json(self, name: str) -> dict:
        """A JSON object of the folder (metrics.json, evaluation.json), or a DigitnetError naming the broken file."""
        path = self.file(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise DigitnetError(f"{path}: unreadable JSON ({err}); retrain the run or restore the file") from None
        if not isinstance(data, dict):
            raise DigitnetError(f"{path}: expected a JSON object; retrain the run or restore the file")
        return data

    def test_accuracy(self) -> float | None:
        """The test accuracy saved by training or evaluation, or None when there is none."""
        for name, key in TEST_ACCURACY_KEYS:
            try:
                value = self.read_json(name).get(key)
            except DigitnetError:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None

    # ------------------------------------------------------------ checkpoints

    def save_checkpoint(self, groups: tuple[list, ...], epoch: int) -> None:
        """Write the training state after `epoch`; the checkpoint it replaces is kept as the previous one.

        A write that fails (a full disk) leaves both as they were and raises WriteError.
        """
        import numpy as np  # here: a sweep's worker reads this module before it sets NumPy's thread count

        arrays = {
            f"{group}_{i}": np.asarray(a) for group, values in zip(STATE_GROUPS, groups) for i, a in enumerate(values)
        }

        def write(tmp: Path) -> None:
            np.savez(tmp, epoch=epoch, **arrays)
            if self.file(CHECKPOINT).is_file():  # written whole: only now is the latest one superseded
                os.replace(self.file(CHECKPOINT), self.file(PREVIOUS_CHECKPOINT))

        write_atomic(self.file(CHECKPOINT), write)

    def load_checkpoint(self, sizes: tuple[int, ...], log: Any = print) -> tuple[tuple[list, ...], int] | None:
        """(arrays by group, epoch) of the latest readable checkpoint, or None when there is none.

        `sizes` gives the number of arrays in each group. A damaged latest checkpoint is reported and the previous
        one used; when neither can be read, a DigitnetError says so.
        """
        import numpy as np

        candidates = [self.file(name) for name in (CHECKPOINT, PREVIOUS_CHECKPOINT) if self.file(name).is_file()]
        problems = []
        for path in candidates:
            try:
                with np.load(path) as saved:
                    groups = tuple(
                        [np.asarray(saved[f"{group}_{i}"]) for i in range(n)] for group, n in zip(STATE_GROUPS, sizes)
                    )
                    epoch = int(saved["epoch"])
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                problems.append(f"{path.name} is damaged ({_first_line(err)})")
                continue
            if problems:
                log(f"{problems[0]}; resuming from {path.name}, after epoch {epoch}")
            return groups, epoch
        if problems:
            raise DigitnetError(f"{self.path}: {' and '.join(problems)}; train afresh in another folder")
        return None


def model_file(path: str | os.PathLike) -> Path:
    """The .keras file of a run folder (its model.keras) or given directly; a DigitnetError that says what is wrong."""
    path = Path(path)
    if path.is_dir():
        return RunDir(path).model_file()
    if not path.exists():
        raise DigitnetError(f"model: {path} does not exist; give a training run folder or a .keras file")
    if path.suffix != ".keras":
        raise DigitnetError(f"model: {path} is not a .keras file; give a training run folder or a .keras file")
    if path.name == MODEL:
        RunDir(path.parent).check_idle()
    return path


def _pid_in(fd: int) -> int | None:
    """The process id written in a lock file, or None if it holds none."""
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def describe_process(pid: int | None) -> str:
    """'process 123', or 'another process' when its id is not known."""
    return f"process {pid}" if pid and pid > 0 else "another process"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

"""The sweep folder: sweep.json (the grid), results.csv (one row per finished trial), runs/ (a run folder per trial).

Several `digitnet sweep` processes on one machine may share a folder: each row is appended under an OS lock on
results.csv, and read back with one row per trial, whatever the file holds. (Which process trains which trial is
settled by the lock on each trial's run folder: see digitnet.run.)
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from digitnet.config import FULL_BATCH
from digitnet.errors import DigitnetError
from digitnet.files import WriteError
from digitnet.sweep.grid import SweepConfig, Trial

try:
    import fcntl
except ImportError:  # not on Windows: there a sweep folder is not shared safely
    fcntl = None

RESULTS_FILE, SWEEP_FILE, RUNS_DIR = "results.csv", "sweep.json", "runs"
SUMMARY_FILE, PLOT_FILE, TUNE_DIR, LOCK = "summary.md", "sweep.png", "tune", ".lock"
RESULT_COLUMNS = (
    "trial_id",
    "width",
    "depth",
    "activation",
    "batch_size",
    "seed",
    "params",
    "val_accuracy",
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "compile_seconds",
    "epochs",
    "wall_seconds",
)
INT_COLUMNS = ("width", "depth", "seed", "params", "epochs")
TEXT_COLUMNS = ("trial_id", "activation")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive OS lock on `path` (created if need be) for the block: a moment, not a trial."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process ends
        yield


def run_dir(sweep_dir: Path, trial: Trial) -> Path:
    """Where a trial's run folder lives."""
    return Path(sweep_dir) / RUNS_DIR / trial.trial_id


def config_differences(saved: SweepConfig, given: SweepConfig) -> list[str]:
    """'field: saved X, given Y' for each setting two sweeps disagree on."""
    saved_dict, given_dict = saved.to_dict(), given.to_dict()
    lines = [
        f"{k}: saved {saved_dict[k]}, given {given_dict[k]}"
        for k in saved_dict
        if k != "base" and saved_dict[k] != given_dict[k]
    ]
    base_saved, base_given = saved_dict["base"], given_dict["base"]
    lines += [
        f"{k}: saved {base_saved[k]!r}, given {base_given[k]!r}" for k in base_saved if base_saved[k] != base_given[k]
    ]
    return lines


def prepare_sweep_dir(sweep_dir: Path, sweep: SweepConfig) -> None:
    """Create the sweep folder with its sweep.json, or check that an existing one holds this very sweep."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise DigitnetError(f"{sweep_dir}: is a file, not a folder; give a folder for the sweep")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DigitnetError(
            f"cannot create the sweep folder {sweep_dir}: {err.strerror or err}; give another folder"
        ) from None
    with locked(sweep_dir / LOCK):  # two sweeps started at once: one writes sweep.json, the other checks it
        saved_path = sweep_dir / SWEEP_FILE
        if saved_path.is_file():
            differences = config_differences(SweepConfig.load(saved_path), sweep)
            if differences:
                raise DigitnetError(
                    f"{sweep_dir} holds another sweep ({'; '.join(differences)}); continue it with "
                    f"`digitnet sweep {sweep_dir} --resume`, or give another folder"
                )
            return
        if (sweep_dir / RESULTS_FILE).exists():
            raise DigitnetError(f"{sweep_dir} has {RESULTS_FILE} but no {SWEEP_FILE}; give another folder")
        sweep.save(saved_path)


class ResultsStore:
    """results.csv of a sweep folder: rows appended one at a time, each forced to disk, read with their types."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, sweep_dir: Path) -> "ResultsStore":
        return cls(Path(sweep_dir) / RESULTS_FILE)

    def append(self, row: dict) -> bool:
        """Append one finished trial's row, unless the file has one for it already; True if written.

        Under the lock, so that rows of two processes never interleave; forced to disk, so that a kill a moment
        later never loses the finished trial.
        """
        try:
            with locked(self.path.with_name(f".{self.path.name}.lock")):
                self._drop_torn_row()
                if row["trial_id"] in self.finished():
                    return False
                new = not self.path.exists() or self.path.stat().st_size == 0
                with open(self.path, "a", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
                    if new:
                        writer.writeheader()
                    writer.writerow({k: row[k] for k in RESULT_COLUMNS})
                    handle.flush()
                    os.fsync(handle.fileno())
                return True
        except OSError as err:
            raise WriteError(f"cannot write {self.path}: {err.strerror or err}") from None

    def _drop_torn_row(self) -> None:
        """Cut a last line left half-written by a crash, so the next row starts on a line of its own."""
        if not self.path.exists():
            return
        text = self.path.read_bytes()
        if text and not text.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(text.rfind(b"\n") + 1)

    def rows(self) -> list[dict]:
        """The rows of results.csv with their types, one per trial (the first written); [] if there is no file yet."""
        if not self.path.exists():
            return []
        with open(self.path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames and tuple(reader.fieldnames) != RESULT_COLUMNS:
                raise DigitnetError(
                    f"{self.path}: columns {reader.fieldnames} are not a sweep's ({', '.join(RESULT_COLUMNS)})"
                )
            rows: dict[str, dict] = {}
            for row in reader:
                if None not in row.values() and row["trial_id"] not in rows:  # a torn last line has too few fields
                    rows[row["trial_id"]] = _typed(row)
            return list(rows.values())

    def finished(self) -> set[str]:
        """The ids of the trials with a row."""
        return {row["trial_id"] for row in self.rows()}


def _typed(row: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for key, value in row.items():
        if key in TEXT_COLUMNS:
            typed[key] = value
        elif key == "batch_size":
            typed[key] = value if value == FULL_BATCH else int(value)
        else:
            typed[key] = int(value) if key in INT_COLUMNS else float(value)
    return typed


def read_results(path: Path) -> list[dict]:
    """The rows of a results.csv, one per trial."""
    return ResultsStore(path).rows()

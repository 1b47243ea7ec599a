"""Running a sweep: which trials remain, which runner trains them, the table printed as they end, the report after.

Every trial is `train_and_evaluate` on the base config with the trial's width, depth, activation, batch size and
seed. It writes its run folder to SWEEP_DIR/runs/<trial-id>/ and one row to SWEEP_DIR/results.csv as soon as it
finishes, so a killed sweep continues where it stopped and never trains a finished trial again; two sweeps on
one folder divide its trials. The best cell is chosen on validation accuracy; the test accuracy of every trial
is reported and never used to choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from digitnet.config import ConfigError
from digitnet.errors import DigitnetError
from digitnet.interrupts import saves_on_ctrl_c
from digitnet.sweep.grid import SweepConfig, Trial
from digitnet.sweep.runners import ByThreads, InProcess, LocalPool, RayTune, Runner
from digitnet.sweep.stats import counted
from digitnet.sweep.store import RESULTS_FILE, RUNS_DIR, ResultsStore, prepare_sweep_dir
from digitnet.sweep.summary import write_report

if TYPE_CHECKING:
    from digitnet.data import Mnist


def table_header(id_width: int) -> str:
    """The header of the table printed as trials finish."""
    return (
        f"{'done':>9}  {'trial':<{id_width}}  {'width':>5} {'depth':>5} {'activation':<10} {'batch':>5} {'seed':>4} "
        f"{'params':>9} {'val_acc':>7} {'test_acc':>8} {'test_loss':>9} {'train_s':>8} {'wall_s':>7}"
    )


def format_row(row: dict, id_width: int, done: str) -> str:
    """One fixed-width table line per finished trial; accuracies as fractions, like the epoch lines."""
    return (
        f"{done:>9}  {row['trial_id']:<{id_width}}  {row['width']:>5} {row['depth']:>5} {row['activation']:<10} "
        f"{row['batch_size']!s:>5} {row['seed']:>4} {row['params']:>9,} {row['val_accuracy']:>7.4f} "
        f"{row['test_accuracy']:>8.4f} {row['test_loss']:>9.4f} {row['train_seconds']:>8.2f} "
        f"{row['wall_seconds']:>7.2f}"
    )


@dataclass
class Recorder:
    """Takes each trial's outcome as it arrives: prints a finished row, notes a failed trial or one left to another
    process. (The row itself is already in results.csv: the process that trained it wrote it.)"""

    total: int
    done: int
    id_width: int
    log: Callable[[str], None]
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    started: bool = False

    def take(self, outcome: dict) -> None:
        if not self.started:  # printed with the first outcome, below whatever the runner printed as it started
            self.log(table_header(self.id_width))
            self.started = True
        if "error" in outcome:
            self.failed.append(outcome["trial_id"])
            self.log(f"{outcome['trial_id']}: failed: {outcome['error']}")
        elif "busy" in outcome:
            self.busy.append(outcome["trial_id"])
            self.log(f"{outcome['trial_id']}: left to another sweep: {outcome['busy']}")
        else:
            self.done += 1
            self.log(format_row(outcome, self.id_width, f"{self.done}/{self.total}"))


def choose_runner(
    workers: int | None, ray_address: str | None, cpus_per_trial: float, data: Mnist | None, data_dir: str | None
) -> Runner:
    """The runner the options ask for: Ray Tune, a pool of local workers, this process, or by default each trial
    side by side or alone, whichever trains it sooner here (ByThreads)."""
    if workers is None and ray_address:
        workers = 1
    elif workers is None:  # MNIST given in memory is trained on here: worker processes read theirs from files
        return InProcess(data, data_dir) if data is not None else ByThreads(data_dir)
    if workers < 1:
        raise ConfigError(f"workers: got {workers}; allowed: a whole number >= 1")
    if workers > 1 and ray_address not in (None, "local"):
        raise ConfigError("workers: a Ray cluster runs as many trials at once as its CPUs allow; use --cpus-per-trial")
    if ray_address:
        return RayTune(ray_address, data_dir, cpus_per_trial, num_cpus=workers if workers > 1 else None)
    if workers > 1:
        return LocalPool(workers, data_dir)
    return InProcess(data, data_dir)


def run_sweep(
    sweep: SweepConfig,
    sweep_dir: str | Path,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    cpus_per_trial: float = 1,
    data: Mnist | None = None,
    data_dir: str | Path | None = None,
    log: Callable[[str], None] = partial(print, flush=True),
) -> list[dict]:
    """Train every trial of the sweep not yet in results.csv, each row written as its trial ends; then write the report.

    By default each trial runs the way it trains soonest here: side by side with others, one per core, or alone
    on all cores (ByThreads); or, when `data` is given, in this process. `workers` = 1 runs them one by one in this
    process, `workers` > 1 in that many local processes; `ray_address` ('auto', 'local' or host:port) runs them as
    Ray Tune trials instead. Returns all rows of results.csv.
    """
    sweep_dir = Path(sweep_dir).resolve()  # workers and Ray trials run in other working folders
    if data_dir:
        data_dir = str(Path(data_dir).resolve())
    elif data is None:  # named to the trials, which Ray may run on machines that do not share this environment
        from digitnet.data import environment_folder, get_dataset  # here: workers import this module before NumPy

        folder = environment_folder(get_dataset(sweep.base.dataset))
        data_dir = str(folder.resolve()) if folder else None
    runner = choose_runner(workers, ray_address, cpus_per_trial, data, data_dir)
    prepare_sweep_dir(sweep_dir, sweep)
    trials = sweep.trials()
    pending = pending_trials(trials, ResultsStore.of(sweep_dir))
    log(
        f"sweep {sweep_dir}: {counted(len(trials), 'trial')}, {len(trials) - len(pending)} finished before, "
        f"{len(pending)} to run {runner.where}"
    )
    recorder = Recorder(len(trials), len(trials) - len(pending), max(len(t.trial_id) for t in trials), log)
    try:
        with saves_on_ctrl_c():  # the pool and Ray are stopped, and finished trials kept, below
            if pending:
                runner.run(pending, sweep.base, sweep_dir, recorder.take)
    except KeyboardInterrupt:
        log(
            f"interrupted: {recorder.done} of {counted(len(trials), 'trial')} finished, saved in "
            f"{sweep_dir / RESULTS_FILE}; run the same command to continue"
        )
        raise
    return finish_sweep(sweep_dir, len(trials), recorder, log)


def pending_trials(trials: Sequence[Trial], store: ResultsStore) -> list[Trial]:
    """The trials without a row in results.csv yet."""
    finished = store.finished()
    return [trial for trial in trials if trial.trial_id not in finished]


def finish_sweep(sweep_dir: Path, n_trials: int, recorder: Recorder, log: Callable[[str], None]) -> list[dict]:
    """Write the report from every row so far, say what is missing, and return the rows."""
    rows = ResultsStore.of(sweep_dir).rows()
    if rows:
        summary, plot = write_report(sweep_dir)
        log(f"summary: {summary}\nplot:    {plot}")
    if recorder.failed:
        raise DigitnetError(
            f"{counted(len(recorder.failed), 'trial')} failed ({', '.join(recorder.failed)}); the others "
            f"are in {sweep_dir / RESULTS_FILE}; their run folders under {sweep_dir / RUNS_DIR} say more"
        )
    missing = n_trials - len(rows)
    if missing and recorder.busy:
        log(
            f"{missing} of {counted(n_trials, 'trial')} are still being trained by another sweep process; "
            "it writes the summary with them when it ends"
        )
    elif missing:
        log(f"{missing} of {counted(n_trials, 'trial')} did not finish; run the same command to continue")
    return rows

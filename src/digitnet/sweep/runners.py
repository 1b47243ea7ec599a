"""Who trains the trials: this process, a pool of local worker processes, or Ray Tune; one interface for all three.

Every runner calls `run_trial` for each trial and hands each outcome to the `take` function it is given, as the
trial ends: a results row, {"trial_id", "error"} for a trial that failed, or {"trial_id", "busy"} for a trial
that another process is training (two sweeps sharing a folder divide the trials between them that way).

This module imports neither JAX nor NumPy at the top: a worker process must pin itself to its cores before
their thread pools start, so the imports that start them sit in the few functions that need them.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import queue
import signal
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from digitnet.config import ConfigError, TrainConfig
from digitnet.errors import DigitnetError
from digitnet.machine import side_by_side, use_cores
from digitnet.run import CONFIG, LOCK, RunDir, RunInUse, describe_process
from digitnet.sweep.grid import Trial, largest_first
from digitnet.sweep.store import TUNE_DIR, ResultsStore, run_dir

if TYPE_CHECKING:
    from digitnet.data import Mnist

Take = Callable[[dict], None]


# ---------------------------------------------------------------- one trial


def run_trial(
    trial: Trial,
    base: TrainConfig,
    sweep_dir: Path,
    *,
    data: Mnist | None = None,
    data_dir: str | Path | None = None,
    record: bool = True,
) -> dict:
    """Train one trial into SWEEP_DIR/runs/<trial-id>, continuing a half-finished folder; return its results row.

    The trial's run folder is held by this process from before it checks results.csv until its row is written
    there (with `record`), so no other process trains it meanwhile, and none trains it once it has a row.
    A trial another process holds raises RunInUse.
    """
    # Imported here: a worker pins itself to its cores before JAX is loaded (see the module docstring).
    from digitnet.train import train_and_evaluate

    out_dir = run_dir(sweep_dir, trial)
    config = trial.config(base)
    store = ResultsStore.of(sweep_dir)
    with RunDir(out_dir).claim():
        if trial.trial_id in store.finished():
            raise RunInUse("finished by another process")
        started = time.perf_counter()
        metrics = train_and_evaluate(
            config, out_dir, data=data, data_dir=data_dir, resume=resumable(out_dir, config), log=lambda _: None
        )
        row = result_row(trial, metrics, time.perf_counter() - started)
        if record:
            store.append(row)
    return row


def resumable(out_dir: Path, config: TrainConfig) -> bool:
    """Whether a trial's folder holds a started run of this config; a folder with no readable config is emptied."""
    run = RunDir(out_dir)
    try:
        saved = run.read_config() if run.file(CONFIG).is_file() else None
    except ConfigError:
        saved = None
    if saved is None:  # nothing trained yet: what a kill left (a partial file) goes, the lock this process holds stays
        for path in out_dir.iterdir():
            if path.name != LOCK:
                path.unlink()
        return False
    if saved != config:
        raise DigitnetError(f"{out_dir} holds a run of another config; delete that folder to train this trial afresh")
    return True


def result_row(trial: Trial, metrics: dict, wall_seconds: float) -> dict:
    """One line of results.csv from a trial and the metrics `train_and_evaluate` returned."""
    return {
        "trial_id": trial.trial_id,
        "width": trial.width,
        "depth": trial.depth,
        "activation": trial.activation,
        "batch_size": trial.batch_size,
        "seed": trial.seed,
        "params": metrics["params"],
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        "train_seconds": round(metrics["train_seconds"], 3),
        "compile_seconds": round(metrics["compile_seconds"], 3),
        "epochs": metrics["epochs"],
        "wall_seconds": round(wall_seconds, 3),
    }


def attempt_trial(trial: Trial, base: TrainConfig, sweep_dir: Path, data: Mnist | None, record: bool = True) -> dict:
    """`run_trial`, with the trial's own failure (a diverged loss, say) returned as {trial_id, error}, so others go
    on, and a trial held by another process as {trial_id, busy}."""
    try:
        return run_trial(trial, base, sweep_dir, data=data, record=record)
    except RunInUse as err:
        return {"trial_id": trial.trial_id, "busy": f"trained by {describe_process(err.pid)}" if err.pid else str(err)}
    except DigitnetError as err:
        return {"trial_id": trial.trial_id, "error": str(err)}


@lru_cache(maxsize=2)
def load_data(dataset: str, data_dir: str | None) -> Mnist:
    """The sweep's data set, read once per process, however many trials the process runs."""
    # Imported here: NumPy reads its thread settings when it loads, after a worker has set them.
    from digitnet.data import load_dataset

    return load_dataset(dataset, data_dir)


class Runner(Protocol):
    """Trains trials and hands each outcome to `take` as the trial ends."""

    where: str  # for the sweep's first line: "in this process", "in 2 worker processes", "on Ray (auto)"

    def run(self, trials: Sequence[Trial], base: TrainConfig, sweep_dir: Path, take: Take) -> None: ...


# ---------------------------------------------------------------- this process


class InProcess:
    """Trials one after another in this process, on the data read once."""

    where = "in this process"

    def __init__(self, data: Mnist | None, data_dir: str | None) -> None:
        self.data, self.data_dir = data, data_dir

    def run(self, trials: Sequence[Trial], base: TrainConfig, sweep_dir: Path, take: Take) -> None:
        data = self.data or load_data(base.dataset, self.data_dir)
        for trial in trials:
            take(attempt_trial(trial, base, sweep_dir, data))


# ---------------------------------------------------------------- local worker processes


def core_shares(workers: int, cores: Sequence[int] | None = None) -> list[set[int]]:
    """Split the cores this process may use into one share per worker (shared round-robin when too few)."""
    cores = sorted(os.sched_getaffinity(0) if cores is None else cores)
    if workers >= len(cores):
        return [{cores[i % len(cores)]} for i in range(workers)]
    size, extra = divmod(len(cores), workers)
    bounds = list(itertools.accumulate([size + (i < extra) for i in range(workers)], initial=0))
    return [set(cores[start:stop]) for start, stop in zip(bounds, bounds[1:])]


def pin_to_cores(cores: set[int]) -> None:
    """Keep this process, and the thread pools its libraries start from now on, to `cores` (see digitnet.machine)."""
    use_cores(cores)


def _init_worker(shares: Any, dataset: str, data_dir: str | None) -> None:
    """Start a worker process: take a share of the cores (before JAX loads), then read the data once for all its
    trials."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the whole pool
    try:
        use_cores(shares.get(timeout=10))
    except queue.Empty:
        use_cores()  # a worker started to replace a crashed one finds no share left and uses all cores
    load_data(dataset, data_dir)


def _pool_trial(task: tuple[Trial, TrainConfig, str, str | None]) -> dict:
    trial, base, sweep_dir, data_dir = task
    return attempt_trial(trial, base, Path(sweep_dir), load_data(base.dataset, data_dir))


class LocalPool:
    """Trials in `workers` processes of this machine, each pinned to its share of the cores."""

    def __init__(self, workers: int, data_dir: str | None, cores: Sequence[int] | None = None) -> None:
        self.workers, self.data_dir, self.cores = workers, data_dir, cores
        self.where = f"in {workers} worker processes"

    def run(self, trials: Sequence[Trial], base: TrainConfig, sweep_dir: Path, take: Take) -> None:
        # Spawn, not fork: a forked child would inherit a copy of JAX's threads and locks mid-flight.
        context = multiprocessing.get_context("spawn")
        shares = context.Queue()
        for share in core_shares(self.workers, self.cores):
            shares.put(share)
        tasks = [(trial, base, str(sweep_dir), self.data_dir) for trial in largest_first(trials)]
        # Leaving the block terminates the workers, on Ctrl-C too; a half-trained trial resumes from its checkpoint.
        initargs = (shares, base.dataset, self.data_dir)
        with context.Pool(self.workers, initializer=_init_worker, initargs=initargs) as pool:
            for outcome in pool.imap_unordered(_pool_trial, tasks):
                take(outcome)


class ByThreads:
    """The default: each trial trained the fastest way this machine allows (digitnet.machine).

    Trials whose training step is small train fastest on one thread, so they run side by side, one worker per
    core; trials whose products gain from every core run one at a time, in a worker that has all the cores.
    """

    def __init__(self, data_dir: str | None) -> None:
        self.data_dir = data_dir
        self.cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self.where = f"side by side on {len(self.cores)} cores, or alone on all of them where that is faster"

    def split(self, trials: Sequence[Trial], base: TrainConfig) -> tuple[list[Trial], list[Trial]]:
        """(trials to run side by side, trials to run alone)."""
        apart, alone = [], []
        for trial in trials:
            config = trial.config(base)
            together = side_by_side(config.hidden, config.training_batch_size(), len(self.cores))
            (apart if together else alone).append(trial)
        return apart, alone

    def run(self, trials: Sequence[Trial], base: TrainConfig, sweep_dir: Path, take: Take) -> None:
        apart, alone = self.split(trials, base)
        if alone:
            LocalPool(1, self.data_dir, self.cores).run(alone, base, sweep_dir, take)
        if apart:
            workers = min(len(self.cores), len(apart))
            LocalPool(workers, self.data_dir, self.cores).run(apart, base, sweep_dir, take)


# ---------------------------------------------------------------- Ray Tune


def import_ray() -> tuple[Any, Any]:
    """The ray and ray.tune modules, or a DigitnetError that says how to install them."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise DigitnetError("--ray needs Ray Tune, an optional extra: pip install 'digitnet[ray]'") from None
    return ray, tune


def connect_ray(ray: Any, address: str, num_cpus: int | None) -> bool:
    """Join the Ray cluster at `address` ('auto': this machine's, 'local': start one here); False if joined already."""
    if ray.is_initialized():
        return False
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="warning")
        else:
            ray.init(address=address, logging_level="warning")
    except (ConnectionError, RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DigitnetError(
            f"--ray {address}: no Ray cluster there ({reason}); start one with `ray start --head`, or use --ray local"
        ) from None
    return True


def _ray_trial(params: dict, *, base: dict, sweep_dir: str, data_dir: str | None) -> None:
    """The Ray Tune function trainable: one trial, its outcome reported to Tune once (the driver writes the row)."""
    from ray import tune

    config = TrainConfig.from_dict(base)
    outcome = attempt_trial(
        Trial(**params["trial"]), config, Path(sweep_dir), load_data(config.dataset, data_dir), record=False
    )
    # Tune puts its own trial_id into every result, so the row travels whole as one JSON string.
    tune.report(
        {"outcome": json.dumps(outcome), **{k: outcome[k] for k in ("val_accuracy", "test_accuracy") if k in outcome}}
    )


def _tune_dirname(tune_trial: Any) -> str:
    return Trial(**tune_trial.config["trial"]).trial_id


def _row_callback(tune: Any, store: ResultsStore, take: Take) -> Any:
    """A Tune callback, run by the driver, that writes each trial's row and hands on its outcome as the trial ends."""

    class RecordRows(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            outcome = json.loads(trial.last_result["outcome"])
            if "error" not in outcome and "busy" not in outcome:
                store.append(outcome)
            take(outcome)

        def on_trial_error(self, iteration, trials, trial, **info):
            error = str(trial.get_error() or "no error message").strip().splitlines()[-1]
            take({"trial_id": _tune_dirname(trial), "error": f"Ray trial failed: {error} (log in {trial.local_path})"})

    return RecordRows()


class RayTune:
    """Trials as Ray Tune trials, `cpus_per_trial` CPUs each; the driver writes each row as its trial ends.

    On a cluster of several machines SWEEP_DIR and the data folder must be the same path on every one (a shared
    file system): the trials write their run folders there and read the data from there.
    """

    def __init__(self, address: str, data_dir: str | None, cpus_per_trial: float = 1, num_cpus: int | None = None):
        self.address, self.data_dir, self.cpus_per_trial, self.num_cpus = address, data_dir, cpus_per_trial, num_cpus
        self.where = f"on Ray ({address})"

    def run(self, trials: Sequence[Trial], base: TrainConfig, sweep_dir: Path, take: Take) -> None:
        ray, tune = import_ray()
        started_here = connect_ray(ray, self.address, self.num_cpus)
        try:
            trainable = tune.with_parameters(
                _ray_trial, base=base.to_dict(), sweep_dir=str(sweep_dir), data_dir=self.data_dir
            )
            tuner = tune.Tuner(
                tune.with_resources(trainable, {"cpu": self.cpus_per_trial}),
                param_space={"trial": tune.grid_search([vars(trial) for trial in largest_first(trials)])},
                # Reused actors keep JAX loaded and the data read between trials.
                tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=_tune_dirname),
                run_config=tune.RunConfig(
                    name=TUNE_DIR,
                    storage_path=str(sweep_dir),
                    verbose=0,
                    callbacks=[_row_callback(tune, ResultsStore.of(sweep_dir), take)],
                ),
            )
            tuner.fit()
        finally:
            if started_here:
                ray.shutdown()

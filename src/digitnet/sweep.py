"""The neurons x hidden-layers sweep: one training run per grid cell and seed, recorded the moment it ends.

Every trial is `train_and_evaluate` on the base config with the trial's width, depth, activation, batch size and
seed. It writes its run folder to SWEEP_DIR/runs/<trial-id>/ and one row to SWEEP_DIR/results.csv as soon as it
finishes, so a killed sweep continues where it stopped and never trains a finished trial again. Trials run in
this process, in worker processes pinned to their share of the cores, or as Ray Tune trials on a Ray cluster;
all three call the same `run_trial`. The best cell is chosen on validation accuracy; the test accuracy of every
trial is reported and never used to choose.

This module imports neither JAX nor NumPy at the top: a worker process must pin itself to its cores before
their thread pools start, so the imports that start them sit in the few functions that need them.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import multiprocessing
import os
import queue
import shutil
import signal
import statistics
import time
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from digitnet.config import ACTIVATIONS, FULL_BATCH, MAX_SEED, ConfigError, TrainConfig
from digitnet.errors import DigitnetError
from digitnet.files import write_atomic
from digitnet.interrupts import saves_on_ctrl_c

if TYPE_CHECKING:
    from digitnet.data import Mnist

RESULTS_FILE, SWEEP_FILE, RUNS_DIR = "results.csv", "sweep.json", "runs"
SUMMARY_FILE, PLOT_FILE, TUNE_DIR = "summary.md", "sweep.png", "tune"
RESULT_COLUMNS = ("trial_id", "width", "depth", "activation", "batch_size", "seed", "params", "val_accuracy",
                  "test_accuracy", "test_loss", "train_seconds", "compile_seconds", "epochs", "wall_seconds")
INT_COLUMNS = ("width", "depth", "seed", "params", "epochs")
TEXT_COLUMNS = ("trial_id", "activation")
N_PIXELS, N_CLASSES = 28 * 28, 10  # as in digitnet.model, which imports JAX
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DPI = 120  # as the run pictures in digitnet.plots
MIN_SEEDS = 2  # the fewest seeds per cell that give a spread, and so the fewest a verdict can rest on

Cell = tuple[str, "int | str", int, int]  # (activation, batch_size, depth, width): the trials of a cell differ by seed


# ---------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Trial:
    """One training run of the sweep: a cell of the grid and a seed."""

    width: int  # neurons in each hidden layer
    depth: int  # hidden layers
    activation: str
    batch_size: int | str  # 1 = stochastic, k = mini-batch, "full" = batch descent
    seed: int

    @property
    def trial_id(self) -> str:
        """The trial's name and its run folder's, e.g. w64-d2-relu-b128-s0."""
        return f"w{self.width}-d{self.depth}-{self.activation}-b{self.batch_size}-s{self.seed}"

    def config(self, base: TrainConfig) -> TrainConfig:
        """The base config with this trial's network, descent and seed."""
        return base.replace(hidden=(self.width,) * self.depth, activation=(self.activation,),
                            batch_size=self.batch_size, seed=self.seed)


@dataclass(frozen=True)
class SweepConfig:
    """The grid, the seeds and the base config all trials share; saved as SWEEP_DIR/sweep.json."""

    widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)  # neurons per hidden layer, doubling
    depths: tuple[int, ...] = (1, 2, 3)  # hidden layers, all of the same width
    activations: tuple[str, ...] = ()  # empty: the base config's activation
    batch_sizes: tuple[int | str, ...] = ()  # empty: the base config's batch size; "full" = batch descent
    seeds: tuple[int, ...] = (0, 1, 2)  # every cell is trained once per seed; mean and spread are over these
    base: TrainConfig = field(default_factory=TrainConfig)  # all else; each trial sets hidden, activation, batch_size, seed

    def __post_init__(self) -> None:
        # Sorted and without repeats, so the same grid given in another order is the same sweep.
        for name in ("widths", "depths", "seeds"):
            object.__setattr__(self, name, tuple(sorted(set(_whole_numbers(name, getattr(self, name))))))
        activations = tuple(dict.fromkeys(self.activations)) or _base_activation(self.base)
        batch_sizes = tuple(dict.fromkeys(self.batch_sizes)) or (self.base.batch_size,)
        object.__setattr__(self, "activations", activations)
        object.__setattr__(self, "batch_sizes", batch_sizes)
        if not self.widths or not self.depths or not self.seeds:
            raise ConfigError("sweep: give at least one width, one depth and one seed")
        if any(name not in ACTIVATIONS for name in activations):
            raise ConfigError(f"activations: got {list(activations)}; allowed: {', '.join(ACTIVATIONS)}")
        for trial in self.trials()[:: len(self.seeds)]:
            trial.config(self.base)  # validates batch sizes and the base, naming the field at fault

    def trials(self) -> list[Trial]:
        """Every trial, cell by cell (activation, batch size, depth, width), seeds innermost."""
        grid = itertools.product(self.activations, self.batch_sizes, self.depths, self.widths, self.seeds)
        return [Trial(width, depth, activation, batch_size, seed) for activation, batch_size, depth, width, seed in grid]

    def to_dict(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "depths": list(self.depths), "activations": list(self.activations),
                "batch_sizes": list(self.batch_sizes), "seeds": list(self.seeds), "base": self.base.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepConfig":
        known = ("widths", "depths", "activations", "batch_sizes", "seeds", "base")
        if sorted(data) != sorted(known):
            raise ConfigError(f"sweep config: got fields {', '.join(sorted(data))}; expected {', '.join(known)}")
        return cls(**{k: tuple(v) for k, v in data.items() if k != "base"}, base=TrainConfig.from_dict(data["base"]))

    def save(self, path: Path) -> None:
        write_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "SweepConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read sweep config {path}: {err}") from None


def _whole_numbers(name: str, values: Iterable[Any]) -> list[int]:
    values = list(values)
    low, high = (0, MAX_SEED) if name == "seeds" else (1, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high) for v in values):
        allowed = f"whole numbers from {low} to {high}" if high is not None else f"whole numbers >= {low}"
        raise ConfigError(f"{name}: got {values}; allowed: {allowed}")
    return values


def _base_activation(base: TrainConfig) -> tuple[str]:
    """The one activation of the base config; a sweep gives all hidden layers of a network the same one."""
    if len(set(base.activation)) != 1:
        raise ConfigError(f"activations: the base config has one per layer {list(base.activation)}; name the sweep's")
    return (base.activation[0],)


def counted(n: int, noun: str) -> str:
    """'1 trial', '2 trials': every count the sweep prints goes through here, so none reads '1 trials'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def count_params(width: int, depth: int) -> int:
    """Weights and biases of a 784 -> width x depth -> 10 network, without building it."""
    return (N_PIXELS + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * N_CLASSES


def largest_first(trials: Sequence[Trial]) -> list[Trial]:
    """Trials in order of falling size, so that no worker is left alone with a big one at the end."""
    return sorted(trials, key=lambda t: -count_params(t.width, t.depth))


def config_differences(saved: SweepConfig, given: SweepConfig) -> list[str]:
    """'field: saved X, given Y' for each setting two sweeps disagree on."""
    saved_dict, given_dict = saved.to_dict(), given.to_dict()
    lines = [f"{k}: saved {saved_dict[k]}, given {given_dict[k]}" for k in saved_dict if k != "base" and saved_dict[k] != given_dict[k]]
    base_saved, base_given = saved_dict["base"], given_dict["base"]
    lines += [f"{k}: saved {base_saved[k]!r}, given {base_given[k]!r}" for k in base_saved if base_saved[k] != base_given[k]]
    return lines


def prepare_sweep_dir(sweep_dir: Path, sweep: SweepConfig) -> None:
    """Create the sweep folder with its sweep.json, or check that an existing one holds this very sweep."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise DigitnetError(f"{sweep_dir}: is a file, not a folder; give a folder for the sweep")
    saved_path = sweep_dir / SWEEP_FILE
    if saved_path.is_file():
        differences = config_differences(SweepConfig.load(saved_path), sweep)
        if differences:
            raise DigitnetError(
                f"{sweep_dir} holds another sweep ({'; '.join(differences)}); continue it with "
                f"`digitnet sweep {sweep_dir} --resume`, or give another folder")
        return
    if (sweep_dir / RESULTS_FILE).exists():
        raise DigitnetError(f"{sweep_dir} has {RESULTS_FILE} but no {SWEEP_FILE}; give another folder")
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DigitnetError(f"cannot create the sweep folder {sweep_dir}: {err.strerror or err}; give another folder") from None
    sweep.save(saved_path)


# ---------------------------------------------------------------- results.csv


def append_row(path: Path, row: dict) -> None:
    """Append one row and force it to disk, so a kill a moment later never loses the finished trial."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row[k] for k in RESULT_COLUMNS})
        handle.flush()
        os.fsync(handle.fileno())


def drop_torn_row(path: Path) -> None:
    """Cut a last line left half-written by a crash, so the next row starts on a line of its own."""
    if not path.exists():
        return
    text = path.read_bytes()
    if text and not text.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(text.rfind(b"\n") + 1)


def read_results(path: Path) -> list[dict]:
    """The rows of results.csv with their types; an empty list if there is no file yet."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames and tuple(reader.fieldnames) != RESULT_COLUMNS:
            raise DigitnetError(f"{path}: columns {reader.fieldnames} are not a sweep's ({', '.join(RESULT_COLUMNS)})")
        return [_typed(row) for row in reader if None not in row.values()]


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


def result_row(trial: Trial, metrics: dict, wall_seconds: float) -> dict:
    """One line of results.csv from a trial and the metrics `train_and_evaluate` returned."""
    return {"trial_id": trial.trial_id, "width": trial.width, "depth": trial.depth, "activation": trial.activation,
            "batch_size": trial.batch_size, "seed": trial.seed, "params": metrics["params"],
            "val_accuracy": metrics["val_accuracy"], "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"], "train_seconds": round(metrics["train_seconds"], 3),
            "compile_seconds": round(metrics["compile_seconds"], 3), "epochs": metrics["epochs"],
            "wall_seconds": round(wall_seconds, 3)}


def table_header(id_width: int) -> str:
    """The header of the table printed as trials finish."""
    return (f"{'done':>9}  {'trial':<{id_width}}  {'width':>5} {'depth':>5} {'activation':<10} {'batch':>5} {'seed':>4} "
            f"{'params':>9} {'val_acc':>7} {'test_acc':>8} {'test_loss':>9} {'train_s':>8} {'wall_s':>7}")


def format_row(row: dict, id_width: int, done: str) -> str:
    """One fixed-width table line per finished trial; accuracies as fractions, like the epoch lines."""
    return (f"{done:>9}  {row['trial_id']:<{id_width}}  {row['width']:>5} {row['depth']:>5} {row['activation']:<10} "
            f"{row['batch_size']!s:>5} {row['seed']:>4} {row['params']:>9,} {row['val_accuracy']:>7.4f} "
            f"{row['test_accuracy']:>8.4f} {row['test_loss']:>9.4f} {row['train_seconds']:>8.2f} {row['wall_seconds']:>7.2f}")


@dataclass
class Recorder:
    """Takes each trial's outcome as it arrives: appends and prints a finished row, notes a failed trial."""

    path: Path
    total: int
    done: int
    id_width: int
    log: Callable[[str], None]
    failed: list[str] = field(default_factory=list)
    started: bool = False

    def take(self, outcome: dict) -> None:
        if not self.started:  # printed with the first outcome, below whatever the runner printed as it started
            self.log(table_header(self.id_width))
            self.started = True
        if "error" in outcome:
            self.failed.append(outcome["trial_id"])
            self.log(f"{outcome['trial_id']}: failed: {outcome['error']}")
            return
        append_row(self.path, outcome)
        self.done += 1
        self.log(format_row(outcome, self.id_width, f"{self.done}/{self.total}"))


# ---------------------------------------------------------------- one trial


def run_dir(sweep_dir: Path, trial: Trial) -> Path:
    return Path(sweep_dir) / RUNS_DIR / trial.trial_id


def resumable(out_dir: Path, config: TrainConfig) -> bool:
    """Whether a trial's folder holds a started run of this config; a folder with no readable config is cleared."""
    try:
        saved = TrainConfig.load(out_dir / "config.json") if (out_dir / "config.json").is_file() else None
    except ConfigError:
        saved = None  # killed while config.json was being written: nothing after it was
    if saved is None:
        shutil.rmtree(out_dir, ignore_errors=True)
        return False
    if saved != config:
        raise DigitnetError(f"{out_dir} holds a run of another config; delete that folder to train this trial afresh")
    return True


def run_trial(trial: Trial, base: TrainConfig, sweep_dir: Path, *, data: Mnist | None = None,
              data_dir: str | Path | None = None) -> dict:
    """Train one trial into SWEEP_DIR/runs/<trial-id>, continuing a half-finished folder; return its results row."""
    # Imported here: a worker pins itself to its cores before JAX is loaded (see the module docstring).
    from digitnet.train import train_and_evaluate

    out_dir = run_dir(sweep_dir, trial)
    config = trial.config(base)
    started = time.perf_counter()
    metrics = train_and_evaluate(config, out_dir, data=data, data_dir=data_dir, resume=resumable(out_dir, config),
                                 log=lambda _: None)
    return result_row(trial, metrics, time.perf_counter() - started)


def attempt_trial(trial: Trial, base: TrainConfig, sweep_dir: Path, data: Mnist | None) -> dict:
    """`run_trial`, with the trial's own failure (a diverged loss, say) returned as {trial_id, error}, so others go on."""
    try:
        return run_trial(trial, base, sweep_dir, data=data)
    except DigitnetError as err:
        return {"trial_id": trial.trial_id, "error": str(err)}


@lru_cache(maxsize=2)
def load_data(data_dir: str | None) -> Mnist:
    """MNIST, read once per process, however many trials the process runs."""
    # Imported here: NumPy reads its thread settings when it loads, after a worker has set them.
    from digitnet.data import load_mnist

    return load_mnist(data_dir)


# ---------------------------------------------------------------- local workers


def core_shares(workers: int, cores: Sequence[int] | None = None) -> list[set[int]]:
    """Split the cores this process may use into one share per worker (shared round-robin when too few)."""
    cores = sorted(os.sched_getaffinity(0) if cores is None else cores)
    if workers >= len(cores):
        return [{cores[i % len(cores)]} for i in range(workers)]
    size, extra = divmod(len(cores), workers)
    bounds = list(itertools.accumulate([size + (i < extra) for i in range(workers)], initial=0))
    return [set(cores[start:stop]) for start, stop in zip(bounds, bounds[1:])]


def pin_to_cores(cores: set[int]) -> None:
    """Keep this process to `cores`, and the thread pools its libraries start from now on to as many threads.

    XLA sizes its CPU thread pool from the affinity mask when JAX's backend starts (checked on jax 0.10: an XLA
    matmul loop pinned to one core keeps one thread busy, unpinned four on two cores, and
    --xla_cpu_multi_thread_eigen=false changes neither), so the mask is what limits JAX; the variables do the
    same for OpenMP and OpenBLAS, which read them when they load.
    """
    os.sched_setaffinity(0, cores)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(len(cores))


def _init_worker(shares: Any, data_dir: str | None) -> None:
    """Start a worker process: take a share of the cores, then read MNIST once for all its trials."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the whole pool
    try:
        pin_to_cores(shares.get(timeout=10))
    except queue.Empty:
        pass  # a worker started to replace a crashed one finds no share left and uses all cores
    load_data(data_dir)


def _pool_trial(task: tuple[Trial, TrainConfig, str, str | None]) -> dict:
    trial, base, sweep_dir, data_dir = task
    return attempt_trial(trial, base, Path(sweep_dir), load_data(data_dir))


def run_in_pool(trials: Sequence[Trial], base: TrainConfig, sweep_dir: Path, workers: int, data_dir: str | None,
                recorder: Recorder) -> None:
    """Run trials in `workers` processes, each pinned to its share of the cores; this process writes the rows."""
    # Spawn, not fork: a forked child would inherit a copy of JAX's threads and locks mid-flight.
    context = multiprocessing.get_context("spawn")
    shares = context.Queue()
    for share in core_shares(workers):
        shares.put(share)
    tasks = [(trial, base, str(sweep_dir), data_dir) for trial in largest_first(trials)]
    # Leaving the block terminates the workers, on Ctrl-C too; a half-trained trial resumes from its checkpoint.
    with context.Pool(workers, initializer=_init_worker, initargs=(shares, data_dir)) as pool:
        for outcome in pool.imap_unordered(_pool_trial, tasks):
            recorder.take(outcome)


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
        raise DigitnetError(f"--ray {address}: no Ray cluster there ({reason}); start one with `ray start --head`, "
                            "or use --ray local") from None
    return True


def _ray_trial(params: dict, *, base: dict, sweep_dir: str, data_dir: str | None) -> None:
    """The Ray Tune function trainable: one trial, its outcome reported to Tune once."""
    from ray import tune

    outcome = attempt_trial(Trial(**params["trial"]), TrainConfig.from_dict(base), Path(sweep_dir), load_data(data_dir))
    # Tune puts its own trial_id into every result, so the row travels whole as one JSON string.
    tune.report({"outcome": json.dumps(outcome), **{k: outcome[k] for k in ("val_accuracy", "test_accuracy") if k in outcome}})


def _tune_dirname(tune_trial: Any) -> str:
    return Trial(**tune_trial.config["trial"]).trial_id


def _row_callback(tune: Any, recorder: Recorder) -> Any:
    """A Tune callback, run by the driver, that hands each trial's outcome to the recorder as the trial ends."""

    class RecordRows(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            recorder.take(json.loads(trial.last_result["outcome"]))

        def on_trial_error(self, iteration, trials, trial, **info):
            error = str(trial.get_error() or "no error message").strip().splitlines()[-1]
            recorder.take({"trial_id": _tune_dirname(trial), "error": f"Ray trial failed: {error} (log in {trial.local_path})"})

    return RecordRows()


def run_on_ray(trials: Sequence[Trial], base: TrainConfig, sweep_dir: Path, address: str, data_dir: str | None,
               recorder: Recorder, cpus_per_trial: float = 1, num_cpus: int | None = None) -> None:
    """Run trials as Ray Tune trials, `cpus_per_trial` CPUs each; the driver writes each row as its trial ends.

    On a cluster of several machines SWEEP_DIR and the data folder must be the same path on every one (a shared
    file system): the trials write their run folders there and read MNIST from there.
    """
    ray, tune = import_ray()
    started_here = connect_ray(ray, address, num_cpus)
    try:
        trainable = tune.with_parameters(_ray_trial, base=base.to_dict(), sweep_dir=str(sweep_dir), data_dir=data_dir)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial}),
            param_space={"trial": tune.grid_search([vars(trial) for trial in largest_first(trials)])},
            # Reused actors keep JAX loaded and MNIST read between trials.
            tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=_tune_dirname),
            run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(sweep_dir), verbose=0,
                                      callbacks=[_row_callback(tune, recorder)]),
        )
        tuner.fit()
    finally:
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------- the sweep


def run_sweep(sweep: SweepConfig, sweep_dir: str | Path, *, workers: int = 1, ray_address: str | None = None,
              cpus_per_trial: float = 1, data: Mnist | None = None, data_dir: str | Path | None = None,
              log: Callable[[str], None] = partial(print, flush=True)) -> list[dict]:
    """Train every trial of the sweep not yet in results.csv, appending each row as it ends; then write the report.

    `workers` > 1 runs trials in that many local processes; `ray_address` ('auto', 'local' or host:port) runs
    them as Ray Tune trials instead. Returns all rows of results.csv.
    """
    if workers < 1:
        raise ConfigError(f"workers: got {workers}; allowed: a whole number >= 1")
    if workers > 1 and ray_address not in (None, "local"):
        raise ConfigError("workers: a Ray cluster runs as many trials at once as its CPUs allow; use --cpus-per-trial")
    sweep_dir = Path(sweep_dir).resolve()  # workers and Ray trials run in other working folders
    data_dir = str(Path(data_dir).resolve()) if data_dir else os.environ.get("DIGITNET_DATA") or None
    prepare_sweep_dir(sweep_dir, sweep)
    results = sweep_dir / RESULTS_FILE
    drop_torn_row(results)
    trials = sweep.trials()
    pending = pending_trials(trials, results)
    where = f"on Ray ({ray_address})" if ray_address else f"in {workers} worker processes" if workers > 1 else "in this process"
    log(f"sweep {sweep_dir}: {counted(len(trials), 'trial')}, {len(trials) - len(pending)} finished before, "
        f"{len(pending)} to run {where}")
    recorder = Recorder(results, len(trials), len(trials) - len(pending), max(len(t.trial_id) for t in trials), log)
    try:
        with saves_on_ctrl_c():  # the pool and Ray are stopped, and finished trials kept, below
            if pending and ray_address:
                run_on_ray(pending, sweep.base, sweep_dir, ray_address, data_dir, recorder, cpus_per_trial,
                           num_cpus=workers if workers > 1 else None)
            elif pending and workers > 1:
                run_in_pool(pending, sweep.base, sweep_dir, workers, data_dir, recorder)
            elif pending:
                run_in_process(pending, sweep.base, sweep_dir, data or load_data(data_dir), recorder)
    except KeyboardInterrupt:
        log(f"interrupted: {recorder.done} of {counted(len(trials), 'trial')} finished, saved in {results}; "
            "run the same command to continue")
        raise
    return finish_sweep(sweep_dir, len(trials), recorder.failed, log)


def pending_trials(trials: Sequence[Trial], results: Path) -> list[Trial]:
    """The trials without a row in results.csv yet."""
    finished = {row["trial_id"] for row in read_results(results)}
    return [trial for trial in trials if trial.trial_id not in finished]


def run_in_process(trials: Sequence[Trial], base: TrainConfig, sweep_dir: Path, data: Mnist, recorder: Recorder) -> None:
    """Run trials one after another in this process, on MNIST read once."""
    for trial in trials:
        recorder.take(attempt_trial(trial, base, sweep_dir, data))


def finish_sweep(sweep_dir: Path, n_trials: int, failed: Sequence[str], log: Callable[[str], None]) -> list[dict]:
    """Write the report from every row so far, say what is missing, and return the rows."""
    rows = read_results(sweep_dir / RESULTS_FILE)
    if rows:
        summary, plot = write_report(sweep_dir)
        log(f"summary: {summary}\nplot:    {plot}")
    if failed:
        raise DigitnetError(f"{counted(len(failed), 'trial')} failed ({', '.join(failed)}); the others are in "
                            f"{sweep_dir / RESULTS_FILE}; their run folders under {sweep_dir / RUNS_DIR} say more")
    if len(rows) < n_trials:
        log(f"{n_trials - len(rows)} of {counted(n_trials, 'trial')} did not finish; run the same command to continue")
    return rows


# ---------------------------------------------------------------- statistics over seeds


def cell_sort_key(cell: Cell) -> tuple:
    activation, batch_size, depth, width = cell
    return (activation, math.inf if batch_size == FULL_BATCH else batch_size, depth, width)


def cell_table(rows: Sequence[dict]) -> list[dict]:
    """Each cell's trials as mean and spread (sample std over seeds, 0 for a single seed), in grid order."""
    groups: dict[Cell, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["activation"], row["batch_size"], row["depth"], row["width"]), []).append(row)
    cells = []
    for cell, members in sorted(groups.items(), key=lambda item: cell_sort_key(item[0])):
        stats = dict(zip(("activation", "batch_size", "depth", "width"), cell), n=len(members), params=members[0]["params"])
        for metric in ("val_accuracy", "test_accuracy", "test_loss", "train_seconds"):
            values = [row[metric] for row in members]
            stats[metric] = statistics.fmean(values)
            stats[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(stats)
    return cells


def best_cell(cells: Sequence[dict]) -> dict:
    """The cell with the highest mean validation accuracy (the smaller network on a tie); test plays no part."""
    return max(cells, key=lambda c: (c["val_accuracy"], -c["params"]))


def cell_groups(cells: Sequence[dict]) -> dict[tuple, list[dict]]:
    """Cells grouped by (activation, batch size): each group is one width x depth grid."""
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["activation"], cell["batch_size"]), []).append(cell)
    return groups


def judged(cells: Iterable[dict]) -> bool:
    """Whether every cell has the seeds a spread needs: a cell trained once has nothing to weigh a difference against."""
    return all(c["n"] >= MIN_SEEDS for c in cells)


def spread(a: dict, b: dict, metric: str = "test_accuracy") -> float:
    """The seed spread two cells are compared against: the larger of their two standard deviations."""
    return max(a[f"{metric}_std"], b[f"{metric}_std"])


def width_gain_stop(by_width: Sequence[dict], metric: str = "test_accuracy") -> dict:
    """The narrowest cell that no wider cell beats by more than the seed spread: where more neurons stop paying."""
    for i, cell in enumerate(by_width):
        if all(wider[metric] - cell[metric] <= spread(cell, wider, metric) for wider in by_width[i + 1:]):
            return cell
    return by_width[-1]


def depth_verdict(by_depth: Sequence[dict], metric: str = "test_accuracy") -> tuple[str, dict, float]:
    """('helped' | 'hurt' | 'within spread', best deeper cell, its gain) of deeper networks over the shallowest."""
    shallow, deeper = by_depth[0], by_depth[1:]
    best = max(deeper, key=lambda c: c[metric])
    gain = best[metric] - shallow[metric]
    if gain > spread(shallow, best, metric):
        return "helped", best, gain
    if all(shallow[metric] - c[metric] > spread(shallow, c, metric) for c in deeper):
        return "hurt", best, gain
    return "within spread", best, gain


# ---------------------------------------------------------------- summary.md


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


def layers(depth: int) -> str:
    return counted(depth, "hidden layer")


def with_spread(cell: dict, metric: str = "test_accuracy", show: Callable[[float], str] = pct) -> str:
    """'98.41% ± 0.05%'; a cell trained once has no spread (its std is a placeholder 0), so just its value."""
    if cell["n"] < MIN_SEEDS:
        return show(cell[metric])
    return f"{show(cell[metric])} ± {show(cell[f'{metric}_std'])}"


def mean_and_spread(cell: dict, metric: str = "test_accuracy") -> str:
    """`with_spread` for prose, where no n column says that a bare value is one run's."""
    return with_spread(cell, metric) + (f" (n={cell['n']})" if cell["n"] < MIN_SEEDS else "")


def no_verdict(cells: Sequence[dict]) -> str:
    """The line that stands in for the verdicts where some cell has a single seed."""
    single = sum(c["n"] < MIN_SEEDS for c in cells)
    who = ("every cell here has" if single == len(cells)
           else f"{single} of {counted(len(cells), 'cell')} here {'has' if single == 1 else 'have'}")
    return f"No verdicts: they need at least {MIN_SEEDS} seeds per cell, and {who} only 1."


def spread_note(cells: Sequence[dict]) -> str:
    """How to read the figures of summary.md, and what a cell trained once lacks."""
    if not any(c["n"] >= MIN_SEEDS for c in cells):
        return "Each cell was trained with one seed: its figures are that run's, with no spread to judge a difference by."
    note = ("Accuracies are means over seeds, ± the standard deviation over seeds; "
            "a difference counts only if it is larger than the larger spread of the two cells compared.")
    return note if judged(cells) else note + " A cell with n=1 has no spread yet: it shows its one run's figures."


def width_findings(by_depth_width: dict[int, list[dict]]) -> list[str]:
    """The 'more neurons' section: per depth, the gain from the narrowest to the best width and where it stops."""
    compared = [cells for cells in by_depth_width.values() if len(cells) > 1]
    with_verdicts = judged(c for cells in compared for c in cells)
    lines, helped = [], []
    for cells in compared:
        first, best, stop = cells[0], max(cells, key=lambda c: c["test_accuracy"]), width_gain_stop(cells)
        helped.append(best["test_accuracy"] - first["test_accuracy"] > spread(first, best))
        steps = ", ".join(f"{points(b['test_accuracy'] - a['test_accuracy'])} ({a['width']}->{b['width']})"
                          for a, b in zip(cells, cells[1:]))
        if not with_verdicts:
            ending = ""  # without a spread there is no telling where the gain stops
        elif stop is cells[-1] and stop is not first:
            ending = f"; still gaining at the widest width tried ({stop['width']})"
        elif stop is first:
            ending = f"; no width beat {first['width']} by more than the seed spread"
        else:
            ending = (f"; the gain stops at width {stop['width']} ({mean_and_spread(stop)}): "
                      "no wider network was better by more than the seed spread")
        lines.append(f"- {layers(first['depth'])}: {pct(first['test_accuracy'])} at width {first['width']}, best "
                     f"{pct(best['test_accuracy'])} at width {best['width']} ({points(best['test_accuracy'] - first['test_accuracy'])} "
                     f"points){ending}. Gain per step, in points: {steps}.")
    if not lines:
        return ["Only one width was tried."]
    if not with_verdicts:
        return [no_verdict([c for cells in compared for c in cells]), "", *lines]
    verdict = ("More neurons helped" if all(helped) else "More neurons helped at some depths" if any(helped)
               else "More neurons did not help")
    return [f"{verdict} (mean test accuracy rose by more than the seed spread at {sum(helped)} of {counted(len(helped), 'depth')}):",
            "", *lines]


def depth_findings(by_width_depth: dict[int, list[dict]]) -> list[str]:
    """The 'more layers' section: at each width, the deeper networks against the shallowest."""
    compared = [cells for cells in by_width_depth.values() if len(cells) > 1]
    with_verdicts = judged(c for cells in compared for c in cells)
    lines, verdicts = [], []
    for cells in compared:
        verdict, best, gain = depth_verdict(cells)
        verdicts.append((cells[0]["width"], verdict))
        each = ", ".join(f"depth {c['depth']} {mean_and_spread(c)}" for c in cells)
        lines.append(f"- width {cells[0]['width']}: {each}; best deeper: depth {best['depth']}, {points(gain)} points over depth "
                     f"{cells[0]['depth']}" + (f" ({verdict})" if with_verdicts else ""))
    if not lines:
        return ["Only one depth was tried."]
    if not with_verdicts:
        return [no_verdict([c for cells in compared for c in cells]), "", *lines]
    helped = [w for w, v in verdicts if v == "helped"]
    hurt = [w for w, v in verdicts if v == "hurt"]
    head = (f"More layers helped (mean test accuracy, by more than the seed spread) at {len(helped)} of {counted(len(verdicts), 'width')}"
            + (f" ({', '.join(map(str, helped))})" if helped else "")
            + (f", hurt at {len(hurt)} ({', '.join(map(str, hurt))})" if hurt else "")
            + ("; elsewhere the difference was within the seed spread" if len(helped) + len(hurt) < len(verdicts) else "")
            + ":")
    return [head, "", *lines]


def cells_markdown(cells: Sequence[dict]) -> list[str]:
    """The table of every cell: mean ± std over its n seeds, or the one run's figures where n is 1."""
    lines = ["| activation | batch | width | depth | params | n | val accuracy | test accuracy | test loss | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in cells:
        lines.append(
            f"| {c['activation']} | {c['batch_size']} | {c['width']} | {c['depth']} | {c['params']:,} | {c['n']} | "
            f"{with_spread(c, 'val_accuracy')} | {with_spread(c, 'test_accuracy')} | "
            f"{with_spread(c, 'test_loss', '{:.4f}'.format)} | {with_spread(c, 'train_seconds', '{:.1f}'.format)} |")
    return lines


def format_summary(rows: Sequence[dict], sweep: SweepConfig) -> str:
    """summary.md: whether more neurons and more layers helped, where the gain stops, the best cell, every cell."""
    cells = cell_table(rows)
    base = sweep.base
    lines = [
        "# Neurons x hidden layers",
        "",
        f"{len(rows)} of {counted(len(sweep.trials()), 'trial')} finished; {counted(len(sweep.seeds), 'seed')} per cell; "
        f"{counted(base.epochs, 'epoch')}, {base.optimizer}, learning rate {base.learning_rate}, {base.schedule} schedule, "
        f"train size {base.train_size or 'all'}, validation {base.val_size} images. {spread_note(cells)}",
    ]
    best = best_cell(cells)
    lines += ["", "## Best cell, chosen on validation accuracy", "",
              f"Width {best['width']}, {layers(best['depth'])}, {best['activation']}, batch size {best['batch_size']} "
              f"({best['params']:,} parameters): validation {with_spread(best, 'val_accuracy')}, "
              f"test {with_spread(best, 'test_accuracy')} (n={best['n']}). "
              "Test accuracy is reported for every cell and was not used to choose."]
    for (activation, batch_size), group in cell_groups(cells).items():
        title = f" ({activation}, batch size {batch_size})" if len(cell_groups(cells)) > 1 else ""
        by_depth = {d: [c for c in group if c["depth"] == d] for d in sorted({c["depth"] for c in group})}
        by_width = {w: [c for c in group if c["width"] == w] for w in sorted({c["width"] for c in group})}
        lines += ["", f"## More neurons?{title}", "", *width_findings(by_depth)]
        lines += ["", f"## More layers?{title}", "", *depth_findings(by_width)]
    lines += ["", "## Every cell", "", *cells_markdown(cells), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- sweep.png


def plot_sweep(cells: Sequence[dict], path: Path) -> Path:
    """Per (activation, batch size): a width x depth heatmap of mean test accuracy ± std, and accuracy against width."""
    # Imported here: trial workers import this module and never draw.
    from matplotlib.figure import Figure

    groups = cell_groups(cells)
    best = best_cell(cells)
    fig = Figure(figsize=(15, 5.2 * len(groups)), dpi=DPI, layout="constrained")
    axes = fig.subplots(len(groups), 2, squeeze=False, width_ratios=(1.15, 1))
    for (heat_ax, line_ax), ((activation, batch_size), group) in zip(axes, groups.items()):
        _draw_heatmap(fig, heat_ax, group, best)
        _draw_width_lines(line_ax, group)
        suffix = f" — {activation}, batch size {batch_size}"
        if any(c["n"] >= MIN_SEEDS for c in group):
            heat_ax.set_title(f"Mean test accuracy (%) ± std over seeds{suffix}", fontsize=11)
            line_ax.set_title(f"Test accuracy against width, band = ± std{suffix}", fontsize=11)
        else:  # one seed per cell: no spread to show
            heat_ax.set_title(f"Test accuracy (%), one seed per cell{suffix}", fontsize=11)
            line_ax.set_title(f"Test accuracy against width, one seed per cell{suffix}", fontsize=11)
    n_seeds = sorted({c["n"] for c in cells})
    seeds = counted(n_seeds[0], "seed") if len(n_seeds) == 1 else f"{'/'.join(map(str, n_seeds))} seeds"
    fig.suptitle(f"Neurons x hidden layers: {counted(sum(c['n'] for c in cells), 'trial')}, "
                 f"{seeds} per cell; outlined: best cell by validation accuracy", fontsize=13)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", facecolor="white")
    return path


def _grid(group: Sequence[dict], key: str) -> tuple[list[int], list[int], Any]:
    """(widths, depths, depth x width array of `key`), NaN where a cell has no finished trial."""
    import numpy as np

    widths, depths = sorted({c["width"] for c in group}), sorted({c["depth"] for c in group})
    values = np.full((len(depths), len(widths)), np.nan)
    for c in group:
        values[depths.index(c["depth"]), widths.index(c["width"])] = c[key]
    return widths, depths, values


def _draw_heatmap(fig: Any, ax: Any, group: Sequence[dict], best: dict) -> None:
    """Mean test accuracy per cell, its std written under it; the best cell by validation outlined."""
    import numpy as np
    from matplotlib.patches import Rectangle

    widths, depths, means = _grid(group, "test_accuracy")
    _, _, stds = _grid(group, "test_accuracy_std")
    _, _, counts = _grid(group, "n")
    image = ax.imshow(100 * means, cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02, label="mean test accuracy (%)")
    for (i, j), mean in np.ndenumerate(means):
        if not np.isnan(mean):
            dark = image.norm(100 * mean) < 0.6
            # A cell with fewer seeds than the others (a sweep still running) says so; one seed gives no spread.
            count = f"\nn={counts[i, j]:.0f}" if counts[i, j] < np.nanmax(counts) or counts[i, j] < MIN_SEEDS else ""
            std = f"\n± {100 * stds[i, j]:.2f}" if counts[i, j] >= MIN_SEEDS else ""
            ax.text(j, i, f"{100 * mean:.2f}{std}{count}", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    if best in group:
        j, i = widths.index(best["width"]), depths.index(best["depth"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#e8000b", linewidth=2.5))
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_yticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("neurons per hidden layer (width)")
    ax.set_ylabel("hidden layers (depth)")
    ax.tick_params(length=0)


def _draw_width_lines(ax: Any, group: Sequence[dict]) -> None:
    """Mean test accuracy against width on a log2 axis, one line per depth, with a ± std band."""
    widths, depths, means = _grid(group, "test_accuracy")
    _, _, stds = _grid(group, "test_accuracy_std")
    for row, depth in enumerate(depths):
        mean, std = 100 * means[row], 100 * stds[row]
        line, = ax.plot(widths, mean, marker="o", markersize=5, label=layers(depth))
        ax.fill_between(widths, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("neurons per hidden layer (width, log2 scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def write_report(sweep_dir: str | Path) -> tuple[Path, Path]:
    """Write SWEEP_DIR/summary.md and SWEEP_DIR/sweep.png from results.csv and sweep.json; return their paths."""
    sweep_dir = Path(sweep_dir)
    rows = read_results(sweep_dir / RESULTS_FILE)
    if not rows:
        raise DigitnetError(f"{sweep_dir / RESULTS_FILE}: no finished trials to report on yet")
    sweep = SweepConfig.load(sweep_dir / SWEEP_FILE)
    summary = sweep_dir / SUMMARY_FILE
    write_atomic(summary, format_summary(rows, sweep))
    return summary, plot_sweep(cell_table(rows), sweep_dir / PLOT_FILE)


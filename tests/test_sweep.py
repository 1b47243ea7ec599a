"""The width x depth sweep: rows, table, report, resuming, and the same rows from workers and from Ray."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import digitnet.train
from digitnet.config import TrainConfig
from digitnet.errors import DigitnetError
from digitnet.run import RunDir
from digitnet.sweep import (
    RESULT_COLUMNS,
    ResultsStore,
    SweepConfig,
    Trial,
    cell_table,
    core_shares,
    count_params,
    format_summary,
    import_ray,
    prepare_sweep_dir,
    read_results,
    run_sweep,
    width_gain_stop,
)
from digitnet.sweep.runners import ByThreads

SMALL = TrainConfig(train_size=500, val_size=200, epochs=1)  # a few steps per trial: seconds, not minutes
GRID = SweepConfig(widths=(8, 16), depths=(1, 2), seeds=(0, 1), base=SMALL)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist):
    """The 2 x 2 grid with 2 seeds, trained in this process: the rows the other ways of running must repeat."""
    sweep_dir = tmp_path_factory.mktemp("reference")
    lines: list[str] = []
    rows = run_sweep(GRID, sweep_dir, data=mnist, log=lines.append)
    return sweep_dir, rows, lines


def by_trial(rows: list[dict]) -> dict[str, dict]:
    return {row["trial_id"]: row for row in rows}


def assert_same_rows(rows: list[dict], expected: list[dict]) -> None:
    """Same trials, same accuracies; the loss may differ in its last float32 bits with the thread count."""
    rows, expected = by_trial(rows), by_trial(expected)
    assert rows.keys() == expected.keys()
    for trial_id, row in rows.items():
        for key in (
            "width",
            "depth",
            "activation",
            "batch_size",
            "seed",
            "params",
            "epochs",
            "val_accuracy",
            "test_accuracy",
        ):
            assert row[key] == expected[trial_id][key], (trial_id, key)
        assert math.isclose(row["test_loss"], expected[trial_id]["test_loss"], rel_tol=1e-5)


def test_sweep_writes_rows_table_plot_and_summary(reference):
    sweep_dir, rows, lines = reference
    assert len(rows) == 8 and read_results(sweep_dir / "results.csv") == rows
    assert {row["trial_id"] for row in rows} == {t.trial_id for t in GRID.trials()}
    assert (sweep_dir / "results.csv").read_text().splitlines()[0] == ",".join(RESULT_COLUMNS)
    for row in rows:
        assert row["params"] == count_params(row["width"], row["depth"])
        assert 0 <= row["test_accuracy"] <= 1 and row["epochs"] == 1 and row["wall_seconds"] > 0
        assert (sweep_dir / "runs" / row["trial_id"] / "metrics.json").is_file()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("done  trial"))
    table = lines[header : header + 9]
    assert len({len(line) for line in table}) == 1, "the table is fixed-width"
    assert table[-1].lstrip().startswith("8/8")
    assert (sweep_dir / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    summary = (sweep_dir / "summary.md").read_text()
    assert "## Best cell, chosen on validation accuracy" in summary and "More neurons" in summary
    assert summary.count("| relu | 128 |") == 4 and "| 2 |" in summary


def test_best_cell_is_chosen_on_validation_not_test():
    rows = [fake_row(8, 1, seed, val=0.90, test=0.99) for seed in (0, 1)] + [
        fake_row(16, 1, seed, val=0.95, test=0.90) for seed in (0, 1)
    ]
    summary = format_summary(rows, SweepConfig(widths=(8, 16), depths=(1,), seeds=(0, 1), base=SMALL))
    assert "Width 16, 1 hidden layer" in summary


def fake_row(width: int, depth: int, seed: int, val: float, test: float) -> dict:
    trial = Trial(width, depth, "relu", 128, seed)
    return {
        "trial_id": trial.trial_id,
        "width": width,
        "depth": depth,
        "activation": "relu",
        "batch_size": 128,
        "seed": seed,
        "params": count_params(width, depth),
        "val_accuracy": val,
        "test_accuracy": test,
        "test_loss": 0.1,
        "train_seconds": 1.0,
        "compile_seconds": 0.5,
        "epochs": 1,
        "wall_seconds": 2.0,
    }


def test_summary_says_where_the_gain_stops():
    # Test accuracy rises until width 64, then by less than the seed spread (+-0.002); depth 2 is 0.01 better.
    curve = {16: 0.95, 32: 0.97, 64: 0.980, 128: 0.981, 256: 0.981}
    rows = [
        fake_row(w, d, s, val=acc, test=acc + (0.01 if d == 2 else 0) + (0.002 if s else -0.002))
        for w, acc in curve.items()
        for d in (1, 2)
        for s in (0, 1)
    ]
    sweep = SweepConfig(widths=tuple(curve), depths=(1, 2), seeds=(0, 1), base=SMALL)
    summary = format_summary(rows, sweep)
    assert "More neurons helped (mean test accuracy rose by more than the seed spread at 2 of 2 depths)" in summary
    assert summary.count("the gain stops at width 64") == 2
    assert "at 5 of 5 widths (16, 32, 64, 128, 256):" in summary and "elsewhere" not in summary
    by_width = [c for c in cell_table(rows) if c["depth"] == 1]
    assert width_gain_stop(by_width)["width"] == 64


def grid_rows(seed_counts: dict[tuple[int, int], int]) -> list[dict]:
    """Rows of a (width, depth) grid with the given number of seeds per cell; test accuracy rises with width."""
    return [
        fake_row(w, d, s, val=0.9, test=0.90 + w / 1000 + s / 1000)
        for (w, d), n in seed_counts.items()
        for s in range(n)
    ]


@pytest.mark.parametrize(
    "seeds, words",
    [
        ((0, 2**32), "seeds: got [0, 4294967296]; allowed: whole numbers from 0 to 4294967295"),
        ((-1,), "seeds: got [-1]; allowed: whole numbers from 0 to"),
    ],
)
def test_seeds_out_of_range_are_one_line_errors(seeds, words):
    with pytest.raises(DigitnetError) as info:
        SweepConfig(widths=(8,), depths=(1,), seeds=seeds, base=SMALL)
    assert words in str(info.value)


def test_one_seed_per_cell_gives_means_and_no_spread_verdicts():
    rows = grid_rows({(8, 1): 1, (16, 1): 1, (8, 2): 1, (16, 2): 1})
    summary = format_summary(rows, SweepConfig(widths=(8, 16), depths=(1, 2), seeds=(0,), base=SMALL))
    assert "more than the seed spread" not in summary and "±" not in summary and "helped" not in summary
    assert summary.count("No verdicts: they need at least 2 seeds per cell, and every cell here has only 1.") == 2
    assert "1 seed per cell; 1 epoch," in summary and "4 of 4 trials finished" in summary
    assert "test 90.80% (n=1)" in summary and "depth 1 91.60% (n=1), depth 2 91.60% (n=1);" in summary
    assert "| 1 | 90.00% | 90.80% | 0.1000 | 1.0 |" in summary


def test_a_cell_with_one_seed_among_several_holds_back_the_verdicts():
    # A sweep still running: the cell (16, 2) has one seed so far, so its std of 0 is no spread to compare against.
    rows = grid_rows({(8, 1): 2, (16, 1): 2, (8, 2): 2, (16, 2): 1})
    summary = format_summary(rows, SweepConfig(widths=(8, 16), depths=(1, 2), seeds=(0, 1), base=SMALL))
    assert "more than the seed spread" not in summary
    assert summary.count("No verdicts: they need at least 2 seeds per cell, and 1 of 4 cells here has only 1.") == 2
    assert "depth 1 91.65% ± 0.07%, depth 2 91.60% (n=1);" in summary and "A cell with n=1 has no spread yet" in summary


def test_counts_of_one_are_singular(tmp_path, monkeypatch):
    def fake_training(config, out_dir, **kwargs):  # the messages are the point, not the training
        return {
            "params": count_params(8, 1),
            "val_accuracy": 0.5,
            "test_accuracy": 0.5,
            "test_loss": 1.0,
            "train_seconds": 0.1,
            "compile_seconds": 0.1,
            "epochs": 1,
        }

    monkeypatch.setattr(digitnet.train, "train_and_evaluate", fake_training)
    lines: list[str] = []
    run_sweep(SweepConfig(widths=(8,), depths=(1,), seeds=(0,), base=SMALL), tmp_path, data=object(), log=lines.append)
    assert ": 1 trial, 0 finished before, 1 to run in this process" in lines[0]
    assert "1 of 1 trial finished; 1 seed per cell; 1 epoch," in (tmp_path / "summary.md").read_text()
    two_seeds = grid_rows({(8, 1): 2, (16, 1): 2})
    summary = format_summary(two_seeds, SweepConfig(widths=(8, 16), depths=(1,), seeds=(0, 1), base=SMALL))
    assert "by more than the seed spread at 1 of 1 depth):" in summary


def test_a_stopped_sweep_resumes_without_training_a_finished_trial_again(tmp_path, mnist, monkeypatch):
    sweep = SweepConfig(widths=(8, 16), depths=(1,), seeds=(0, 1), base=SMALL.replace(epochs=2))
    order = [t.trial_id for t in sweep.trials()]
    epochs_logged = []

    def stop_in_third_trial(row, epochs):  # Ctrl-C during the third trial, after its first epoch is saved
        epochs_logged.append(row["epoch"])
        if len(epochs_logged) == 5:
            raise KeyboardInterrupt
        return ""

    monkeypatch.setattr(digitnet.train, "format_epoch", stop_in_third_trial)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, tmp_path, data=mnist, log=lambda _: None)
    monkeypatch.undo()
    finished = read_results(tmp_path / "results.csv")
    assert [row["trial_id"] for row in finished] == order[:2]
    stamps = {t: (tmp_path / "runs" / t / "metrics.json").stat().st_mtime_ns for t in order[:2]}
    assert not (tmp_path / "runs" / order[2] / "metrics.json").exists()

    calls = []
    real = digitnet.train.train_and_evaluate

    def counting(config, out_dir, **kwargs):
        calls.append((out_dir.name, kwargs["resume"]))
        return real(config, out_dir, **kwargs)

    monkeypatch.setattr(digitnet.train, "train_and_evaluate", counting)
    rows = run_sweep(sweep, tmp_path, data=mnist, log=lambda _: None)
    assert calls == [(order[2], True), (order[3], False)], "finished trials are not trained again"
    assert [row["trial_id"] for row in rows] == order and all(row["epochs"] == 2 for row in rows)
    assert rows[:2] == finished
    assert stamps == {t: (tmp_path / "runs" / t / "metrics.json").stat().st_mtime_ns for t in order[:2]}

    calls.clear()
    assert run_sweep(sweep, tmp_path, data=mnist, log=lambda _: None) == rows and calls == []


def test_a_failed_trial_does_not_stop_the_others(tmp_path, monkeypatch):
    def fake_training(config, out_dir, **kwargs):  # no training: this is about what the sweep does with a failure
        if config.hidden == (16,):
            raise digitnet.train.TrainingDiverged("loss became nan in epoch 1")
        return {
            "params": count_params(config.hidden[0], 1),
            "val_accuracy": 0.5,
            "test_accuracy": 0.5,
            "test_loss": 1.0,
            "train_seconds": 0.1,
            "compile_seconds": 0.1,
            "epochs": 1,
        }

    monkeypatch.setattr(digitnet.train, "train_and_evaluate", fake_training)
    lines: list[str] = []
    sweep = SweepConfig(widths=(8, 16, 32), depths=(1,), seeds=(0,), base=SMALL)
    with pytest.raises(DigitnetError, match=r"^1 trial failed \(w16-d1-relu-b128-s0\)"):
        run_sweep(sweep, tmp_path, data=object(), log=lines.append)
    assert [row["width"] for row in read_results(tmp_path / "results.csv")] == [8, 32]
    assert "w16-d1-relu-b128-s0: failed: loss became nan in epoch 1" in lines


def test_importing_the_sweep_starts_neither_jax_nor_numpy():
    # Worker processes import this module, then pin themselves to their cores before JAX and NumPy load.
    code = "import sys, digitnet.sweep; print(sorted(m for m in ('jax', 'numpy', 'keras') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_a_torn_last_row_is_dropped(tmp_path):
    store = ResultsStore.of(tmp_path)
    store.append(fake_row(8, 1, 0, val=0.9, test=0.9))
    with open(store.path, "a") as handle:
        handle.write("w8-d1-relu-b128-s1,8,1,re")
    assert [row["seed"] for row in store.rows()] == [0]
    store.append(fake_row(8, 1, 1, val=0.8, test=0.8))
    assert [row["seed"] for row in store.rows()] == [0, 1]


def test_a_trial_is_counted_once_whatever_the_file_holds(tmp_path):
    store = ResultsStore.of(tmp_path)
    first, again = fake_row(8, 1, 0, val=0.9, test=0.9), fake_row(8, 1, 0, val=0.7, test=0.7)
    assert store.append(first) and not store.append(again)  # a second row for a trial is not written ...
    with open(store.path, "a") as handle:  # ... and one written by other means is not read
        handle.write(",".join(str(again[k]) for k in RESULT_COLUMNS) + "\n")
    assert store.rows() == [first] == read_results(store.path)
    assert cell_table(store.rows())[0]["n"] == 1


def test_a_different_grid_in_the_same_folder_is_an_error(tmp_path):
    prepare_sweep_dir(tmp_path, GRID)
    prepare_sweep_dir(tmp_path, SweepConfig(widths=(16, 8), depths=(2, 1), seeds=(1, 0), base=SMALL))  # same grid
    with pytest.raises(DigitnetError, match=r"holds another sweep \(widths: saved \[8, 16\], given \[8, 32\]"):
        prepare_sweep_dir(tmp_path, SweepConfig(widths=(8, 32), depths=(1, 2), seeds=(0, 1), base=SMALL))
    with pytest.raises(DigitnetError, match="learning_rate: saved 0.002, given 0.1"):
        prepare_sweep_dir(
            tmp_path, SweepConfig(widths=(8, 16), depths=(1, 2), seeds=(0, 1), base=SMALL.replace(learning_rate=0.1))
        )


def test_cores_are_shared_out_between_workers():
    assert core_shares(2, [0, 1, 2, 3, 4]) == [{0, 1, 2}, {3, 4}]
    assert core_shares(3, [0, 1]) == [{0}, {1}, {0}]
    assert core_shares(1, [5, 7]) == [{5, 7}]


def half_done_copy(reference_dir: Path, folder: Path) -> Path:
    """A copy of the reference sweep with its depth-2 trials never run: what is left to train is half the grid."""
    shutil.copytree(reference_dir, folder)
    rows = read_results(folder / "results.csv")
    (folder / "results.csv").unlink()
    for row in rows:
        if row["depth"] == 1:
            ResultsStore.of(folder).append(row)
        else:
            shutil.rmtree(folder / "runs" / row["trial_id"])
    return folder


def test_two_workers_give_the_same_rows_as_one(reference, tmp_path, mnist_dir):
    reference_dir, expected, _ = reference
    lines: list[str] = []
    rows = run_sweep(
        GRID, half_done_copy(reference_dir, tmp_path / "sweep"), workers=2, data_dir=mnist_dir, log=lines.append
    )
    assert "4 finished before, 4 to run in 2 worker processes" in lines[0]
    assert_same_rows(rows, expected)


def test_by_default_trials_run_side_by_side_one_thread_each_with_the_same_rows(reference, tmp_path, mnist_dir):
    reference_dir, expected, _ = reference
    lines: list[str] = []
    sweep_dir = half_done_copy(reference_dir, tmp_path / "sweep")
    rows = run_sweep(GRID, sweep_dir, data_dir=mnist_dir, log=lines.append)
    assert "4 to run side by side on" in lines[0]
    assert_same_rows(rows, expected)
    trained = [row["trial_id"] for row in rows if row["depth"] == 2]
    assert {RunDir(sweep_dir / "runs" / name).read_json("metrics.json")["threads"] for name in trained} == {1}


def test_trials_that_want_every_core_run_alone(monkeypatch):
    runner = ByThreads(data_dir=None)
    trials = [Trial(16, 1, "relu", 128, 0), Trial(2048, 3, "relu", 128, 0)]
    monkeypatch.setenv("DIGITNET_THREADS", "all")
    apart, alone = runner.split(trials, SMALL)
    assert (apart, alone) == (([], trials) if len(runner.cores) > 1 else (trials, []))
    monkeypatch.delenv("DIGITNET_THREADS")
    assert runner.split(trials, SMALL) == (trials, [])  # measured: side by side finishes two trials sooner


@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")  # Ray starts its processes by fork + exec
def test_ray_tune_gives_the_same_rows_as_the_local_path(reference, tmp_path, mnist_dir):
    ray = pytest.importorskip("ray")
    reference_dir, expected, _ = reference
    sweep_dir = half_done_copy(reference_dir, tmp_path / "sweep")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        rows = run_sweep(GRID, sweep_dir, ray_address="local", data_dir=mnist_dir, log=lambda _: None)
    finally:
        ray.shutdown()
    assert_same_rows(rows, expected)
    assert len(list((sweep_dir / "runs").iterdir())) == 8 and (sweep_dir / "tune").is_dir()


def test_without_ray_the_ray_path_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(DigitnetError, match=r"pip install 'digitnet\[ray\]'"):
        import_ray()


def test_cli_sweep_end_to_end(tmp_path, mnist_dir):
    env = {**os.environ, "DIGITNET_DATA": str(mnist_dir)}
    flags = [
        "--width",
        "8",
        "--depth",
        "1",
        "--seeds",
        "2",
        "--train-size",
        "300",
        "--val-size",
        "100",
        "--epochs",
        "1",
    ]

    def digitnet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "digitnet", "sweep", str(tmp_path), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    done = digitnet(*flags)
    assert done.returncode == 0, done.stderr
    # Both seeds' lines, numbered as they ended: the trials run side by side, so either may end last.
    assert "1/2  w8-d1-relu-b128-s" in done.stdout and "2/2  w8-d1-relu-b128-s" in done.stdout
    assert "w8-d1-relu-b128-s0" in done.stdout and "w8-d1-relu-b128-s1" in done.stdout
    assert {"results.csv", "sweep.json", "sweep.png", "summary.md", "runs"} <= {p.name for p in tmp_path.iterdir()}
    again = digitnet("--resume")
    assert again.returncode == 0 and "2 finished before, 0 to run" in again.stdout
    other = digitnet(*flags[:-1], "3")
    assert (
        other.returncode == 2
        and other.stderr.startswith("digitnet: error: ")
        and "epochs: saved 1, given 3" in other.stderr
    )
    assert len(other.stderr.strip().splitlines()) == 1


def test_two_sweeps_on_one_folder_divide_the_trials_and_count_each_once(tmp_path, mnist_dir):
    env = {**os.environ, "DIGITNET_DATA": str(mnist_dir)}
    flags = [
        "--width",
        "8",
        "--width",
        "16",
        "--depth",
        "1",
        "--depth",
        "2",
        "--seeds",
        "2",
        "--train-size",
        "2000",
        "--val-size",
        "200",
        "--epochs",
        "2",
        "--batch-size",
        "32",
    ]
    command = [sys.executable, "-m", "digitnet", "sweep", str(tmp_path / "s"), *flags]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    trained = [
        line.split()[1]
        for out, _ in outputs
        for line in out.splitlines()
        if line.lstrip()[:1].isdigit() and "/8 " in line
    ]
    assert len(trained) == len(set(trained)) == 8, f"each trial trained once between them: {sorted(trained)}"
    rows = read_results(tmp_path / "s" / "results.csv")
    assert len(rows) == 8 and (tmp_path / "s" / "results.csv").read_text().count("\n") == 9  # header and 8 rows
    assert {cell["n"] for cell in cell_table(rows)} == {2}
    for row in rows:  # each trial ran its epochs once: a second training would have resumed or repeated them
        assert len(RunDir(tmp_path / "s" / "runs" / row["trial_id"]).read_history()) == 2

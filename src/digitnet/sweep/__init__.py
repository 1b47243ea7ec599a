"""The neurons x hidden-layers sweep: one training run per grid cell and seed, recorded the moment it ends.

Its parts: `grid` (the trials and the sweep's config), `runners` (this process, local worker processes, Ray Tune),
`store` (the sweep folder and results.csv), `stats` (mean and spread over seeds), `summary` (summary.md), and
`driver`, which runs a sweep with them. Its picture is drawn by digitnet.plots.plot_sweep.
"""

from digitnet.sweep.driver import Recorder, pending_trials, run_sweep
from digitnet.sweep.grid import SweepConfig, Trial, count_params, largest_first
from digitnet.sweep.runners import core_shares, import_ray, pin_to_cores, run_trial
from digitnet.sweep.stats import MIN_SEEDS, best_cell, cell_groups, cell_table, counted, depth_verdict, width_gain_stop
from digitnet.sweep.store import (
    PLOT_FILE,
    RESULT_COLUMNS,
    RESULTS_FILE,
    RUNS_DIR,
    SUMMARY_FILE,
    SWEEP_FILE,
    ResultsStore,
    prepare_sweep_dir,
    read_results,
)
from digitnet.sweep.summary import format_summary, write_report

__all__ = [
    "MIN_SEEDS",
    "PLOT_FILE",
    "RESULT_COLUMNS",
    "RESULTS_FILE",
    "RUNS_DIR",
    "SUMMARY_FILE",
    "SWEEP_FILE",
    "Recorder",
    "ResultsStore",
    "SweepConfig",
    "Trial",
    "best_cell",
    "cell_groups",
    "cell_table",
    "core_shares",
    "count_params",
    "counted",
    "depth_verdict",
    "format_summary",
    "import_ray",
    "largest_first",
    "pending_trials",
    "pin_to_cores",
    "prepare_sweep_dir",
    "read_results",
    "run_sweep",
    "run_trial",
    "width_gain_stop",
    "write_report",
]

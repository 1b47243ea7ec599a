"""Sweep wall time: the default scheduling (trials side by side, one thread each, where that is sooner) against one
trial at a time in one process on every core (`--workers 1`, how sweeps ran before), the same grid, one after
the other in one run, each from an empty compilation cache.

Also compares the trials' accuracies: one thread and two threads sum floats in different orders, so a trial may
move by a little; the table lists those that moved, beside the spread over seeds of their cell.

    python bench/bench_sweep.py [--data-dir DIR] [SWEEP FLAGS ...] [--record docs/sweep-speed.md]

Without sweep flags it runs the default sweep (63 trials: about half an hour for both sides on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import add_record_option, append_record, markdown_table  # bench/record.py


def run_sweep(folder: Path, flags: list[str], data_dir: str | None) -> float:
    """Wall seconds of `digitnet sweep folder flags...` in a new process with an empty compilation cache."""
    env = {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="bench-sweep-cache-")}
    for name in ("JAX_COMPILATION_CACHE_DIR", "DIGITNET_XLA_CACHE", "DIGITNET_THREADS"):
        env.pop(name, None)
    if data_dir:
        env["DIGITNET_DATA"] = data_dir
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "digitnet", "sweep", str(folder), *flags], check=True, env=env, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def rows(folder: Path) -> dict[str, dict]:
    with open(folder / "results.csv", newline="") as handle:
        return {row["trial_id"]: row for row in csv.DictReader(handle)}


def moved_trials(before: dict[str, dict], after: dict[str, dict]) -> list[tuple]:
    """Trials whose test accuracy differs, with the spread over seeds of their cell (before)."""

    def cell(trial_id: str) -> str:
        return trial_id.rsplit("-s", 1)[0]  # w128-d2-relu-b128-s0 -> w128-d2-relu-b128

    cells: dict[str, list[float]] = {}
    for trial_id, row in before.items():
        cells.setdefault(cell(trial_id), []).append(float(row["test_accuracy"]))
    moved = []
    for trial_id, row in sorted(before.items()):
        a, b = float(row["test_accuracy"]), float(after[trial_id]["test_accuracy"])
        if a != b:
            seeds = cells[cell(trial_id)]
            spread = statistics.stdev(seeds) if len(seeds) > 1 else 0.0
            moved.append(
                (trial_id, f"{100 * a:.2f}%", f"{100 * b:.2f}%", f"{100 * (b - a):+.2f}", f"{100 * spread:.2f}")
            )
    return moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    add_record_option(parser)
    args, flags = parser.parse_known_args()
    if "--workers" in flags:
        raise SystemExit("bench_sweep: it sets --workers itself")

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        one_by_one = run_sweep(Path(tmp) / "one-by-one", [*flags, "--workers", "1"], args.data_dir)
        print(f"one trial at a time, every core: {one_by_one:.0f} s")
        default = run_sweep(Path(tmp) / "default", flags, args.data_dir)
        print(f"default scheduling: {default:.0f} s ({one_by_one / default:.2f}x)")
        before, after = rows(Path(tmp) / "one-by-one"), rows(Path(tmp) / "default")
    moved = moved_trials(before, after)
    findings = [
        f"{len(before)} trials; {len(before) - len(moved)} with the same test accuracy both ways, {len(moved)} moved"
    ]
    print(findings[0])
    for row in moved:
        print("  " + ", ".join(map(str, row)))
    if args.record:
        table = markdown_table(
            ["scheduling", "wall time", "speed-up"],
            [
                ("`--workers 1`: one trial at a time in one process, every core", f"{one_by_one:.0f} s", "1.00x"),
                (
                    "default: side by side, one thread each, where that is sooner",
                    f"{default:.0f} s",
                    f"{one_by_one / default:.2f}x",
                ),
            ],
            align="lrr",
        )
        parts = [
            f"`digitnet sweep {' '.join(flags) or '(defaults)'}`, each side from an empty compilation cache; "
            f"load average {load:.2f} before the run.",
            table,
            f"- {findings[0]}",
        ]
        if moved:
            parts += [
                "Trials whose test accuracy moved (one thread and all cores sum floats in other orders), beside "
                "the standard deviation over seeds of their cell:",
                markdown_table(["trial", "one by one", "default", "points", "cell std (points)"], moved, align="lrrrr"),
            ]
        append_record(args.record, parts)


if __name__ == "__main__":
    main()

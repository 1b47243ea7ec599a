"""Statistics over seeds: each cell's mean and spread, the best cell, and whether more width or depth helped."""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Sequence

from digitnet.config import FULL_BATCH

MIN_SEEDS = 2  # the fewest seeds per cell that give a spread, and so the fewest a verdict can rest on

Cell = tuple[str, "int | str", int, int]  # (activation, batch_size, depth, width): the trials of a cell differ by seed


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
        stats = dict(
            zip(("activation", "batch_size", "depth", "width"), cell), n=len(members), params=members[0]["params"]
        )
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
    """Whether every cell has the seeds a spread needs: a cell trained once has nothing to weigh a difference
    against."""
    return all(c["n"] >= MIN_SEEDS for c in cells)


def spread(a: dict, b: dict, metric: str = "test_accuracy") -> float:
    """The seed spread two cells are compared against: the larger of their two standard deviations."""
    return max(a[f"{metric}_std"], b[f"{metric}_std"])


def width_gain_stop(by_width: Sequence[dict], metric: str = "test_accuracy") -> dict:
    """The narrowest cell that no wider cell beats by more than the seed spread: where more neurons stop paying."""
    for i, cell in enumerate(by_width):
        if all(wider[metric] - cell[metric] <= spread(cell, wider, metric) for wider in by_width[i + 1 :]):
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


def counted(n: int, noun: str) -> str:
    """'1 trial', '2 trials': every count the sweep prints goes through here, so none reads '1 trials'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def layers(depth: int) -> str:
    """'1 hidden layer', '2 hidden layers'."""
    return counted(depth, "hidden layer")

"""summary.md: the sweep's findings in prose (more neurons? more layers?), the best cell, and every cell."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from digitnet.errors import DigitnetError
from digitnet.files import write_atomic
from digitnet.sweep.grid import SweepConfig
from digitnet.sweep.stats import (
    MIN_SEEDS,
    best_cell,
    cell_groups,
    cell_table,
    counted,
    depth_verdict,
    judged,
    layers,
    spread,
    width_gain_stop,
)
from digitnet.sweep.store import PLOT_FILE, SUMMARY_FILE, SWEEP_FILE, ResultsStore


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


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
    who = (
        "every cell here has"
        if single == len(cells)
        else f"{single} of {counted(len(cells), 'cell')} here {'has' if single == 1 else 'have'}"
    )
    return f"No verdicts: they need at least {MIN_SEEDS} seeds per cell, and {who} only 1."


def spread_note(cells: Sequence[dict]) -> str:
    """How to read the figures of summary.md, and what a cell trained once lacks."""
    if not any(c["n"] >= MIN_SEEDS for c in cells):
        return (
            "Each cell was trained with one seed: its figures are that run's, with no spread to judge a difference by."
        )
    note = (
        "Accuracies are means over seeds, ± the standard deviation over seeds; "
        "a difference counts only if it is larger than the larger spread of the two cells compared."
    )
    return note if judged(cells) else note + " A cell with n=1 has no spread yet: it shows its one run's figures."


def width_findings(by_depth_width: dict[int, list[dict]]) -> list[str]:
    """The 'more neurons' section: per depth, the gain from the narrowest to the best width and where it stops."""
    compared = [cells for cells in by_depth_width.values() if len(cells) > 1]
    with_verdicts = judged(c for cells in compared for c in cells)
    lines, helped = [], []
    for cells in compared:
        first, best, stop = cells[0], max(cells, key=lambda c: c["test_accuracy"]), width_gain_stop(cells)
        helped.append(best["test_accuracy"] - first["test_accuracy"] > spread(first, best))
        steps = ", ".join(
            f"{points(b['test_accuracy'] - a['test_accuracy'])} ({a['width']}->{b['width']})"
            for a, b in zip(cells, cells[1:])
        )
        if not with_verdicts:
            ending = ""  # without a spread there is no telling where the gain stops
        elif stop is cells[-1] and stop is not first:
            ending = f"; still gaining at the widest width tried ({stop['width']})"
        elif stop is first:
            ending = f"; no width beat {first['width']} by more than the seed spread"
        else:
            ending = (
                f"; the gain stops at width {stop['width']} ({mean_and_spread(stop)}): "
                "no wider network was better by more than the seed spread"
            )
        lines.append(
            f"- {layers(first['depth'])}: {pct(first['test_accuracy'])} at width {first['width']}, best "
            f"{pct(best['test_accuracy'])} at width {best['width']} "
            f"({points(best['test_accuracy'] - first['test_accuracy'])} "
            f"points){ending}. Gain per step, in points: {steps}."
        )
    if not lines:
        return ["Only one width was tried."]
    if not with_verdicts:
        return [no_verdict([c for cells in compared for c in cells]), "", *lines]
    verdict = (
        "More neurons helped"
        if all(helped)
        else "More neurons helped at some depths"
        if any(helped)
        else "More neurons did not help"
    )
    return [
        f"{verdict} (mean test accuracy rose by more than the seed spread at {sum(helped)} of "
        f"{counted(len(helped), 'depth')}):",
        "",
        *lines,
    ]


def depth_findings(by_width_depth: dict[int, list[dict]]) -> list[str]:
    """The 'more layers' section: at each width, the deeper networks against the shallowest."""
    compared = [cells for cells in by_width_depth.values() if len(cells) > 1]
    with_verdicts = judged(c for cells in compared for c in cells)
    lines, verdicts = [], []
    for cells in compared:
        verdict, best, gain = depth_verdict(cells)
        verdicts.append((cells[0]["width"], verdict))
        each = ", ".join(f"depth {c['depth']} {mean_and_spread(c)}" for c in cells)
        lines.append(
            f"- width {cells[0]['width']}: {each}; best deeper: depth {best['depth']}, {points(gain)} points "
            "over depth "
            f"{cells[0]['depth']}" + (f" ({verdict})" if with_verdicts else "")
        )
    if not lines:
        return ["Only one depth was tried."]
    if not with_verdicts:
        return [no_verdict([c for cells in compared for c in cells]), "", *lines]
    helped = [w for w, v in verdicts if v == "helped"]
    hurt = [w for w, v in verdicts if v == "hurt"]
    head = (
        f"More layers helped (mean test accuracy, by more than the seed spread) at {len(helped)} of "
        f"{counted(len(verdicts), 'width')}"
        + (f" ({', '.join(map(str, helped))})" if helped else "")
        + (f", hurt at {len(hurt)} ({', '.join(map(str, hurt))})" if hurt else "")
        + ("; elsewhere the difference was within the seed spread" if len(helped) + len(hurt) < len(verdicts) else "")
        + ":"
    )
    return [head, "", *lines]


def cells_markdown(cells: Sequence[dict]) -> list[str]:
    """The table of every cell: mean ± std over its n seeds, or the one run's figures where n is 1."""
    lines = [
        "| activation | batch | width | depth | params | n | val accuracy | test accuracy | test loss | train s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        lines.append(
            f"| {c['activation']} | {c['batch_size']} | {c['width']} | {c['depth']} | {c['params']:,} | {c['n']} | "
            f"{with_spread(c, 'val_accuracy')} | {with_spread(c, 'test_accuracy')} | "
            f"{with_spread(c, 'test_loss', '{:.4f}'.format)} | {with_spread(c, 'train_seconds', '{:.1f}'.format)} |"
        )
    return lines


def format_summary(rows: Sequence[dict], sweep: SweepConfig) -> str:
    """summary.md: whether more neurons and more layers helped, where the gain stops, the best cell, every cell."""
    cells = cell_table(rows)
    base = sweep.base
    lines = [
        f"# Neurons x hidden layers{dataset_suffix(base.dataset)}",
        "",
        f"{len(rows)} of {counted(len(sweep.trials()), 'trial')} finished; "
        f"{counted(len(sweep.seeds), 'seed')} per cell; "
        f"{counted(base.epochs, 'epoch')}, {base.optimizer}, learning rate {base.learning_rate}, "
        f"{base.schedule} schedule, "
        f"train size {base.train_size or 'all'}, validation {base.val_size} images. {spread_note(cells)}",
    ]
    best = best_cell(cells)
    lines += [
        "",
        "## Best cell, chosen on validation accuracy",
        "",
        f"Width {best['width']}, {layers(best['depth'])}, {best['activation']}, batch size {best['batch_size']} "
        f"({best['params']:,} parameters): validation {with_spread(best, 'val_accuracy')}, "
        f"test {with_spread(best, 'test_accuracy')} (n={best['n']}). "
        "Test accuracy is reported for every cell and was not used to choose.",
    ]
    for (activation, batch_size), group in cell_groups(cells).items():
        title = f" ({activation}, batch size {batch_size})" if len(cell_groups(cells)) > 1 else ""
        by_depth = {d: [c for c in group if c["depth"] == d] for d in sorted({c["depth"] for c in group})}
        by_width = {w: [c for c in group if c["width"] == w] for w in sorted({c["width"] for c in group})}
        lines += ["", f"## More neurons?{title}", "", *width_findings(by_depth)]
        lines += ["", f"## More layers?{title}", "", *depth_findings(by_width)]
    lines += ["", "## Every cell", "", *cells_markdown(cells), ""]
    return "\n".join(lines)


def dataset_suffix(dataset: str) -> str:
    """' on Fashion-MNIST' for a sweep on another data set than MNIST, whose titles name none, as they always did."""
    # Imported here: trial workers import this package before they pin their cores, and NumPy with digitnet.data.
    from digitnet.data import get_dataset

    return "" if dataset == "mnist" else f" on {get_dataset(dataset).title}"


def write_report(sweep_dir: str | Path) -> tuple[Path, Path]:
    """Write SWEEP_DIR/summary.md and SWEEP_DIR/sweep.png from results.csv and sweep.json; return their paths."""
    # Imported here: trial workers import this package and never draw.
    from digitnet.plots import plot_sweep

    sweep_dir = Path(sweep_dir)
    store = ResultsStore.of(sweep_dir)
    rows = store.rows()
    if not rows:
        raise DigitnetError(f"{store.path}: no finished trials to report on yet")
    sweep = SweepConfig.load(sweep_dir / SWEEP_FILE)
    summary = sweep_dir / SUMMARY_FILE
    write_atomic(summary, format_summary(rows, sweep))
    return summary, plot_sweep(cell_table(rows), sweep_dir / PLOT_FILE, dataset_suffix(sweep.base.dataset))

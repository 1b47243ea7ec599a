"""Bench records: a run's tables appended to a Markdown file under the date, the machine and the command.

Every bench script takes `--record FILE.md`; at the end of its run it calls `append_record`, so the tables in
docs/ are written by the runs that measured them, never retyped. Only the standard library is imported here,
and nothing heavy at import time: fast_phases.py times its own imports.

    add_record_option(parser)
    ...
    if args.record:
        append_record(args.record, [note, markdown_table(header, rows)])
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path


def add_record_option(parser: argparse.ArgumentParser) -> None:
    """The `--record FILE.md` option, the same in every bench script."""
    parser.add_argument(
        "--record",
        metavar="FILE.md",
        default=None,
        help="append this run's table to FILE.md (for instance docs/speed.md) under the date, "
        "the machine and this command line",
    )


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), which a container or `taskset` can make fewer than the
    machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def memory() -> str | None:
    """The machine's memory in GiB, where the system says."""
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (AttributeError, ValueError, OSError):  # no sysconf, or no such name on this system
        return None


def package_version(name: str) -> str:
    """The installed version of a distribution, read from its metadata without importing it."""
    from importlib import metadata  # here, not at the top: only a record needs it

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def accelerator() -> str | None:
    """The device JAX computes on, when the script has imported JAX and it is not the CPU."""
    jax = sys.modules.get("jax")  # never imported here just to ask
    if jax is None:
        return None
    device = jax.devices()[0]
    return None if device.platform == "cpu" else f"{device.device_kind} ({device.platform})"


def describe_machine() -> str:
    """One line: CPU model, usable cores, memory, accelerator if any, Python, JAX and Keras versions."""
    device = accelerator()
    ram = memory()
    parts = [f"{cpu_model()} ({platform.machine()}), {usable_cores()} cores" + (f", {ram}" if ram else "")]
    if device:
        parts.append(device)
    parts.append(f"Python {platform.python_version()}, JAX {package_version('jax')}, Keras {package_version('keras')}")
    return "; ".join(parts)


def command_line() -> str:
    """This process's command line as it could be typed again."""
    return "python " + shlex.join(sys.argv)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A Markdown table: the header, then one line per row, cells as `str(cell)` with `|` escaped.

    `align` has one letter per column, `l` or `r`; by default the first column is left-aligned and the others,
    the figures, right-aligned.
    """
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align: got {align!r}; give one letter, l or r, for each of the {len(header)} columns")
    rule = ["---" if side == "l" else "---:" for side in align]
    lines = [_table_line(header), _table_line(rule)]
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise ValueError(f"row {number} has {len(row)} cells; the header has {len(header)}")
        lines.append(_table_line(row))
    return "\n".join(lines)


def _table_line(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


def append_record(path: str | os.PathLike, blocks: Sequence[str]) -> None:
    """Append a heading (date, script), the machine, the command line and `blocks` (tables, notes) to a Markdown
    file."""
    now = datetime.datetime.now().astimezone()
    script = Path(sys.argv[0]).name
    text = "\n\n".join(
        [
            f"### {now:%Y-%m-%d %H:%M %Z}, `{script}`",
            f"- machine: {describe_machine()}\n- command: `{command_line()}`",
            *blocks,
        ]
    )
    path = Path(path)
    lead = ""
    if path.exists() and path.stat().st_size:  # a blank line between what is there and this record
        with path.open("rb") as existing:
            existing.seek(-1, os.SEEK_END)
            lead = "\n" if existing.read(1) == b"\n" else "\n\n"
    with path.open("a", encoding="utf-8") as out:
        out.write(lead + text + "\n")
    print(f"recorded in {path}")

"""The machine at hand: how many cores this process may use, and how many threads a training run should.

A small network trained on small batches runs faster on one core than on two: each step is a few microseconds
of arithmetic, and handing its pieces between threads on two cores costs more than it saves. Large products
gain from every core. XLA sizes its thread pool from the process's CPU affinity when JAX's backend starts, and
a program compiled then keeps that choice, so the choice is made per process, before JAX is imported: a run
whose training step is small is kept to one core (`use_cores`), and the persistent compilation cache gets one
folder per thread count, so that a program compiled for one thread is never loaded by a process with more.

bench/bench_threads.py measures where one thread stops being faster (docs/threads.md); the constants below
are that crossover. DIGITNET_THREADS=1 or =all forces a choice.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

THREADS_VARIABLE = "DIGITNET_THREADS"  # "1", "all", or unset / "auto": chosen by the size of the training step
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CACHE_BASE_VARIABLE = "DIGITNET_XLA_CACHE"  # the cache folder before the thread count is added to it
# One thread trains faster than all cores while a step's multiply-adds (batch size x the network's weights) stay
# under ONE_THREAD_MAX_WORK and the network has fewer weights than ONE_THREAD_MAX_WEIGHTS: a wide layer's product
# splits well between threads even for one image, many small products of a batch less so. Measured by
# bench/bench_threads.py over batch sizes 1 to 256 and widths 16 to 2048 (docs/threads.md).
ONE_THREAD_MAX_WORK = 3_000_000
ONE_THREAD_MAX_WEIGHTS = 1_000_000
# Multiply-adds per step from which trials one at a time on all cores finish sooner than two side by side, one
# core each (the sweep's choice). None: side by side was sooner at every size measured, up to 784-2048-10 at batch
# 128, where a single trial is 1.7x faster on two cores than on one (docs/threads.md).
ALONE_MIN_WORK: int | None = None
N_PIXELS, N_CLASSES = 784, 10


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, where the system has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def step_work(hidden: tuple[int, ...] | list[int], batch_size: int) -> int:
    """Multiply-adds of one forward pass over a batch: batch size x the weights of the network's Dense layers."""
    sizes = [N_PIXELS, *hidden, N_CLASSES]
    return batch_size * sum(a * b for a, b in zip(sizes, sizes[1:]))


def forced_threads() -> str:
    """DIGITNET_THREADS: "1", "all", or "auto" (also when unset); anything else is a DigitnetError."""
    forced = os.environ.get(THREADS_VARIABLE, "auto").strip().lower() or "auto"
    if forced not in ("auto", "1", "all"):
        from digitnet.errors import DigitnetError

        raise DigitnetError(f"{THREADS_VARIABLE}: got {forced!r}; allowed: 1, all, or auto")
    return forced


def threads_for(hidden: tuple[int, ...] | list[int], batch_size: int) -> int:
    """The thread count that trains this network fastest at this batch size here: 1, or every available core.

    DIGITNET_THREADS=1 or =all overrides the choice.
    """
    forced = forced_threads()
    if forced == "auto":
        return 1 if one_thread_is_faster(hidden, batch_size) else available_cores()
    return 1 if forced == "1" else available_cores()


def one_thread_is_faster(hidden: tuple[int, ...] | list[int], batch_size: int) -> bool:
    """Whether training this network at this batch size is faster on one thread than on all cores (see above)."""
    return step_work(hidden, batch_size) < ONE_THREAD_MAX_WORK and step_work(hidden, 1) < ONE_THREAD_MAX_WEIGHTS


def side_by_side(hidden: tuple[int, ...] | list[int], batch_size: int, cores: int) -> bool:
    """Whether trials of this network and batch size finish sooner side by side, one per core, than one at a time
    on all cores (the sweep's choice): always where one thread is the faster anyway; DIGITNET_THREADS forces it."""
    forced = forced_threads()
    if cores < 2 or forced == "1":
        return True
    if forced == "all":
        return False
    if one_thread_is_faster(hidden, batch_size):
        return True
    return ALONE_MIN_WORK is None or step_work(hidden, batch_size) < ALONE_MIN_WORK


def jax_started() -> bool:
    """Whether JAX is already loaded in this process: its thread pool may be sized, and affinity too late."""
    return "jax" in sys.modules


def use_cores(cores: set[int] | None = None, threads: int | None = None) -> bool:
    """Run this process on `cores` (default: the first `threads` of those it may use) with as many threads.

    Only before JAX is loaded, since its thread pool keeps the size it started with; returns False, changing
    nothing, once it is. Sets the thread counts of OpenMP and OpenBLAS too, which read them when they load,
    and points JAX's compilation cache at the folder for this thread count.
    """
    if jax_started():
        return False
    if cores is None:
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cores = set(allowed[: threads or len(allowed)])
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    count = len(cores) if cores else available_cores()
    for name in THREAD_VARIABLES:
        os.environ[name] = str(count)
    cache_for_threads(count)
    return True


def cache_for_threads(count: int) -> None:
    """Point JAX's persistent compilation cache, if one is set, at its subfolder for `count` threads."""
    current = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not current:
        return
    base = os.environ.get(CACHE_BASE_VARIABLE)
    if not base or Path(current) != Path(base) / Path(current).name or not Path(current).name.startswith("threads-"):
        base = current  # not a folder this function chose: the cache the user (or digitnet.files) set
    os.environ[CACHE_BASE_VARIABLE] = base
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(Path(base) / f"threads-{count}")

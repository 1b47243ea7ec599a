"""Threads: one core against all cores for digitnet's training epoch, over batch sizes and widths, side by side.

Each configuration (784-width-10, plain SGD) trains a few epochs in two worker processes started the same way,
one kept to one core and one free to use all, before JAX loads (digitnet.machine.use_cores): XLA sizes its
thread pool then. Times are the steady state (median epoch after the first, validation of 1,000 images
included), per training image. The table says which is faster and what digitnet.machine.threads_for chooses.

For sweeps it also measures two one-core processes training at the same time, each on its own core, against one
all-core process training the same two trials one after the other: which finishes a pair of trials sooner.

    python bench/bench_threads.py [--data-dir DIR] [--record docs/threads.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from record import add_record_option, append_record, markdown_table  # bench/record.py

BATCHES = (1, 4, 16, 32, 64, 128, 256)
WIDTHS = (16, 128, 512, 2048)
PAIR_WIDTHS = (128, 512, 2048)  # at batch size 128, the default sweep's
EPOCHS = 3
VAL_IMAGES = 1000
_state: dict = {}


def start(cores: set[int], data_dir: str | None) -> None:
    """A worker: keep to `cores` before JAX loads, then read MNIST once."""
    from digitnet.machine import use_cores

    assert use_cores(cores), "JAX was loaded before the worker chose its cores"
    from digitnet.data import load_mnist

    _state["mnist"] = load_mnist(data_dir)


def train_images(width: int, batch: int) -> int:
    """Training images per epoch: enough for a steady time, few enough that the slowest cells take seconds."""
    work = batch * (784 * width + width * 10)
    return 55_000 if work >= 2_000_000 else (20_000 if width <= 512 else 6_000)


def epoch_seconds(width: int, batch: int, n_train: int) -> float:
    """Median seconds of a steady epoch of 784-width-10 at this batch size on n_train images."""
    from digitnet.config import TrainConfig
    from digitnet.data import split_validation
    from digitnet.train import Trainer

    splits = split_validation(_state["mnist"], VAL_IMAGES, seed=0, train_size=n_train)
    config = TrainConfig(
        hidden=(width,),
        batch_size=batch,
        optimizer="sgd",
        learning_rate=0.01,
        schedule="constant",
        epochs=EPOCHS,
        val_size=VAL_IMAGES,
        train_size=n_train,
    )
    trainer = Trainer(config, splits)
    times = [trainer.run_epoch(epoch)["seconds"] for epoch in range(1, EPOCHS + 1)]
    return statistics.median(times[1:])


def worker(context, cores: set[int], data_dir: str | None) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(1, mp_context=context, initializer=start, initargs=(cores, data_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    add_record_option(parser)
    args = parser.parse_args()

    from digitnet.machine import ONE_THREAD_MAX_WEIGHTS, ONE_THREAD_MAX_WORK, step_work, threads_for

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("bench_threads: needs at least two cores to compare")
    load = os.getloadavg()[0]
    print(
        f"# {len(cores)} cores, load average {load:.2f}; digitnet.machine chooses one thread under "
        f"{ONE_THREAD_MAX_WORK:,} multiply-adds a step and {ONE_THREAD_MAX_WEIGHTS:,} weights"
    )
    context = get_context("spawn")
    one, every = worker(context, {cores[0]}, args.data_dir), worker(context, set(cores), args.data_dir)
    rows, agree = [], 0
    print(
        f"{'batch':>6} {'width':>6} {'work/step':>12} {'1 core us/img':>14} {'all us/img':>11} {'all/1':>6} "
        f"{'faster':>7} {'chosen':>7}"
    )
    for batch in BATCHES:
        for width in WIDTHS:
            n = train_images(width, batch)
            # Alternate which goes first, so that neither always runs on a warmer or cooler machine.
            order = (one, every) if (batch + width) % 2 else (every, one)
            seconds = {id(ex): ex.submit(epoch_seconds, width, batch, n).result() for ex in order}
            single, multi = seconds[id(one)] / n * 1e6, seconds[id(every)] / n * 1e6
            faster = 1 if single < multi else len(cores)
            os.environ.pop("DIGITNET_THREADS", None)
            chosen = threads_for((width,), batch)
            agree += chosen == faster
            row = (
                batch,
                width,
                f"{step_work((width,), batch):,}",
                f"{single:.2f}",
                f"{multi:.2f}",
                f"{multi / single:.2f}",
                faster,
                chosen,
            )
            rows.append(row)
            print(f"{row[0]:>6} {row[1]:>6} {row[2]:>12} {row[3]:>14} {row[4]:>11} {row[5]:>6} {row[6]:>7} {row[7]:>7}")
    one.shutdown(), every.shutdown()
    findings = [f"threads_for chose the faster at {agree} of {len(rows)} cells"]
    print(findings[-1])

    pairs = []
    for width in PAIR_WIDTHS:
        n, batch = 55_000, 128
        alone = worker(context, set(cores), args.data_dir)
        alone.submit(epoch_seconds, 16, 1, 100).result()  # started, MNIST read
        started = time.perf_counter()
        alone.submit(epoch_seconds, width, batch, n).result(), alone.submit(epoch_seconds, width, batch, n).result()
        sequential = time.perf_counter() - started
        alone.shutdown()
        side = [worker(context, {core}, args.data_dir) for core in cores[:2]]
        for ex in side:
            ex.submit(epoch_seconds, 16, 1, 100).result()
        started = time.perf_counter()
        for future in [ex.submit(epoch_seconds, width, batch, n) for ex in side]:
            future.result()
        together = time.perf_counter() - started
        for ex in side:
            ex.shutdown()
        pairs.append((width, batch, f"{sequential:.1f}", f"{together:.1f}", f"{sequential / together:.2f}x"))
        print(
            f"two trials 784-{width}-10 at batch {batch}: one after the other on all cores {sequential:.1f} s, "
            f"side by side on one core each {together:.1f} s ({sequential / together:.2f}x)"
        )

    if args.record:
        table = markdown_table(
            [
                "batch",
                "width",
                "multiply-adds/step",
                "1 core, us/image",
                "all cores, us/image",
                "all / 1",
                "faster",
                "chosen",
            ],
            rows,
            align="rrrrrrrr",
        )
        pair_table = markdown_table(
            ["width", "batch", "one after the other, all cores (s)", "side by side, one core each (s)", "gain"],
            pairs,
            align="rrrrr",
        )
        append_record(
            args.record,
            [
                f"Steady epoch time per training image, 784-width-10, SGD; {EPOCHS} epochs, "
                f"validation of {VAL_IMAGES} images included; load average {load:.2f} before "
                f"the run.",
                table,
                "\n".join(f"- {line}" for line in findings),
                "Two trials (3 epochs each, compiling and validation included):",
                pair_table,
            ],
        )


if __name__ == "__main__":
    main()

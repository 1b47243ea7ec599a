"""Training speed: digitnet's compiled epoch against plain Keras `model.fit`, side by side in one run.

Same data (55,000 training and 5,000 validation images), same model (784-128-10 ReLU), same optimizer on both
sides (plain SGD and Adam, each at a constant 1e-3). digitnet's engine runs twice, in a process kept to one core
and in one with every core, and its table shows the thread count digitnet chooses for each row. Per-epoch times
are steady state: the first epoch, which compiles, is excluded on both sides, and both sides include the
validation pass. The machine's float32 matrix-multiply rate is measured in the same
run, to show how close an epoch comes to the floor that its arithmetic sets.

    python bench/bench_train.py [--data-dir DIR] [--fit-epochs-bs1 3] [--record docs/speed.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import digitnet  # noqa: F401  (sets KERAS_BACKEND)

# isort: split

import jax
import jax.numpy as jnp
import keras
import numpy as np
from record import add_record_option, append_record, markdown_table  # bench/record.py

from digitnet.config import TrainConfig
from digitnet.data import load_mnist, split_validation
from digitnet.machine import threads_for
from digitnet.model import build_model
from digitnet.train import Trainer, make_optimizer, train_and_evaluate


def matmul_gflops(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    """Sustained float32 GFLOP/s of an (m, k) @ (k, n) product, measured for about `seconds`."""
    a = jnp.asarray(np.random.default_rng(0).random((m, k), np.float32))
    b = jnp.asarray(np.random.default_rng(1).random((k, n), np.float32))
    dot = jax.jit(lambda a, b: a @ b)
    dot(a, b).block_until_ready()
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            out = dot(a, b)
        out.block_until_ready()
        reps += 10
    return 2 * m * k * n * reps / (time.perf_counter() - started) / 1e9


def epoch_gflop(n_train: int, hidden: int = 128) -> float:
    """Arithmetic of one training epoch of 784-hidden-10: forward, weight gradients, and the one input
    gradient backpropagation needs (into the hidden layer; none into the pixels)."""
    weights = 784 * hidden + hidden * 10
    return n_train * (2 * weights + 2 * weights + 2 * hidden * 10) / 1e9


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.started)


def fit_epochs(
    splits, batch_size: int, epochs: int, optimizer: str = "adam"
) -> tuple[list[float], float, float, keras.Model]:
    """Plain Keras: epoch times, total wall time of the fit call, final validation accuracy, the model."""
    config = TrainConfig(batch_size=batch_size, schedule="constant", learning_rate=1e-3, optimizer=optimizer)
    model = build_model(config)
    model.compile(make_optimizer(config, 1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = splits.x_train.reshape(-1, 784).astype(np.float32) / 255.0
    x_val = splits.x_val.reshape(-1, 784).astype(np.float32) / 255.0
    timer = EpochTimer()
    started = time.perf_counter()
    history = model.fit(
        x,
        splits.y_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        shuffle=True,
        validation_data=(x_val, splits.y_val),
        callbacks=[timer],
    )
    return timer.times, time.perf_counter() - started, history.history["val_accuracy"][-1], model


def engine_epochs(splits, batch_size: int, epochs: int, optimizer: str = "adam") -> tuple[list[float], float, float]:
    """digitnet's engine: epoch times, compile seconds, and final validation accuracy."""
    config = TrainConfig(
        batch_size=batch_size, schedule="constant", learning_rate=1e-3, epochs=epochs, optimizer=optimizer
    )
    trainer = Trainer(config, splits or _worker["splits"])
    rows = [trainer.run_epoch(epoch) for epoch in range(1, epochs + 1)]
    return [row["seconds"] for row in rows], trainer.compile_seconds, rows[-1]["val_accuracy"]


_worker: dict = {}


def start_worker(cores: set[int], data_dir: str | None) -> None:
    """An engine process: it started on `cores` (see engine_workers); it reads MNIST once."""
    assert os.sched_getaffinity(0) == cores, "the worker did not start on its cores"
    _worker["splits"] = split_validation(load_mnist(data_dir), 5000, seed=0)


def engine_workers(data_dir: str | None) -> dict[int, ProcessPoolExecutor]:
    """One engine process kept to one core, and one free to use all cores; by thread count.

    A spawned child imports this script, and so JAX, before any initializer runs, and XLA sizes its thread pool
    from the CPU affinity at that moment: so each child is started from this thread while its own affinity is
    the child's share, which the child inherits, and this thread gets its own back at once.
    """
    context, cores = get_context("spawn"), sorted(os.sched_getaffinity(0))
    workers = {}
    for threads in sorted({1, len(cores)}):
        share = set(cores[:threads])
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, share)  # this thread only
        try:
            workers[threads] = ProcessPoolExecutor(
                1, mp_context=context, initializer=start_worker, initargs=(share, data_dir)
            )
            workers[threads].submit(int).result()  # the process starts now, with this thread's affinity
        finally:
            os.sched_setaffinity(0, before)
    return workers


def steady(times: list[float]) -> float:
    """Median epoch time with the first (compiling) epoch left out."""
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--fit-epochs-bs1", type=int, default=3, help="fit epochs at batch size 1 (each ~20 s)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per side at batch size 128 and for the engine")
    add_record_option(parser)
    args = parser.parse_args()

    mnist = load_mnist(args.data_dir)
    splits = split_validation(mnist, 5000, seed=0)
    n_train = len(splits.y_train)
    load_before = os.getloadavg()[0]
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"keras {keras.__version__}, load average {load_before:.2f}"
    )

    peak = matmul_gflops(1024, 1024, 1024)
    shaped = matmul_gflops(128, 784, 128)
    findings = [f"float32 matmul rate: {peak:.1f} GFLOP/s (1024^3), {shaped:.1f} GFLOP/s (128x784 @ 784x128)"]
    print(findings[-1])

    # digitnet's engine runs in worker processes, one kept to one core and one with every core, since XLA fixes its
    # thread count when JAX starts; `fit` runs here, on every core, as a user's script would.
    workers = engine_workers(args.data_dir)
    cores = max(workers)
    rows, threads_rows = [], []
    for batch_size, optimizer, fit_epochs_n in (
        (1, "sgd", args.fit_epochs_bs1),
        (1, "adam", args.fit_epochs_bs1),
        (128, "sgd", args.epochs),
        (128, "adam", args.epochs),
    ):
        fit_times, _, fit_val, _ = fit_epochs(splits, batch_size, fit_epochs_n, optimizer)
        engine = {
            threads: worker.submit(engine_epochs, None, batch_size, args.epochs, optimizer).result()
            for threads, worker in workers.items()
        }
        chosen = threads_for((128,), batch_size)
        eng_times, compile_s, eng_val = engine[chosen]
        rows.append((batch_size, optimizer, steady(fit_times), steady(eng_times), compile_s, fit_val, eng_val))
        threads_rows.append(
            (batch_size, optimizer, steady(fit_times), steady(engine[1][0]), steady(engine[cores][0]), chosen)
        )
    for worker in workers.values():
        worker.shutdown()

    print(
        f"\n{'batch':>6} {'optimizer':>9} {'fit s/epoch':>12} {'digitnet s/epoch':>17} {'speed-up':>9} "
        f"{'compile s':>10} "
        f"{'fit val_acc':>12} {'digitnet val_acc':>17}"
    )
    for batch_size, optimizer, fit_s, eng_s, compile_s, fit_val, eng_val in rows:
        print(
            f"{batch_size:>6} {optimizer:>9} {fit_s:>12.3f} {eng_s:>17.3f} {fit_s / eng_s:>8.1f}x {compile_s:>10.2f} "
            f"{fit_val:>12.4f} {eng_val:>17.4f}"
        )
    print(
        f"\n{'batch':>6} {'optimizer':>9} {'fit s/epoch':>12} {'1 thread':>9} {'x fit':>6} {f'{cores} threads':>10} "
        f"{'x fit':>6} {'chosen':>7}"
    )
    for batch_size, optimizer, fit_s, one_s, all_s, chosen in threads_rows:
        print(
            f"{batch_size:>6} {optimizer:>9} {fit_s:>12.3f} {one_s:>9.3f} {fit_s / one_s:>5.1f}x {all_s:>10.3f} "
            f"{fit_s / all_s:>5.1f}x {chosen:>7}"
        )

    # At batch size 1 Adam rewrites all its state for every sample: weights, both moments (read and write)
    # and the gradient (read), 7 float32 arrays of 101,770 values; the step time over those bytes is a bandwidth.
    adam_1 = rows[1][3] / n_train
    findings.append(
        f"batch 1, Adam: {1e6 * adam_1:.1f} us per step; its dense update alone moves "
        f"{7 * 4 * 101_770 / 1e6:.2f} MB per step = {7 * 4 * 101_770 / adam_1 / 1e9:.0f} GB/s"
    )
    print("\n" + findings[-1])

    work = epoch_gflop(n_train)
    eng_128 = rows[3][3]
    findings += [
        f"batch 128, Adam: {work:.1f} GFLOP per epoch; digitnet achieves {work / eng_128:.1f} GFLOP/s "
        f"(the epoch time includes the validation pass)",
        (
            f"  floor at the 1024^3 matmul rate: {work / peak:.3f} s/epoch -> digitnet at "
            f"{eng_128 / (work / peak):.2f}x it"
        ),
        f"  floor at the 128x784 @ 784x128 matmul rate: {work / shaped:.3f} s/epoch -> digitnet at "
        f"{eng_128 / (work / shaped):.2f}x it",
    ]
    print("\n".join(findings[-3:]))

    # End to end: a 10-epoch run from model construction to the test accuracy, both sides.
    started = time.perf_counter()
    model = fit_epochs(splits, 128, 10)[3]
    model.evaluate(mnist.test_images.reshape(-1, 784).astype(np.float32) / 255.0, mnist.test_labels, verbose=0)
    model_test = time.perf_counter() - started
    out = tempfile.mkdtemp()
    started = time.perf_counter()
    train_and_evaluate(
        TrainConfig(schedule="constant", learning_rate=1e-3, epochs=10),
        os.path.join(out, "run"),
        data=mnist,
        log=lambda _: None,
    )
    engine_total = time.perf_counter() - started
    shutil.rmtree(out)
    findings.append(
        f"10 epochs end to end at batch 128: fit {model_test:.2f} s, digitnet {engine_total:.2f} s "
        f"(both include compiling and the test evaluation; digitnet's also per-epoch checkpoints and "
        f"model.keras) -> {model_test / engine_total:.1f}x"
    )
    print(findings[-1])

    if args.record:
        table = markdown_table(
            [
                "batch",
                "optimizer",
                "`model.fit` s/epoch",
                "digitnet s/epoch",
                "speed-up",
                "compile",
                "fit val_accuracy",
                "digitnet val_accuracy",
            ],
            [
                (
                    batch_size,
                    optimizer,
                    f"{fit_s:.3f}",
                    f"{eng_s:.3f}",
                    f"{fit_s / eng_s:.1f}x",
                    f"{compile_s:.2f} s",
                    f"{fit_val:.4f}",
                    f"{eng_val:.4f}",
                )
                for batch_size, optimizer, fit_s, eng_s, compile_s, fit_val, eng_val in rows
            ],
            align="rlrrrrrr",
        )
        by_threads = markdown_table(
            [
                "batch",
                "optimizer",
                "`model.fit` s/epoch",
                "digitnet, 1 thread",
                "speed-up",
                f"digitnet, {cores} threads",
                "speed-up",
                "threads chosen",
            ],
            [
                (
                    batch_size,
                    optimizer,
                    f"{fit_s:.3f}",
                    f"{one_s:.3f}",
                    f"{fit_s / one_s:.1f}x",
                    f"{all_s:.3f}",
                    f"{fit_s / all_s:.1f}x",
                    chosen,
                )
                for batch_size, optimizer, fit_s, one_s, all_s, chosen in threads_rows
            ],
            align="rlrrrrrr",
        )
        append_record(
            args.record,
            [
                f"784-128-10, steady state (first epoch left out on both sides); "
                f"load average {load_before:.2f} before the run. digitnet with the threads it "
                f"chooses (digitnet.machine):",
                table,
                "The same epochs with one thread and with every core:",
                by_threads,
                "\n".join(f"- {line.strip()}" for line in findings),
            ],
        )


if __name__ == "__main__":
    main()

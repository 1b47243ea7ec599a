"""The `fast` recipe against the plain Keras anchor, side by side in one run, each timed from process start.

Each side is a fresh Python process, timed from its start to the end of its test evaluation (the moment its
last line, the test accuracy, is printed), and also to its exit (interpreter and XLA teardown included):
- digitnet: `digitnet train --recipe fast --seed S` (import, data, compile, train, checkpoints, save, evaluate),
  twice per seed: first with an empty compilation cache (cold: XLA compiles every program, as on a first run),
  then again with the programs that run cached (warm: as on every later run of the recipe on this machine);
- the anchor: the network a Keras user writes first, 784-512-10 ReLU with Adam and `model.fit` at Keras'
  default batch size of 32, for 7 epochs, then `model.evaluate` on the test set.

    python bench/bench_fast.py [--seeds 0 1 2] [--anchor-runs 1] [--data-dir DIR] [--record docs/speed.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import add_record_option, append_record, markdown_table  # bench/record.py

ANCHOR = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
import keras, numpy as np
from digitnet.data import load_mnist
mnist = load_mnist(sys.argv[1] or None)
x = mnist.train_images.reshape(-1, 784).astype("float32") / 255.0
x_test = mnist.test_images.reshape(-1, 784).astype("float32") / 255.0
keras.utils.set_random_seed(int(sys.argv[2]))
model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(512, activation="relu"),
                          keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, mnist.train_labels, epochs=7, verbose=0)
print(model.evaluate(x_test, mnist.test_labels, verbose=0)[1])
"""


def timed(command: list[str], env: dict) -> tuple[float, float, str]:
    """Run a command; seconds from its start to its last line of output, seconds to its exit, and that output.

    Its output is unbuffered (PYTHONUNBUFFERED), so a line is read the moment it is printed.
    """
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: a chatty stderr cannot block the child
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, env={**env, "PYTHONUNBUFFERED": "1"}
        )
        lines, last_line_at = [], started
        for line in process.stdout:
            lines.append(line)
            last_line_at = time.perf_counter()
        process.wait()
        exited = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            sys.exit(f"failed: {' '.join(command)}\n{errors.read()[-2000:]}")
    return last_line_at - started, exited, "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--anchor-runs", type=int, default=1)
    parser.add_argument("--data-dir", default=os.environ.get("DIGITNET_DATA", ""))
    add_record_option(parser)
    args = parser.parse_args()
    env = {**os.environ, "DIGITNET_DATA": args.data_dir}
    load_before = os.getloadavg()[0]
    print(f"# {os.cpu_count()} cores, load average {load_before:.2f}")

    runs: dict[str, list] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cache = {"JAX_COMPILATION_CACHE_DIR": str(Path(tmp) / f"xla-{seed}")}  # empty before the cold run
            for kind in ("cold", "warm"):
                out = Path(tmp) / f"fast-{seed}-{kind}"
                seconds, exited, _ = timed(
                    [
                        sys.executable,
                        "-m",
                        "digitnet",
                        "train",
                        "--recipe",
                        "fast",
                        "--seed",
                        str(seed),
                        "--out",
                        str(out),
                    ],
                    {**env, **cache},
                )
                accuracy = json.loads((out / "metrics.json").read_text())["test_accuracy"]
                runs[kind].append((seconds, exited, accuracy))
                print(
                    f"digitnet fast  seed {seed} {kind}: {seconds:6.2f} s ({exited:.2f} s to exit)  "
                    f"test accuracy {100 * accuracy:.2f}%",
                    flush=True,
                )
    # The anchor is plain Keras: no compilation cache, unless the caller's environment sets one.
    anchor = []
    for seed in range(args.anchor_runs):
        seconds, exited, output = timed([sys.executable, "-c", ANCHOR, args.data_dir, str(seed)], env)
        accuracy = float(output.split()[-1])
        anchor.append((seconds, exited, accuracy))
        print(
            f"keras anchor   seed {seed}:      {seconds:6.2f} s ({exited:.2f} s to exit)  "
            f"test accuracy {100 * accuracy:.2f}%",
            flush=True,
        )

    def summary(runs):
        times, exits, accs = [t for t, _, _ in runs], [e for _, e, _ in runs], [100 * a for _, _, a in runs]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        return statistics.mean(times), max(times), statistics.mean(exits), statistics.mean(accs), spread, len(runs)

    rows = {
        "digitnet cold": summary(runs["cold"]),
        "digitnet warm": summary(runs["warm"]),
        "keras anchor": summary(anchor),
    }
    print(f"\n{'':14} {'mean s':>7} {'max s':>7} {'to exit':>8} {'test acc %':>16} {'n':>3}")
    for name, (mean, top, exit_mean, acc, spread, n) in rows.items():
        print(f"{name:14} {mean:7.2f} {top:7.2f} {exit_mean:8.2f} {acc:9.2f} +- {spread:.2f} {n:3d}")
    speed_ups = [
        f"speed-up, {kind} (mean wall time, process start to test accuracy): "
        f"{rows['keras anchor'][0] / rows[f'digitnet {kind}'][0]:.1f}x"
        for kind in ("cold", "warm")
    ]
    print("\n".join(speed_ups))
    if args.record:
        processes = [
            (f"digitnet {kind}", seed, f"{seconds:.2f} s", f"{exited:.2f} s", f"{100 * accuracy:.2f}%")
            for kind in ("cold", "warm")
            for seed, (seconds, exited, accuracy) in zip(args.seeds, runs[kind])
        ]
        processes += [
            ("keras anchor", seed, f"{seconds:.2f} s", f"{exited:.2f} s", f"{100 * accuracy:.2f}%")
            for seed, (seconds, exited, accuracy) in enumerate(anchor)
        ]
        append_record(
            args.record,
            [
                (
                    "`--recipe fast` against the plain Keras anchor, each a fresh process; "
                    f"load average {load_before:.2f} before the run."
                ),
                markdown_table(
                    ["side", "mean to test accuracy", "max", "mean to exit", "test accuracy", "n"],
                    [
                        (name, f"{mean:.2f} s", f"{top:.2f} s", f"{exit_mean:.2f} s", f"{acc:.2f}% +- {spread:.2f}%", n)
                        for name, (mean, top, exit_mean, acc, spread, n) in rows.items()
                    ],
                ),
                "\n".join(f"- {line}" for line in speed_ups),
                markdown_table(["process", "seed", "to test accuracy", "to exit", "test accuracy"], processes),
            ],
        )


if __name__ == "__main__":
    main()

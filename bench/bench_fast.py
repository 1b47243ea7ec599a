"""The `fast` recipe against the plain Keras anchor, side by side in one run, each timed from process start.

Each side is a fresh Python process, timed from its start to the end of its test evaluation:
- digitnet: `digitnet train --recipe fast --seed S` (import, data, compile, train, checkpoints, save, evaluate);
- the anchor: the network a Keras user writes first, 784-512-10 ReLU with Adam and `model.fit` at Keras'
  default batch size of 32, for 7 epochs, then `model.evaluate` on the test set.

    python bench/bench_fast.py [--seeds 0 1 2] [--anchor-runs 1] [--data-dir DIR]
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


def timed(command: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--anchor-runs", type=int, default=1)
    parser.add_argument("--data-dir", default=os.environ.get("DIGITNET_DATA", ""))
    args = parser.parse_args()
    env = {**os.environ, "DIGITNET_DATA": args.data_dir}
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    fast = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"fast-{seed}"
            seconds, _ = timed([sys.executable, "-m", "digitnet.cli", "train", "--recipe", "fast", "--seed", str(seed),
                                "--out", str(out)], env)
            accuracy = json.loads((out / "metrics.json").read_text())["test_accuracy"]
            fast.append((seconds, accuracy))
            print(f"digitnet fast  seed {seed}: {seconds:6.2f} s  test accuracy {100 * accuracy:.2f}%", flush=True)
    anchor = []
    for seed in range(args.anchor_runs):
        seconds, done = timed([sys.executable, "-c", ANCHOR, args.data_dir, str(seed)], env)
        accuracy = float(done.stdout.split()[-1])
        anchor.append((seconds, accuracy))
        print(f"keras anchor   seed {seed}: {seconds:6.2f} s  test accuracy {100 * accuracy:.2f}%", flush=True)

    def summary(runs):
        times, accs = [t for t, _ in runs], [100 * a for _, a in runs]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        return statistics.mean(times), max(times), statistics.mean(accs), spread, len(runs)

    f, a = summary(fast), summary(anchor)
    print(f"\n{'':14} {'mean s':>7} {'max s':>7} {'test acc %':>16} {'n':>3}")
    print(f"{'digitnet fast':14} {f[0]:7.2f} {f[1]:7.2f} {f[2]:9.2f} +- {f[3]:.2f} {f[4]:3d}")
    print(f"{'keras anchor':14} {a[0]:7.2f} {a[1]:7.2f} {a[2]:9.2f} +- {a[3]:.2f} {a[4]:3d}")
    print(f"speed-up (mean wall time, process start to test accuracy): {a[0] / f[0]:.1f}x")


if __name__ == "__main__":
    main()

"""Time digitnet.augment.distort on this machine: per batch of 128, per epoch of 430 batches, and its parts.

    .venv/bin/python bench/bench_augment.py [--reps 300] [--batch-size 128] [--mnist-dir DIR] [--record docs/speed.md]

Compares the candidate ways to sample the distorted grid bilinearly, side by side in one run:
  gather          4 neighbours by flat index (jnp.take_along_axis): what distort uses
  gather_stacked  one gather of a 2 x 2 neighbourhood per pixel from a stacked copy of the image
  map_coordinates jax.scipy.ndimage.map_coordinates(order=1, mode="constant") under jax.vmap
Each is timed in the full pipeline (affine grid + elastic field + sampling), once per jitted call and
once as an epoch: 430 batches in one jitted jax.lax.scan, as the training engine runs it. The epoch is
timed in wall-clock and in process CPU time (all threads), which shifts less when the machine is shared.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import time
from pathlib import Path
from typing import Callable

import digitnet  # noqa: F401  (sets KERAS_BACKEND before anything imports keras)

# isort: split

import jax
import jax.numpy as jnp
import numpy as np
from record import add_record_option, append_record, markdown_table  # bench/record.py

from digitnet.augment import (
    IMAGE_SIZE,
    affine_grid,
    bilinear_sample,
    distort,
    elastic_displacement,
    uniform_noise,
)
from digitnet.config import TrainConfig

MNIST_DIR = Path("/work/shared/data/mnist")  # IDX files as distributed, gzipped
BATCHES_PER_EPOCH = 430  # 55,000 training images / 128 per batch
EPOCH_REPS = 3  # whole-epoch scans per method: each takes about a second

Sampler = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def sample_gather_stacked(images: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """Bilinear sampling by one gather of the 4 neighbours stored side by side for each top-left corner."""
    batch, height, width = images.shape
    padded = jnp.pad(images, ((0, 0), (1, 2), (1, 2)))
    quads = jnp.stack(
        [padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]], axis=-1
    ).reshape(batch, -1, 4)
    stride = width + 2
    rows = jnp.clip(rows, -1.0, height) + 1.0
    cols = jnp.clip(cols, -1.0, width) + 1.0
    row0, col0 = jnp.floor(rows), jnp.floor(cols)
    fr, fc = (rows - row0).reshape(batch, -1, 1), (cols - col0).reshape(batch, -1, 1)
    corner = (row0.astype(jnp.int32) * stride + col0.astype(jnp.int32)).reshape(batch, -1, 1)
    q = jnp.take_along_axis(quads, corner, axis=1)
    weights = jnp.concatenate([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc], axis=-1)
    return jnp.sum(q * weights, axis=-1).reshape(batch, height, width)


def sample_map_coordinates(images: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """Bilinear sampling by jax.scipy.ndimage.map_coordinates, one image at a time under vmap."""

    def one(image, r, c):
        return jax.scipy.ndimage.map_coordinates(image, [r, c], order=1, mode="constant", cval=0.0)

    return jax.vmap(one)(images, rows, cols)


SAMPLERS: dict[str, Sampler] = {
    "gather": bilinear_sample,
    "gather_stacked": sample_gather_stacked,
    "map_coordinates": sample_map_coordinates,
}


def distort_with(sampler: Sampler, key: jax.Array, images: jax.Array, config: TrainConfig) -> jax.Array:
    """distort's pipeline with the sampling step swapped for `sampler`."""
    field_key, affine_key = jax.random.split(key)
    rows, cols = affine_grid(affine_key, images.shape[0], config)
    d_rows, d_cols = elastic_displacement(field_key, images.shape[0], config.elastic_alpha, config.elastic_sigma)
    return jnp.clip(sampler(images, rows + d_rows, cols + d_cols), 0.0, 1.0)


def epoch_of(step: Callable[[jax.Array, jax.Array], jax.Array], images: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """A jitted scan of BATCHES_PER_EPOCH calls of step, summing the outputs so none is optimised away."""

    @jax.jit
    def epoch(key):
        def body(total, batch_key):
            return total + jnp.sum(step(batch_key, images)), None

        total, _ = jax.lax.scan(body, jnp.float32(0), jax.random.split(key, BATCHES_PER_EPOCH))
        return total

    return epoch


def microseconds_per_call(fn: Callable, args: tuple, reps: int, rounds: int = 5) -> tuple[float, float]:
    """Steady-state (wall, process CPU) time per call, in microseconds: the best of `rounds` rounds of `reps`.

    The best round, not the mean, and CPU time beside wall time, so that other work on a shared machine
    disturbs the figures less.
    """
    jax.block_until_ready(fn(*args))
    best_wall = best_cpu = float("inf")
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(reps):
            out = fn(*args)
        jax.block_until_ready(out)
        best_wall = min(best_wall, (time.perf_counter() - wall) / reps * 1e6)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / reps * 1e6)
    return best_wall, best_cpu


def _timing_row(name: str, step: Callable, key: jax.Array, images: jax.Array, reps: int) -> tuple[str, str, str, str]:
    """One table row: step timed as a jitted call per batch (us) and as a scanned epoch (wall and CPU ms)."""
    per_batch, _ = microseconds_per_call(jax.jit(step), (key, images), reps // 5)
    epoch_wall, epoch_cpu = microseconds_per_call(epoch_of(step, images), (key,), 1, rounds=EPOCH_REPS)
    return name, f"{per_batch:.0f}", f"{epoch_wall / 1e3:.0f}", f"{epoch_cpu / 1e3:.0f}"


def _print_row(row: tuple[str, str, str, str]) -> None:
    name, per_batch, epoch_wall, epoch_cpu = row
    print(f"{name:<26}{per_batch:>20}{epoch_wall:>18}{epoch_cpu:>18}")


def load_batch(batch_size: int, mnist_dir: Path = MNIST_DIR) -> jax.Array:
    """The first `batch_size` MNIST test images as float32 in [0, 1]."""
    raw = np.frombuffer(gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16)
    return jnp.asarray(raw.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)[:batch_size], jnp.float32) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300, help="timed calls per method, in 5 rounds (default: 300)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch (default: 128)")
    parser.add_argument("--mnist-dir", type=Path, default=MNIST_DIR, help=f"MNIST IDX files (default: {MNIST_DIR})")
    add_record_option(parser)
    args = parser.parse_args()

    config = TrainConfig(augment="elastic")
    images = load_batch(args.batch_size, args.mnist_dir)
    key = jax.random.key(0)
    setting = (
        f"load average {os.getloadavg()[0]:.2f}; batch {args.batch_size}, best of 5 rounds of {args.reps // 5} calls, "
        f"epoch = {BATCHES_PER_EPOCH} batches in one lax.scan, best of {EPOCH_REPS}"
    )
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}); {setting}"
    )
    print(f"{'method':<26}{'us/batch (jit call)':>20}{'ms/epoch (scan)':>18}{'CPU ms/epoch':>18}")
    candidates = {name: lambda k, x, s=s: distort_with(s, k, x, config) for name, s in SAMPLERS.items()}
    candidates = {"distort": lambda k, x: distort(k, x, config), **candidates}
    methods = []
    for name, step in candidates.items():
        methods.append(_timing_row(name, step, key, images, args.reps))
        _print_row(methods[-1])

    print("parts of distort (both displacement components kept, so XLA drops neither):")
    batch = args.batch_size
    rows, cols = affine_grid(key, batch, config)
    parts = {
        "noise, 8-bit (used)": lambda k, x: uniform_noise(k, (batch, 2, IMAGE_SIZE, IMAGE_SIZE)),
        "noise, float32 uniform": lambda k, x: jax.random.uniform(k, (batch, 2, IMAGE_SIZE, IMAGE_SIZE)),
        "elastic field": lambda k, x: sum(elastic_displacement(k, batch, config.elastic_alpha, config.elastic_sigma)),
        "affine grid": lambda k, x: sum(affine_grid(k, batch, config)),
        # A shift drawn per batch keeps XLA from hoisting an unchanging sampling out of the scan.
        "sampling (gather)": lambda k, x: bilinear_sample(x, rows + jax.random.uniform(k), cols),
    }
    part_rows = []
    for name, step in parts.items():
        part_rows.append(_timing_row(name, step, key, images, args.reps))
        _print_row(part_rows[-1])
    if args.record:
        header = ["us/batch (jit call)", "ms/epoch (scan)", "CPU ms/epoch"]
        append_record(
            args.record,
            [
                f"`distort` and its parts; {setting}.",
                markdown_table(["method", *header], methods),
                "Parts of `distort` (both displacement components kept, so XLA drops neither):",
                markdown_table(["part", *header], part_rows),
            ],
        )


if __name__ == "__main__":
    main()

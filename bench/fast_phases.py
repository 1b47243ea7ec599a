"""Where the `fast` recipe's seconds go: timestamps from process start through import, data, build, compile,
each epoch and the test evaluation, printed as they happen.

    python bench/fast_phases.py [--data-dir DIR]

Run it once with an empty JAX_COMPILATION_CACHE_DIR (cold) and again with the same one (warm); the
`digitnet` command sets that cache up itself, this script leaves it to the environment.
"""

import time

STARTED = time.perf_counter()


def mark(text: str) -> None:
    print(f"{time.perf_counter() - STARTED:6.2f} s  {text}", flush=True)


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default: DIGITNET_DATA or the cache)")
    args = parser.parse_args()
    import digitnet  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
    from digitnet.startup import hide_optional_imports_from_keras
    hide_optional_imports_from_keras()  # as the `digitnet` command does
    import jax  # noqa: F401
    mark("imported jax")
    import keras  # noqa: F401
    mark("imported keras")
    from digitnet.config import load_recipe
    from digitnet.data import load_mnist
    from digitnet.train import train_and_evaluate
    data = load_mnist(args.data_dir)
    mark("read and checked MNIST")
    with tempfile.TemporaryDirectory() as out:
        train_and_evaluate(load_recipe("fast"), out, data=data, log=mark)  # "built and compiled ..." ends that phase
    mark("done")


if __name__ == "__main__":
    main()

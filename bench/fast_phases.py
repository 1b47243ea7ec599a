"""Where the `fast` recipe's seconds go: timestamps from process start through import, data, build, compile,
each epoch and the test evaluation, printed as they happen.

    python bench/fast_phases.py [--data-dir DIR] [--record docs/speed.md]

Run it once with an empty JAX_COMPILATION_CACHE_DIR (cold) and again with the same one (warm); the
`digitnet` command sets that cache up itself, this script leaves it to the environment.
"""

import os  # already loaded by the interpreter's start-up: importing it costs nothing measured
import time


def cached_programs() -> int | None:
    """Files in JAX_COMPILATION_CACHE_DIR (0: a cold run), or None when the variable is not set."""
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return None if folder is None else sum(len(files) for _, _, files in os.walk(folder))


CACHED_AT_START = cached_programs()
STARTED = time.perf_counter()
MARKS: list[tuple[float, str]] = []  # (seconds from start, what had just finished), for --record


def mark(text: str) -> None:
    MARKS.append((time.perf_counter() - STARTED, text))
    print(f"{MARKS[-1][0]:6.2f} s  {text}", flush=True)


def main() -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=None, help="folder with the MNIST IDX files (default: DIGITNET_DATA or the cache)"
    )
    # record.add_record_option's option, written out: bench/record.py is imported only once the timing is done.
    parser.add_argument(
        "--record",
        metavar="FILE.md",
        default=None,
        help="append this run's table to FILE.md (for instance docs/speed.md) under the date, "
        "the machine and this command line",
    )
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
    if args.record:
        import record  # bench/record.py

        cache = (
            "JAX_COMPILATION_CACHE_DIR not set"
            if CACHED_AT_START is None
            else (
                f"JAX_COMPILATION_CACHE_DIR held {CACHED_AT_START} files at the start "
                f"({'cold' if CACHED_AT_START == 0 else 'warm'})"
            )
        )
        rows = [
            (f"{seconds:.2f} s", f"{seconds - before:.2f} s", text)
            for (before, _), (seconds, text) in zip([(0.0, "")] + MARKS, MARKS)
        ]
        record.append_record(
            args.record,
            [
                f"`--recipe fast`, seed 0; {cache}.",
                record.markdown_table(["from start", "step", "what had just finished"], rows, align="rrl"),
            ],
        )


if __name__ == "__main__":
    main()

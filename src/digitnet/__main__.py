"""The `digitnet` command (and `python -m digitnet`): Ctrl-C is handled before anything heavy is imported."""

import gc

from digitnet.interrupts import exit_at_once_on_ctrl_c


def run() -> None:
    exit_at_once_on_ctrl_c()
    from digitnet.cli import main  # imports Typer; each command imports JAX and Keras itself

    try:
        main()
    finally:
        # On the way out, Python's garbage collector walks every object JAX and Keras made: most of a second
        # after a training run has printed its last line. Frozen, they are left to the operating system,
        # which frees the process's memory anyway; all the command wrote is closed and flushed by then.
        gc.freeze()


if __name__ == "__main__":
    run()

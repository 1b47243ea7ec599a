"""The `digitnet` command (and `python -m digitnet`): Ctrl-C is handled before anything heavy is imported."""

from digitnet.interrupts import exit_at_once_on_ctrl_c


def run() -> None:
    exit_at_once_on_ctrl_c()
    from digitnet.cli import main  # imports Typer; each command imports JAX and Keras itself

    main()


if __name__ == "__main__":
    run()

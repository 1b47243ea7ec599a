"""Ctrl-C in the `digitnet` command: stop at once while nothing is at stake; where work saves itself, let it.

Python turns Ctrl-C into a KeyboardInterrupt wherever the main thread happens to be. While JAX and XLA
import or compile, that is often inside one of their callbacks, which swallow it ("Exception ignored in
...", and the command carries on) or abort the process with a C++ traceback. Until training or a sweep has
something to save there is nothing to lose, so the command's handler exits at once with one line. Inside
`saves_on_ctrl_c()` (the epoch loop with the final save and evaluation, a sweep) Ctrl-C raises
KeyboardInterrupt as usual, and that code saves its work and says how to continue; so does the one-worker
server, whose uvicorn shuts down and then raises Ctrl-C again. (`serve --workers` waits with a handler of its
own, which raises nothing: see serve.hand_out_connections.)

Library users keep Python's own behaviour: nothing here runs unless `exit_at_once_on_ctrl_c` is called.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

EXIT_CODE = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
_saving = 0  # how many saves_on_ctrl_c blocks the main thread is in


def exit_at_once_on_ctrl_c() -> None:
    """Install the command's Ctrl-C handler: call first thing in the process, before the heavy imports."""
    signal.signal(signal.SIGINT, _on_ctrl_c)


def _on_ctrl_c(signum: int, frame: object) -> None:
    if _saving:
        raise KeyboardInterrupt
    os.write(2, b"digitnet: interrupted\n")  # no print: the handler may run while sys.stderr is mid-write
    os._exit(EXIT_CODE)


@contextlib.contextmanager
def saves_on_ctrl_c() -> Iterator[None]:
    """A block whose code catches KeyboardInterrupt to save its work: within it Ctrl-C raises one."""
    global _saving
    _saving += 1
    try:
        yield
    finally:
        _saving -= 1

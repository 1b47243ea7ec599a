"""Where digitnet keeps its caches, and writing files so that a crash, a kill or Ctrl-C never leaves half of one."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

from digitnet.errors import DigitnetError
from digitnet.machine import available_cores, cache_for_threads


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/digitnet, or ~/.cache/digitnet: MNIST's files and XLA's compiled programs."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitnet"


def use_compilation_cache() -> None:
    """Keep the programs XLA compiles in cache_dir()/xla, so that running the same network again skips compiling.

    Set through JAX's environment variables, which it reads when it is imported, so this must run first;
    a user's own JAX_COMPILATION_CACHE_DIR wins. Every program is kept, not only those that took over a
    second to compile (JAX's default): on a first run of the `fast` recipe, the programs that draw the
    initial weights and that evaluate take together about as long to compile as its training epoch takes.
    The entries are keyed by the program, JAX's version and the machine, so a stale one is never used;
    deleting the folder is always safe. Each thread count has its subfolder (digitnet.machine).
    """
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_dir() / "xla"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    # A program compiled by a process with one thread runs with one thread wherever it is loaded: one folder each.
    cache_for_threads(available_cores())


class WriteError(DigitnetError):
    """A file could not be written (a full disk, no permission); its partial file was removed."""


def write_atomic(path: Path, content: bytes | str | Callable[[Path], None]) -> None:
    """Write bytes, text, or whatever `content(tmp_path)` writes, to a temporary file, then rename it over `path`.

    The temporary name keeps the suffix, since some writers (Keras' model.save, numpy's savez) go by it, and names
    the process and thread, so that two writing the same file (two sweeps' summaries) never share one. A write
    that fails (a full disk, say) removes the temporary file, leaves `path` as it was, and raises WriteError
    naming the file and the reason.
    """
    path = Path(path)
    part = path.with_name(f".{path.stem}.part-{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        if isinstance(content, bytes):
            part.write_bytes(content)
        elif isinstance(content, str):
            part.write_text(content)
        else:
            content(part)
        os.replace(part, path)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:  # Ctrl-C or a writer's own error mid-write: no partial file is left either
        part.unlink(missing_ok=True)
        raise

"""Writing files so that a crash, a kill or Ctrl-C never leaves half of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomic(path: Path, content: bytes | str | Callable[[Path], None]) -> None:
    """Write bytes, text, or whatever `content(tmp_path)` writes, to a temporary file, then rename it over `path`.

    The temporary name keeps the suffix, since some writers (Keras' model.save, numpy's savez) go by it.
    """
    path = Path(path)
    part = path.with_name(f".{path.stem}.part{path.suffix}")
    if isinstance(content, bytes):
        part.write_bytes(content)
    elif isinstance(content, str):
        part.write_text(content)
    else:
        content(part)
    os.replace(part, path)

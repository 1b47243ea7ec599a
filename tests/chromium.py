"""Headless Debian Chromium for the browser tests, driven by Playwright (whose own browser downloads are not used)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"  # Debian's package
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def browser_context(sync_api: Any, profile: Path, width: int, height: int) -> Iterator[Any]:
    """A Chromium context with a throwaway profile, no background network traffic and this viewport."""
    with sync_api.sync_playwright() as playwright:
        # Playwright takes the profile folder here rather than as --user-data-dir.
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            context.close()

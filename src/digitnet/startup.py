"""Start-up time of the command line: keep Keras from importing optional libraries it does not need here."""

from __future__ import annotations

import importlib.abc
import sys

# Keras imports these at its own import whenever they are installed, for features digitnet does not use
# (its scikit-learn wrapper classes, its pandas DataFrame adapter, its image-gallery plot): about 1.2 s
# of every start on a 2-core machine, a fifth of the `fast` recipe's whole run. Each of those Keras
# modules imports them inside `try: ... except ImportError`, so Keras runs without them.
# digitnet's own reports and plots import them later, normally.
HIDDEN_FROM_KERAS = ("sklearn", "pandas", "matplotlib")


class _HideFromKeras(importlib.abc.MetaPathFinder):
    """Answers "not installed" for the hidden packages while, and only while, `keras` is being imported."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN_FROM_KERAS and _keras_importing():
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None  # let the usual finders look


def _keras_importing() -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and bool(getattr(getattr(keras, "__spec__", None), "_initializing", False))


def hide_optional_imports_from_keras() -> None:
    """Install the finder (once); call before Keras is imported. Afterwards the libraries import as usual."""
    if "keras" not in sys.modules and not any(isinstance(f, _HideFromKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _HideFromKeras())

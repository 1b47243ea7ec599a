"""Every use of another library's private internals, in one place, each checked and with a public fallback.

They save start-up and serving time only; digitnet computes the same numbers without them. Set
DIGITNET_PUBLIC_API_ONLY=1 to turn them all off: then only the public APIs of Keras, uvicorn and Python's
import system are used.

- Keras: the initial weights of a network built in a `keras.StatelessScope(initialize_variables=False)` are
  drawn by one compiled program instead of one per initializer step (`initial_weights_drawn_together`).
- Keras' own import: the optional libraries it imports for features digitnet does not use are hidden from it
  while it loads (`hide_optional_imports_from_keras`).
- uvicorn: a server process serves connections accepted by another process (`uvicorn_protocol_factory`).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

SWITCH = "DIGITNET_PUBLIC_API_ONLY"
KERAS_VARIABLE_INTERNALS = ("_initializer", "_shape", "_dtype", "_convert_to_tensor", "_initialize")
# Keras imports these at its own import whenever they are installed, for features digitnet does not use (its
# scikit-learn wrapper classes, its pandas DataFrame adapter, its image-gallery plot); each such Keras module
# imports them inside `try: ... except ImportError`, so Keras runs without them. digitnet's own reports and
# plots import them later, as usual.
HIDDEN_FROM_KERAS = ("sklearn", "pandas", "matplotlib")


def enabled() -> bool:
    """Whether private internals may be used: unless DIGITNET_PUBLIC_API_ONLY is set to anything but 0."""
    return os.environ.get(SWITCH, "") in ("", "0")


# ---------------------------------------------------------------- Keras: initial weights


@contextlib.contextmanager
def initial_weights_drawn_together() -> Iterator[None]:
    """A scope to build a network (and its optimizer) in; their initial weights are all drawn when it ends.

    Inside, Keras creates each variable with its shape and defers its initializer, so functions can be compiled
    from the shapes meanwhile (on another thread). At the end, Keras would run each initializer on its own,
    eagerly, and on a first run XLA compiles a program for each step of each one (a uniform draw, zeros of each
    shape, a cast): nine for the `fast` recipe's network and optimizer. With the internals, all run in one jitted
    function: one program, the same numbers to the bit (a test compares them with Keras' own). Without them, or
    where a Keras distribution lays variables out over devices, there is no scope: Keras draws each weight as it
    makes the variable, the same numbers again.
    """
    import keras

    if not enabled() or keras.distribution.distribution() is not None:
        yield
        return
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    except BaseException:
        _forget_deferred_weights()
        raise
    _draw_deferred_weights()


def _draw_deferred_weights() -> None:
    import jax
    from keras.src.backend.common import global_state, variables

    pending = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        if not all(hasattr(v, name) for v in pending for name in KERAS_VARIABLE_INTERNALS):
            variables.initialize_all_variables()  # this Keras stores them otherwise: its own way
            return

        @jax.jit
        def initial_values() -> list[jax.Array]:
            return [v._initializer(v._shape, dtype=v._dtype) for v in pending]

        for variable, value in zip(pending, initial_values()):
            variable._initialize(variable._convert_to_tensor(value))  # as Keras' own path does
            variable._initializer = None
    finally:  # a network that failed to draw (too big for memory) is not left for the next one to draw
        _forget_deferred_weights()


def _forget_deferred_weights() -> None:
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("uninitialized_variables", [])


# ---------------------------------------------------------------- Keras: its own import


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
    """Keep Keras from importing scikit-learn, pandas and matplotlib at its own import (call before it loads).

    They cost over a second of every start on a 2-core machine, a fifth of the `fast` recipe's whole run. The
    finder only answers while `keras` itself is initialising; afterwards the libraries import as usual.
    """
    if not enabled() or "keras" in sys.modules or any(isinstance(f, _HideFromKeras) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _HideFromKeras())


# ---------------------------------------------------------------- uvicorn: handed connections


def uvicorn_hands_connections() -> bool:
    """Whether a uvicorn server process can serve connections that another process accepted (see below)."""
    if not enabled():
        return False
    import uvicorn

    async def no_app(scope, receive, send):  # only to load a config with
        pass

    config = uvicorn.Config(no_app, lifespan="off", log_config=None)
    config.load()
    parts = (
        getattr(config, "http_protocol_class", None),
        getattr(config, "lifespan_class", None),
        getattr(uvicorn.Server(config), "server_state", None),
    )
    return all(part is not None for part in parts)


def uvicorn_protocol_factory(server: Any) -> Callable[[], Any]:
    """What a started uvicorn.Server makes for each connection its own listener accepts.

    uvicorn has no public way to serve a socket accepted elsewhere; this builds its HTTP protocol as its own
    listener does, from its config and the server's state. Use only where `uvicorn_hands_connections()`.
    """
    config = server.config
    return lambda: config.http_protocol_class(
        config=config, server_state=server.server_state, app_state=server.lifespan.state
    )

"""digitnet: train, study and serve neural networks that read handwritten digits."""

import os

# Keras reads its backend once, at its first import; digitnet's engine is written in JAX.
if os.environ.get("KERAS_BACKEND", "jax") != "jax":
    raise ImportError(
        f"digitnet runs on Keras' JAX backend, but KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}: "
        "unset it or set KERAS_BACKEND=jax"
    )
os.environ["KERAS_BACKEND"] = "jax"

__version__ = "0.1.0"

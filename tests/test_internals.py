"""The private internals digitnet uses for speed (digitnet.internals): each one works, and the switch turns them off."""

import os
import subprocess
import sys

SCRIPT = """
import sys
import digitnet
from digitnet.internals import hide_optional_imports_from_keras
hide_optional_imports_from_keras()
import keras
print(sorted(m for m in ("sklearn", "pandas", "matplotlib") if m in sys.modules))
from sklearn.metrics import confusion_matrix
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas
print(confusion_matrix([0, 1, 1], [0, 1, 0]).tolist(), type(plt.figure()).__name__, \
pandas.DataFrame({"a": [1, 2]}).shape)
"""


def python(script: str, **env: str) -> list[str]:
    environment = {**{k: v for k, v in os.environ.items() if k != "DIGITNET_PUBLIC_API_ONLY"}, **env}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment
    ).stdout.splitlines()


def test_keras_imports_without_the_optional_libraries_and_they_import_afterwards():
    assert python(SCRIPT) == ["[]", "[[1, 0], [1, 1]] Figure (2, 1)"]


def test_without_the_finder_keras_imports_them_so_the_test_above_can_fail():
    assert python("import sys, digitnet, keras; print('sklearn' in sys.modules)") == ["True"]


def test_the_switch_leaves_keras_its_optional_imports():
    assert python(SCRIPT, DIGITNET_PUBLIC_API_ONLY="1")[0] != "[]"


def test_the_switch_turns_every_internal_off():
    script = "from digitnet import internals; print(internals.enabled(), internals.uvicorn_hands_connections())"
    assert python(script) == ["True True"]
    assert python(script, DIGITNET_PUBLIC_API_ONLY="1") == ["False False"]

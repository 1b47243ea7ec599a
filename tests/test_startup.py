"""The command line's start-up: Keras imports without scikit-learn, pandas and matplotlib, which still import later."""

import subprocess
import sys

SCRIPT = """
import sys
import digitnet
from digitnet.startup import hide_optional_imports_from_keras
hide_optional_imports_from_keras()
import keras
print(sorted(m for m in ("sklearn", "pandas", "matplotlib") if m in sys.modules))
from sklearn.metrics import confusion_matrix
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas
print(confusion_matrix([0, 1, 1], [0, 1, 0]).tolist(), type(plt.figure()).__name__, pandas.DataFrame({"a": [1, 2]}).shape)
"""


def test_keras_imports_without_the_optional_libraries_and_they_import_afterwards():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "[[1, 0], [1, 1]] Figure (2, 1)"]


def test_without_the_finder_keras_imports_them_so_the_test_above_can_fail():
    script = "import sys, digitnet, keras; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"

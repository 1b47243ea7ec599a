"""The package's layout: which modules may import which, and modules small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import digitnet

PACKAGE = Path(digitnet.__file__).parent
CORE = ("data", "model", "train", "evaluate", "config", "run", "augment", "files", "errors", "internals")
OUTER = ("cli", "serve", "plots", "sweep", "report", "predict", "lab")
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a source file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from digitnet import plots`
    return names


GRAPH = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def reaches(start: str) -> set[str]:
    """Every module `start` imports, directly or through digitnet's own modules."""
    seen, todo = set(), [start]
    while todo:
        for name in GRAPH.get(todo.pop(), ()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def top(name: str) -> str:
    """'digitnet.sweep.store' -> 'sweep'; 'sklearn.metrics' -> 'sklearn'."""
    parts = name.split(".")
    return parts[1] if parts[0] == "digitnet" and len(parts) > 1 else parts[0]


@pytest.mark.parametrize("core", CORE)
def test_the_core_imports_nothing_of_the_outer_layers(core):
    outer = {top(name) for name in GRAPH[f"digitnet.{core}"] if name.startswith("digitnet.")} & set(OUTER)
    assert not outer, f"digitnet.{core} imports {outer}"


@pytest.mark.parametrize("module", ["digitnet.predict", "digitnet.serve"])
def test_predicting_and_serving_need_neither_training_code_nor_scikit_learn(module):
    assert not {top(name) for name in reaches(module)} & {"train", "evaluate", "augment", "sweep", "sklearn"}


def test_reading_a_run_needs_no_jax():
    assert not {top(name) for name in reaches("digitnet.run")} & {"jax", "keras", "train"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_past_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines; split it by concern"


def test_the_graph_sees_real_imports():
    # So the tests above can fail: the training module does reach JAX and the model.
    assert {"jax", "digitnet.model"} <= reaches("digitnet.train")

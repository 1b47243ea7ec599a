# Two entry points: `make run` (set up, train the default model, print its test accuracy) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The reference copy of MNIST beside the project, when there is one; else digitnet finds or downloads it.
export DIGITNET_DATA ?= $(if $(wildcard ../shared/data/mnist),$(abspath ../shared/data/mnist),)

.PHONY: setup run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/digitnet train

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf $(VENV) runs sweeps .pytest_cache

# Two commands matter:  `make course` (set up + open JupyterLab on course/)  and  `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extra arguments for JupyterLab, e.g. JUPYTER_ARGS="--no-browser --port 8899".
JUPYTER_ARGS ?=
# Extra arguments for pytest, e.g. PYTEST_ARGS="-k bandits -x".
PYTEST_ARGS ?=
# Optional torch requirement installed before the project, e.g. TORCH="torch==2.13.0" for a local CPU build.
TORCH ?=

# Jupyter refuses to start as root unless told; containers and cloud machines often run as root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

# Headless machines render MuJoCo with EGL (software rendering works without a GPU or display).
ifeq ($(strip $(DISPLAY)),)
export MUJOCO_GL ?= egl
endif

.PHONY: help course test notebooks bench clean

help:
	@echo "make course   set up .venv and open JupyterLab on course/ (JUPYTER_ARGS=...)"
	@echo "make test     set up .venv with the dev extra and run the whole test suite (PYTEST_ARGS=...)"
	@echo "make notebooks  rebuild solutions/*.ipynb and course/ from solutions/*/*.py and hsd3_learn"
	@echo "make bench    run the benchmarks in bench/ and print their ratios"
	@echo "make clean    remove .venv and caches"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(if $(TORCH),$(BIN)/pip install $(TORCH))
	$(BIN)/pip install -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(if $(TORCH),$(BIN)/pip install $(TORCH))
	$(BIN)/pip install -e ".[dev]"
	@touch $@ $(VENV)/.installed

course: $(VENV)/.installed
	$(BIN)/jupyter lab --ServerApp.root_dir=course $(ALLOW_ROOT) $(JUPYTER_ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

notebooks: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m autograder build

bench: $(VENV)/.installed
	$(BIN)/python bench/traced.py
	$(BIN)/python bench/envs.py
	$(BIN)/python bench/updates.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

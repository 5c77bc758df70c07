# Two commands on a fresh machine:
#   make quickstart   set up, then run notebooks/quickstart.ipynb headless and print its runs
#   make test         set up (including headless Chromium), then run every test
# and, after them, make lab: open notebooks/quickstart.ipynb in JupyterLab
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: quickstart lab test lint bench clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[jupyter]'
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(BIN)/python -m pip install --quiet -e '.[jupyter,test,dask,dev,serve,dashboard,pdf]'
	touch $@

quickstart: $(VENV)/.core
	$(BIN)/airun run notebooks/quickstart.ipynb --output out/quickstart.ipynb

lab: $(VENV)/.core
	$(BIN)/jupyter lab notebooks/quickstart.ipynb

test: $(VENV)/.test
	bash scripts/install_browser.sh
	$(BIN)/ruff check airun_nb tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest --cov --cov-report=term

lint: $(VENV)/.test
	$(BIN)/ruff check airun_nb tests benchmarks
	$(BIN)/ruff format --check airun_nb tests benchmarks
	$(BIN)/mypy

bench: $(VENV)/.test
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/step_overhead.py
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/readers.py

clean:
	rm -rf $(VENV) out build *.egg-info

# Two commands on a fresh machine:
#   make quickstart   set up, then run notebooks/quickstart.ipynb headless and print its runs
#   make test         set up (including headless Chromium), then run every test
# and, after them, make lab [PORT=8890]: open notebooks/quickstart.ipynb in JupyterLab
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
	$(BIN)/python -m pip install --quiet -e '.[jupyter,test,dask,dev,serve,dashboard,pdf,mcp,postgres]'
	touch $@

quickstart: $(VENV)/.core
	$(BIN)/airun run notebooks/quickstart.ipynb --output out/quickstart.ipynb

# make lab [PORT=8890] [LAB_FLAGS="--no-browser ..."]: root (a container) needs --allow-root.
PORT      ?= 8888
LAB_FLAGS ?=
ROOT_FLAG  = $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(VENV)/.core
	$(BIN)/jupyter lab notebooks/quickstart.ipynb --port=$(PORT) $(ROOT_FLAG) $(LAB_FLAGS)

test: $(VENV)/.test
	bash scripts/install_browser.sh
	$(BIN)/ruff check airun_nb tests benchmarks
	$(BIN)/mypy
	@# Two steps: every test but the slowest on both cores, then the slow and browser tests
	@# (a soak, real browsers, saved notebooks) one at a time; coverage counts both.
	$(BIN)/python -m pytest -n 2 -m "not slow and not browser" --cov --cov-report= --cov-fail-under=0
	$(BIN)/python -m pytest -m "slow or browser" --cov --cov-append --cov-report=term

lint: $(VENV)/.test
	$(BIN)/ruff check airun_nb tests benchmarks
	$(BIN)/ruff format --check airun_nb tests benchmarks
	$(BIN)/mypy

bench: $(VENV)/.test
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/step_overhead.py
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/live_overhead.py --steps 10000 --rounds 3
	$(BIN)/python benchmarks/readers.py
	$(BIN)/python benchmarks/contention.py
	$(BIN)/python benchmarks/contention.py --step-ms 25
	$(BIN)/python benchmarks/pgstore.py

clean:
	rm -rf $(VENV) out build *.egg-info

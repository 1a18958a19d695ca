# Set-up and entry points. Everything runs from a virtualenv in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint format clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# Python packages, then PostGIS (installed from Debian when missing; the project does this itself).
setup: $(STAMP)
	$(BIN)/python -c "from db.local_cluster import ensure_postgis_installed as e; print('PostGIS binaries:', e())"

demo: setup
	$(BIN)/glacial-lakes demo

# pytest exits 5 when it collected nothing: that is not a failure of the product.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# Format check, lint (incl. docstrings and imports) and the type check; CI runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

# Server + workers (README "Three ways to run"): the work pools of deploy/prefect.yaml, then its
# deployments, on the Prefect server of PREFECT_API_URL (or the active Prefect profile). The demo
# deployment's catalog lies under GLACIAL_LAKES_HOME (default: the CLI's own default).
.PHONY: work-pools deploy
work-pools: $(STAMP)
	PREFECT=$(BIN)/prefect deploy/work-pools.sh

deploy: work-pools
	GLACIAL_LAKES_HOME="$${GLACIAL_LAKES_HOME:-$$($(BIN)/python -c 'from flows.settings import load_settings; print(load_settings().home)')}" \
	  $(BIN)/prefect deploy --all --prefect-file deploy/prefect.yaml --no-prompt

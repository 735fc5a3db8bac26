# Two commands do everything on a fresh machine with Python, pip and make:
#   make demo   run the example DAG end to end against the bundled emulator
#   make test   lint, type-check and run every test
# For the inner loop: make test-fast (the unit tier: no real Airflow processes, under a minute).
# make test-distributed: Airflow on PostgreSQL, Redis and Celery (installs them with apt-get as root).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

.PHONY: demo test test-fast test-distributed lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not airflow" -n 4

# PostgreSQL + Redis + CeleryExecutor, two workers, two triggerers: see tests/distributed/.
test-distributed: $(STAMP)
	bash scripts/install-distributed-deps.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider -m distributed tests/distributed

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet "apache-airflow-providers-http"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache

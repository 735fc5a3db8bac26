# Two commands do everything on a fresh machine with Python, pip and make:
#   make demo   run the example DAG end to end against the bundled emulator
#   make test   lint, type-check and run every test on the newest Airflow, and the compat suite on
#               each older Airflow line in its own virtualenv (docs/compatibility.md)
#   make test-compat AIRFLOW=3.1.8   the compat suite on one Airflow release alone
# For the inner loop: make test-fast (the unit tier: no real Airflow processes, under a minute).
# make test-distributed: Airflow on PostgreSQL, Redis and Celery (installs them with apt-get as root).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

# The older Airflow lines of the matrix (the newest one is the one in .venv); each is installed
# pinned, with the dependencies of its era from constraints/airflow-<major.minor>.txt.
COMPAT_LINES ?= 3.0.6 3.1.8 3.2.2
COMPAT_DIR := .venv-compat
COMPAT_TEST_DEPS := pytest pytest-asyncio pytest-timeout jsonschema av wtforms apache-airflow-providers-openlineage statsd
COMPAT_STAMPS := $(foreach v,$(COMPAT_LINES),$(COMPAT_DIR)/$(v)/.installed)

.PHONY: demo test test-fast test-distributed lint typecheck pytest test-compat compat-venvs bench clean

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

# The older lines' venvs are built in the background while lint, mypy and the full suite run;
# then each line's compat suite runs. Every step runs; the target fails if any did.
test: $(STAMP)
	@mkdir -p $(COMPAT_DIR)
	@$(MAKE) --no-print-directory -j3 compat-venvs > $(COMPAT_DIR)/build.log 2>&1 & builder=$$!; \
	status=0; \
	$(MAKE) --no-print-directory lint typecheck pytest || status=1; \
	wait $$builder || { tail -50 $(COMPAT_DIR)/build.log; exit 1; }; \
	for v in $(COMPAT_LINES); do $(MAKE) --no-print-directory test-compat AIRFLOW=$$v || status=1; done; \
	exit $$status

compat-venvs: $(COMPAT_STAMPS)

# One venv per Airflow release: pinned Airflow, its line's constraints, this package, test tools.
$(COMPAT_DIR)/%/.installed: pyproject.toml constraints/airflow-*.txt
	rm -rf $(COMPAT_DIR)/$*
	$(PYTHON) -m venv $(COMPAT_DIR)/$*
	$(COMPAT_DIR)/$*/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT_DIR)/$*/bin/python -m pip install --quiet -c constraints/airflow-$(basename $*).txt \
		"apache-airflow==$*" -e . $(COMPAT_TEST_DEPS)
	touch $@

test-compat:
	@test -n "$(AIRFLOW)" || { echo "usage: make test-compat AIRFLOW=3.1.8"; exit 2; }
	@test -f constraints/airflow-$(basename $(AIRFLOW)).txt || \
		{ echo "no constraints/airflow-$(basename $(AIRFLOW)).txt for Airflow $(AIRFLOW)"; exit 2; }
	@$(MAKE) --no-print-directory $(COMPAT_DIR)/$(AIRFLOW)/.installed
	KIRIN_COMPAT_AIRFLOW=$(AIRFLOW) AIRFLOW_HOME=$(CURDIR)/$(COMPAT_DIR)/$(AIRFLOW)/home \
		$(COMPAT_DIR)/$(AIRFLOW)/bin/python -m pytest -q -p no:cacheprovider -m compat tests/compat

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not airflow and not slow and not compat_rerun" -n 4

# PostgreSQL + Redis + CeleryExecutor, two workers, two triggerers: see tests/distributed/.
test-distributed: $(STAMP)
	bash scripts/install-distributed-deps.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider -m distributed tests/distributed

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet "apache-airflow-providers-http"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(COMPAT_DIR) build dist .mypy_cache .ruff_cache

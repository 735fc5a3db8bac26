# Two commands do everything on a fresh machine with Python, pip and make:
#   make demo   run the example DAG end to end against the bundled emulator
#   make test   lint, type-check and run every test on the newest Airflow, and the compat suite on
#               each older Airflow line in its own virtualenv (docs/compatibility.md)
#   make test-compat AIRFLOW=3.1.8   the compat suite on one Airflow release alone
# For the inner loop: make test-fast (the unit tier: no real Airflow processes, in parallel).
# make test-distributed: Airflow on PostgreSQL, Redis and Celery (installs them with apt-get as root).
# make constraints-refresh [AIRFLOW=3.1.8]: move a line's pinned dependencies forward, deliberately.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

# Every venv installs with its Airflow line's constraints/airflow-<major.minor>.txt: every
# dependency pinned (==), made by scripts/constraints.py from a resolution under the line's caps
# (constraints/caps/airflow-<major.minor>.in) that passed the line's suite. A new release of
# anything changes nothing until `make constraints-refresh` moves it (docs/compatibility.md).
# The newest line (the full suite, in .venv) and the older lines of the matrix (the compat suite,
# each in its own venv):
NEWEST_AIRFLOW ?= 3.3.2
COMPAT_LINES ?= 3.0.6 3.1.8 3.2.2
NEWEST_CONSTRAINTS := constraints/airflow-$(basename $(NEWEST_AIRFLOW)).txt
# The flags to install with the pins of constraints file $(1), build dependencies included.
pinned = -c $(1) --build-constraints $(1)
# Every venv is made and filled by uv (the same pins; it fetches in parallel, where pip waits on the
# package index one file at a time), itself installed once with pip into a venv of its own, pinned
# by constraints/tools.txt. Never a Python download: each venv is on $(PYTHON). Each venv gets the
# pinned pip too (the wheel test and users' habits use it).
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never
uv_venv = rm -rf $(1) && $(UV) venv --quiet --python $(PYTHON) $(1)
uv_install = $(UV) pip install --quiet --python $(1)/bin/python $(call pinned,$(2))
COMPAT_DIR := .venv-compat
COMPAT_TEST_DEPS := pytest pytest-asyncio pytest-timeout jsonschema av wtforms apache-airflow-providers-openlineage statsd
COMPAT_STAMPS := $(foreach v,$(COMPAT_LINES),$(COMPAT_DIR)/$(v)/.installed)
# Lines whose compat run also runs the real-server end-to-end test (tests/e2e): api-server,
# scheduler, triggerer and dag-processor. The oldest line in `make test`; the newest runs it in its
# full suite, and here when its constraints are refreshed (or `make test-compat AIRFLOW=3.3.2`).
E2E_LINES ?= 3.0 3.3
# There the pool test is left out: it checks Airflow's own pool accounting of deferred tasks (no
# provider difference between lines) and is the longest (~50 s); the full suite runs it on 3.3, and
# it passes on 3.0.6 too (`make test-compat AIRFLOW=3.0.6 E2E_DESELECT=` runs it).
E2E_DESELECT ?= --deselect tests/e2e/test_real_airflow.py::test_pool_caps_concurrent_creates

# Every process of every target keeps its bytecode in __pycache__ (git-ignored), even where the
# environment says PYTHONDONTWRITEBYTECODE: uv installs no bytecode, so otherwise every Airflow
# process (each CLI command, scheduler, triggerer, api-server, worker) compiles Airflow's modules
# from source again, about 3.5 s of CPU more per start (6.4 s against 2.8 s to import Airflow and
# the hook), and every pytest run and xdist worker rewrites ~160 test modules.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: demo test test-fast test-distributed lint typecheck pytest test-compat compat-lines compat-suite compat-venvs \
	constraints-refresh bench clean

$(UV): constraints/tools.txt
	$(PYTHON) -m venv --clear $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet -c constraints/tools.txt uv
	touch $(UV)

# hatchling (the build backend) too: the wheel test builds without an isolated build env (no index).
$(STAMP): pyproject.toml $(NEWEST_CONSTRAINTS) | $(UV)
	$(call uv_venv,$(VENV))
	$(call uv_install,$(VENV),$(NEWEST_CONSTRAINTS)) pip -e ".[dev]" hatchling
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The full suite in parallel (pytest-xdist): each module runs whole on one worker, the long ones first
# (tests/conftest.py); every test's Airflow has its own AIRFLOW_HOME.
# The workers mostly wait (for Airflow, the emulator, deadlines): 3 beat 2 and 4 on 2 cores.
PYTEST_WORKERS ?= 3
pytest: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile \
		--no-loadscope-reorder

# What runs when, on 2 cores (each step mostly waits, on Airflow, the emulator, deadlines or the
# package index, so they share the CPU):
# - the older lines' venvs build in the background from the start, while .venv is built;
# - lint, mypy (about 15 s of CPU in all) and the full suite run together; each target's output is
#   printed whole when it ends;
# - the compat lines (compat-lines: every older line at once) start when the suite's first xdist
#   worker has finished (tests/conftest.py touches SUITE_TAIL), not when the suite has: 13-35 s
#   sooner in CI, with fewer workers left than cores. Their output follows;
# - `make test WITH_DISTRIBUTED=1` (CI, .ci/run) also runs the distributed test (test-distributed)
#   beside the full suite, which leaves about 30 % of the CPU idle on its own. Its packages are
#   installed into .venv before either starts; its output comes last.
# Running everything at once from the start was slower (808 s against 725-752 s in CI): no CPU was
# idle, but the same work took more of it. Every step runs; the target fails if any did.
WITH_DISTRIBUTED ?=
SUITE_TAIL := $(COMPAT_DIR)/suite-tail
test: $(UV)
	@mkdir -p $(COMPAT_DIR)
	@$(MAKE) --no-print-directory -j3 compat-venvs > $(COMPAT_DIR)/build.log 2>&1 & builder=$$!; \
	status=0; \
	$(MAKE) --no-print-directory $(STAMP) $(if $(WITH_DISTRIBUTED),$(DIST_STAMP)) || { wait $$builder; exit 1; }; \
	if [ -n "$(WITH_DISTRIBUTED)" ]; then \
		$(MAKE) --no-print-directory test-distributed > $(COMPAT_DIR)/distributed.log 2>&1 & distributed=$$!; \
	fi; \
	rm -f $(SUITE_TAIL); \
	KIRIN_SUITE_TAIL_FILE=$(abspath $(SUITE_TAIL)) \
		$(MAKE) --no-print-directory -k -j3 --output-sync=target lint typecheck pytest & suite=$$!; \
	while kill -0 $$suite 2>/dev/null && [ ! -e $(SUITE_TAIL) ]; do sleep 1; done; \
	wait $$builder || { tail -50 $(COMPAT_DIR)/build.log; wait $$suite; exit 1; }; \
	$(MAKE) --no-print-directory compat-lines > $(COMPAT_DIR)/lines.log 2>&1 & lines=$$!; \
	wait $$suite || status=1; \
	wait $$lines || status=1; cat $(COMPAT_DIR)/lines.log; \
	if [ -n "$(WITH_DISTRIBUTED)" ]; then \
		wait $$distributed || status=1; echo "== make test-distributed =="; cat $(COMPAT_DIR)/distributed.log; \
	fi; \
	exit $$status

# The compat suite of every line of COMPAT_LINES at the same time, each in its own venv, homes and
# ports (they mostly wait on Airflow and the emulator), each into $(COMPAT_DIR)/<release>.log; the
# logs are printed in order once all are done. Fails if any line failed.
compat-lines: $(COMPAT_STAMPS)
	@pids=""; for v in $(COMPAT_LINES); do \
		$(MAKE) --no-print-directory test-compat AIRFLOW=$$v > $(COMPAT_DIR)/$$v.log 2>&1 & pids="$$pids $$!"; \
	done; \
	status=0; for p in $$pids; do wait $$p || status=1; done; \
	for v in $(COMPAT_LINES); do echo "== compat suite on Airflow $$v =="; cat $(COMPAT_DIR)/$$v.log; done; \
	exit $$status

compat-venvs: $(COMPAT_STAMPS)

# One venv per Airflow release: pinned Airflow, this package and the test tools, all with the
# line's pins (the file pins the release itself: another release of the line needs its own refresh).
$(COMPAT_DIR)/%/.installed: pyproject.toml constraints/airflow-*.txt | $(UV)
	$(call uv_venv,$(COMPAT_DIR)/$*)
	$(call uv_install,$(COMPAT_DIR)/$*,constraints/airflow-$(basename $*).txt) \
		pip "apache-airflow==$*" -e . $(COMPAT_TEST_DEPS)
	touch $@

test-compat:
	@test -n "$(AIRFLOW)" || { echo "usage: make test-compat AIRFLOW=3.1.8"; exit 2; }
	@test -f constraints/airflow-$(basename $(AIRFLOW)).txt || \
		{ echo "no constraints/airflow-$(basename $(AIRFLOW)).txt for Airflow $(AIRFLOW)"; exit 2; }
	@$(MAKE) --no-print-directory $(COMPAT_DIR)/$(AIRFLOW)/.installed
	@$(MAKE) --no-print-directory compat-suite AIRFLOW=$(AIRFLOW) COMPAT_VENV=$(COMPAT_DIR)/$(AIRFLOW)

# The suite of one line in the venv COMPAT_VENV (make test-compat's, or the throw-away venv of a
# refresh): the compat suite, plus tests/e2e on the lines of E2E_LINES. `-m "compat or airflow"`
# selects the compat suite in tests/compat and every test of tests/e2e (marker `airflow`).
compat-suite:
	@test -n "$(AIRFLOW)" -a -n "$(COMPAT_VENV)" || \
		{ echo "usage: make compat-suite AIRFLOW=3.1.8 COMPAT_VENV=<venv with that Airflow>"; exit 2; }
	KIRIN_COMPAT_AIRFLOW=$(AIRFLOW) AIRFLOW_HOME=$(abspath $(COMPAT_VENV))/home \
		$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "compat or airflow" tests/compat \
		$(if $(filter $(basename $(AIRFLOW)),$(E2E_LINES)),tests/e2e $(E2E_DESELECT))

# Deliberately move the pins forward: each line (or AIRFLOW=<release> alone) re-resolved to the
# newest packages its caps allow in a throw-away venv, its suite run there, and its constraints file
# rewritten only if that passed; prints what moved. Review `git diff constraints/` and commit it.
constraints-refresh:
	$(PYTHON) scripts/constraints.py refresh --test-deps "$(COMPAT_TEST_DEPS)" \
		$(or $(AIRFLOW),$(COMPAT_LINES) $(NEWEST_AIRFLOW))

# The unit tier mostly waits (deadlines, the emulator): 6 workers beat 4 on 2 cores (41 s against 51 s
# here); 10 over-subscribe them until timing tests get flaky.
FAST_WORKERS ?= 6
test-fast: $(STAMP)
	KIRIN_PROPERTY_EXAMPLES=100 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not airflow and not slow and not compat_rerun" \
		-n $(FAST_WORKERS)

# PostgreSQL + Redis + CeleryExecutor, two workers, two triggerers: see tests/distributed/. Its
# packages (apt-get as root where missing; the `distributed` extra, pinned) are installed once per .venv.
DIST_STAMP := $(VENV)/.distributed-installed
$(DIST_STAMP): $(STAMP) $(NEWEST_CONSTRAINTS)
	UV=$(UV) CONSTRAINTS=$(NEWEST_CONSTRAINTS) bash scripts/install-distributed-deps.sh
	touch $@

test-distributed: $(DIST_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m distributed tests/distributed

bench: $(STAMP)
	$(call uv_install,$(VENV),$(NEWEST_CONSTRAINTS)) "apache-airflow-providers-http"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(COMPAT_DIR) $(TOOLS) .venv-constraints build dist .mypy_cache .ruff_cache

#!/usr/bin/env bash
# Install what `make test-distributed` needs beyond `make test`:
#   - Debian packages postgresql and redis-server (only when their binaries are missing; needs root,
#     as in CI; without root, install them yourself: see README "Developing");
#   - the venv's `distributed` extra (Celery provider, PostgreSQL and Redis clients), pinned by the
#     newest line's constraints file (CONSTRAINTS, which the Makefile passes; it covers the extra).
# Nothing is started here: the test starts its own PostgreSQL and Redis on loopback and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
CONSTRAINTS="${CONSTRAINTS:-constraints/airflow-3.3.txt}"

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }
have_redis() { command -v redis-server >/dev/null; }

missing=()
have_postgres || missing+=(postgresql)
have_redis || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: ${missing[*]} missing and not root: install them (e.g. sudo apt-get install ${missing[*]})," >&2
        echo "       or put initdb/postgres and redis-server on PATH" >&2
        exit 1
    fi
    echo "Installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: no system-wide cluster or service is needed, only the binaries.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the packaged services where it can; the test runs its own on free ports.
fi

# With uv when the Makefile passes it (UV), else with the venv's pinned pip: the same pins.
if [ -n "${UV:-}" ]; then
    "$UV" pip install --quiet --python "$VENV/bin/python" -c "$CONSTRAINTS" --build-constraints "$CONSTRAINTS" -e ".[dev,distributed]"
else
    "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" --build-constraint "$CONSTRAINTS" -e ".[dev,distributed]"
fi

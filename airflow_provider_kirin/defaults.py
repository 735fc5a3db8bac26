"""Defaults shared by the hooks, operator, sensor and trigger (kept import-free for DAG parse time).

Why these values: a generation takes from about half a minute to a few minutes, so a status check
in the first 20 s only spends requests (``FIRST_POLL_DELAY``); after that a check every 10 s
notices completion within 10 s for about six requests a minute per task (``POLL_INTERVAL``); and
30 minutes (``TIMEOUT``) is several times the slowest normal generation (a 10 s ``pro`` clip) yet
short enough that a stuck task does not hold a pool slot for long.
"""

from __future__ import annotations

DEFAULT_CONN_ID = "kirin_default"

FIRST_POLL_DELAY = 20.0
POLL_INTERVAL = 10.0
TIMEOUT = 30 * 60.0
MAX_CONSECUTIVE_POLL_ERRORS = 5

#: Rough generation times by (mode, duration), from the API's own guidance ("a 5 s clip in std
#: mode typically takes one to a few minutes; pro and 10 s clips take longer"). Only used to check
#: more often around the time a generation is due; never to give up early.
EXPECTED_SECONDS = {("std", "5"): 60.0, ("std", "10"): 120.0, ("pro", "5"): 120.0, ("pro", "10"): 240.0}

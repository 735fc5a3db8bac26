"""Defaults shared by the hooks, operators, sensor and triggers: each stated once, here (kept
import-free for DAG parse time). The request fields' own defaults and limits are not here: they
are the request model's (``models.KirinVideoRequest``).

Why these values: a generation takes from about half a minute to a few minutes, so a status check
in the first 20 s only spends requests (``FIRST_POLL_DELAY``); after that a check every 10 s
notices completion within 10 s for about six requests a minute per task (``POLL_INTERVAL``); and
30 minutes (``TIMEOUT``) is several times the slowest normal generation (a 10 s ``pro`` clip) yet
short enough that a stuck task does not hold a pool slot for long. Failed status checks end a wait
only after five minutes of them (``MAX_POLL_ERROR_SECONDS``): a deploy, a failover or a brief
outage of the API is ridden out, while a wait against a service that is really gone still fails
well before its deadline.
"""

from __future__ import annotations

DEFAULT_CONN_ID = "kirin_default"

FIRST_POLL_DELAY = 20.0
POLL_INTERVAL = 10.0
TIMEOUT = 30 * 60.0
MAX_POLL_ERROR_SECONDS = 300.0

#: Extra seconds a deferral may outlive its trigger's own deadline, so the trigger's clean
#: ``timeout`` event (after a last status check) wins over Airflow's generic deferral timeout.
DEFER_TIMEOUT_MARGIN = 60.0

#: The most videos one task answer may name (connection extra ``max_videos``): a generation makes
#: one, two with a watermarked copy. More are cut with a warning (``models.bounded_envelope``).
MAX_VIDEOS = 4

#: Videos a batch keeps at once: a CDN's time to first byte, not bandwidth, makes one at a time slow.
KEEP_CONCURRENCY = 8

#: A generated clip is tens of MB; a download past this is not a video we asked for.
DEFAULT_MAX_BYTES = 2 * 1024**3

#: Rough generation times by (mode, duration), from the API's own guidance ("a 5 s clip in std
#: mode typically takes one to a few minutes; pro and 10 s clips take longer"). Only used to check
#: more often around the time a generation is due; never to give up early.
EXPECTED_SECONDS = {("std", "5"): 60.0, ("std", "10"): 120.0, ("pro", "5"): 120.0, ("pro", "10"): 240.0}

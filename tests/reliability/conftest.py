"""Settings of the reliability suite. Its fixtures (``emulator``, ``use_conn``) are the shared ones
of ``tests/conftest.py``; ``hostile`` (small hostile HTTP servers on loopback) is
``test_hostile_server.py``'s, shared here with the other hostile-server modules."""

from __future__ import annotations

import atexit
import shutil
import tempfile

from hypothesis.configuration import set_hypothesis_home_dir

from tests.reliability.test_hostile_server import hostile  # noqa: F401 - a fixture, shared

# Hypothesis keeps caches in ``./.hypothesis`` (the repository): keep them in a temporary directory.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="kirin-reliability-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)

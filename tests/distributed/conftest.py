"""``backing_services`` (this directory) is made importable. A failing test's report gets the tail
of every server's log through the root conftest's ``cluster`` diagnostics."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

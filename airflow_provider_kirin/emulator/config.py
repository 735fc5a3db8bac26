"""Configuration and fixed tables of the Kirin emulator.

The emulator is an independent oracle for the provider: it re-states the vendor's limits here
instead of importing the client's models, so a mistake on one side shows up as a test failure.

Example::

    from airflow_provider_kirin.emulator import EmulatorConfig

    config = EmulatorConfig(pending_seconds=0.2, processing_seconds=0.5, path_prefix="/gateway")
    faster = config.replace(processing_seconds=0.1)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MODEL_ID = "kirin_v2_5_turbo_t2v"
"""The only model the emulator accepts."""

DEFAULT_API_KEY = "kirin-emulator-key"
"""Default bearer key on loopback. Deliberately does not look like a real secret (no long random
tail), and well known: an emulator bound beyond loopback never accepts it (``EmulatorServer``
generates a key instead, and the command line prints it)."""

LOOPBACK_NAMES = ("localhost",)
"""Host names that always mean this machine (besides ``*.localhost`` and loopback IPs)."""

PROMPT_MAX_CHARS = 2500
DURATIONS = ("5", "10")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
MODES = ("std", "pro")

SAMPLE_VIDEOS: dict[str, str] = {
    "16:9": "media/sample.mp4",
    "9:16": "media/sample-9x16.mp4",
    "1:1": "media/sample-1x1.mp4",
}
"""The bundled clip served for each aspect ratio (``scripts/make_sample_video.py``)."""

VIDEO_SIZES: dict[str, str] = {"16:9": "320x180", "9:16": "180x320", "1:1": "240x240"}
"""``output[].content[].size`` for each aspect ratio: the real frame size of the clip served for it
(a test checks them against the files)."""

COSTS: dict[tuple[str, str], str] = {
    ("std", "5"): "0.35",
    ("std", "10"): "0.70",
    ("pro", "5"): "0.60",
    ("pro", "10"): "1.20",
}
"""``usage.cost`` (USD, decimal string) for each ``(mode, duration)``."""

ERROR_CODES: dict[str, str] = {
    "002011095": "Internal generation error",
    "002011096": "Result parsing error",
    "002011097": "HTTP error response",
    "002011098": "Status check error",
    "002011099": "Task creation error",
}
"""The vendor's five task error codes and their meaning."""

DEFAULT_FAIL_CODE = "002011095"
CONTROL_PREFIX = "/_emulator"
"""The control plane lives here, never under ``path_prefix``; it needs the API key (only
``/_emulator/health`` does not), see ``emulator/guard.py``."""


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a name or IP literal, brackets allowed) is this machine: ``localhost``,
    ``*.localhost`` or a loopback address. Names are never resolved."""
    import ipaddress

    name = (host or "").strip().strip("[]").lower().rstrip(".")
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def normalize_prefix(prefix: str) -> str:
    """Return ``prefix`` as ``""`` or ``"/a/b"`` (leading slash, no trailing slash)."""
    prefix = prefix.strip().strip("/")
    return f"/{prefix}" if prefix else ""


@dataclass(frozen=True)
class EmulatorConfig:
    """Settings of one emulator instance (immutable; use :meth:`replace` to derive a new one).

    Attributes:
        api_key: the bearer key every API request must carry.
        pending_seconds: wall time a new task reports ``pending``.
        processing_seconds: wall time it then reports ``processing`` before ``completed``/``failed``.
            Timings are captured when a task is created; changing them affects later tasks only.
        path_prefix: prepended to every API and download path (e.g. ``"/gateway"`` serves
            ``/gateway/v1/videos/generations``). The control plane stays at ``/_emulator``.
        download_base_url: origin used in the video URLs of completed tasks, e.g.
            ``"http://localhost:{port}"`` (``{port}`` is replaced by the listening port). ``None``
            means the origin the client used to create the task (its ``Host`` header).
        callback_timeout: total timeout in seconds of one callback POST.
        create_status_code: HTTP status of a successful create (200, 201 or 202).
        reject_unknown_fields: answer 422 to create bodies with fields the vendor does not define.
        allowed_hosts: ``Host`` header names served besides loopback ones (``localhost``,
            ``127.0.0.1``, ``[::1]``); any other ``Host`` is answered 421 (DNS rebinding).
        callback_hosts: hosts callbacks may be POSTed to besides loopback ones; ``"*"`` for any.
            By default a callback to any other host (a link-local metadata address, a LAN
            service, the internet) is not sent, and logged as refused.

    Example::

        EmulatorConfig(api_key="test-key", pending_seconds=0.0, processing_seconds=0.3)
    """

    api_key: str = DEFAULT_API_KEY
    pending_seconds: float = 1.0
    processing_seconds: float = 4.0
    path_prefix: str = ""
    download_base_url: str | None = None
    callback_timeout: float = 2.0
    create_status_code: int = 200
    reject_unknown_fields: bool = True
    allowed_hosts: tuple[str, ...] = ()
    callback_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, str) or not self.api_key:
            raise ValueError("api_key: must be a non-empty string")
        for name in ("pending_seconds", "processing_seconds", "callback_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: must be a number >= 0")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.path_prefix, str):
            raise ValueError("path_prefix: must be a string")
        object.__setattr__(self, "path_prefix", normalize_prefix(self.path_prefix))
        if self.download_base_url is not None:
            if not isinstance(self.download_base_url, str) or not self.download_base_url.startswith(
                ("http://", "https://")
            ):
                raise ValueError("download_base_url: must be an http(s) URL or null")
            object.__setattr__(self, "download_base_url", self.download_base_url.rstrip("/"))
        if self.create_status_code not in (200, 201, 202):
            raise ValueError("create_status_code: must be 200, 201 or 202")
        if not isinstance(self.reject_unknown_fields, bool):
            raise ValueError("reject_unknown_fields: must be a boolean")
        for name in ("allowed_hosts", "callback_hosts"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"{name}: must be a list of host names")
            object.__setattr__(self, name, tuple(v.strip().strip("[]").lower() for v in value))

    def replace(self, **changes: Any) -> EmulatorConfig:
        """Return a copy with ``changes`` applied (validated; unknown names raise ``ValueError``)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown config field")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view, as served by ``GET /_emulator/config``: the key is never shown."""
        return {**dataclasses.asdict(self), "api_key": "***"}

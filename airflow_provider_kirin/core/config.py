"""How an Airflow connection of type ``kirin`` becomes the settings the hooks use.

The connection (UI, ``AIRFLOW_CONN_KIRIN_DEFAULT`` as URI or JSON, or a secrets backend):

- ``host``: the base URL, with scheme (``https://api.example.com``); without one, the ``schema``
  field names it (``http``/``https``) and ``https`` is assumed otherwise. ``port`` is added if set.
- ``password``: the API key.
- extras (all optional): ``create_path``, ``task_path`` (with ``{task_id}``), ``lookup_path``,
  ``timeout`` (read timeout, s), ``connect_timeout`` (s), ``request_timeout`` (s, one API request
  in all: connect + headers + body), ``download_timeout`` (s, one video download in all),
  ``skip_tls_verification`` (off by default; the legacy ``verify_ssl`` is still read),
  ``allowed_video_hosts`` (comma-separated), ``max_retries``,
  ``retry_max_wait`` (s, one backoff step at most), ``max_retry_after`` (s, cap on a server's
  ``Retry-After``), ``retry_total_seconds`` (s, all retries of one call at most),
  ``max_response_bytes`` (1 MiB; at most 8 MiB), ``max_videos`` (videos kept per task answer).

For example::

    export AIRFLOW_CONN_KIRIN_DEFAULT='{"conn_type": "kirin", "host": "https://api.example.com",
        "password": "<key>", "extra": {"timeout": 60}}'
"""

from __future__ import annotations

import difflib
import json
import logging
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_kirin.core.budget import PriceTable

from airflow_provider_kirin.core.defaults import DEFAULT_CONN_ID, MAX_VIDEOS

__all__ = [
    "CONN_TYPE",
    "DEFAULT_CONN_ID",
    "KirinConnectionConfig",
    "connection_form_fields",
    "connection_type_info",
]

#: The Airflow connection type this provider registers (``get_provider_info``, the hooks).
CONN_TYPE = "kirin"

log = logging.getLogger(__name__)

_FIELD_LABELS = {"base_url": "host (base URL)", "api_key": "password (API key)"}
#: Fields that come from the connection's standard fields, not from its extra.
_STANDARD = frozenset(_FIELD_LABELS)
_JSON_TYPES = {str: "string", float: "number", int: "integer", bool: "boolean"}
#: Fields read from a connection but not drawn in the form: ``verify_ssl``, whose switch was drawn
#: off although its default was on, so a form that looked untouched could save "False" (issue 18).
#: The form has ``skip_tls_verification`` instead, whose off position is the safe default.
_NOT_IN_FORM = frozenset({"legacy_verify_ssl"})


class KirinConnectionConfig(BaseModel):
    """Everything the transports need to talk to Kirin, read once from the Airflow connection.

    The one declaration of the connection's settings: every field but ``base_url`` and ``api_key``
    is an optional extra, and the connection form in the UI is built from these fields (their
    ``title``, ``description`` and default, see :func:`connection_form_fields`). The API key is a
    :class:`~pydantic.SecretStr`, so ``repr()`` and ``model_dump()`` never show it.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    base_url: str
    api_key: SecretStr
    create_path: str = Field(
        default="/v1/videos/generations", title="Create path", description="POST path that creates a task."
    )
    task_path: str = Field(
        default="/v1/tasks/{task_id}",
        title="Task path",
        description="GET path of one task; must contain {task_id}.",
    )
    lookup_path: str = Field(
        default="/v1/tasks",
        title="Lookup path",
        description="GET path that finds a task by ?external_task_id=.",
    )
    timeout: float = Field(
        default=30.0,
        gt=0,
        title="Read timeout (s)",
        description="Longest wait for each read of a response, and all a status check may take.",
    )
    connect_timeout: float = Field(default=10.0, gt=0, title="Connect timeout (s)")
    request_timeout: float = Field(
        default=60.0,
        gt=0,
        title="Request deadline (s)",
        description="One API request in all (connect + headers + body): a server dripping bytes "
        "cannot hold it longer.",
    )
    download_timeout: float = Field(
        default=900.0, gt=0, title="Download deadline (s)", description="One video download in all."
    )
    skip_tls_verification: bool | None = Field(
        default=None,
        title="Skip TLS verification",
        description="On: TLS certificates are NOT checked (only for a local test gateway; a warning "
        "is logged). Off: they are checked.",
    )
    legacy_verify_ssl: bool | None = Field(
        default=None,
        validation_alias="verify_ssl",
        title="Verify TLS certificates (legacy)",
        description="Read only when skip_tls_verification is not set: false turns verification off.",
    )
    allowed_video_hosts: str = Field(
        default="",
        title="Allowed video hosts",
        description="Comma-separated hosts that videos may come from although they are on a loopback, "
        "private or link-local address while the API is not (or over http:// under an https:// API).",
    )
    max_retries: int = Field(
        default=5, ge=0, le=20, title="Retries per request", description="For 429, 5xx, timeouts, resets."
    )
    retry_max_wait: float = Field(default=30.0, gt=0, title="Longest backoff step (s)")
    max_retry_after: float = Field(
        default=60.0, ge=0, title="Retry-After cap (s)", description="Cap on a server's Retry-After."
    )
    retry_total_seconds: float = Field(
        default=180.0, gt=0, title="Retry budget (s)", description="All retries of one request at most."
    )
    max_response_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=8 * 1024 * 1024,
        title="Largest API response (bytes)",
        description="Larger responses are refused as unreadable (a task envelope is a few KB).",
    )
    max_videos: int = Field(
        default=MAX_VIDEOS,
        ge=1,
        le=16,
        title="Most videos per task",
        description="A task answer naming more videos is cut to the first ones, with a warning.",
    )
    prices: str = Field(
        default="",
        title="Prices (USD per generation)",
        description='JSON, e.g. {"std/5": "0.35", "std/10": "0.70", "pro/5": "1.20", "pro/10": "2.40"}: '
        "what max_cost and dry runs estimate with. A kind without a price is learned from its first "
        "generation.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the base URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("create_path", "lookup_path")
    @classmethod
    def _path(cls, value: str) -> str:
        return value if value.startswith("/") else f"/{value}"

    @field_validator("task_path")
    @classmethod
    def _task_path(cls, value: str) -> str:
        if "{task_id}" not in value:
            raise ValueError("task_path must contain '{task_id}'")
        return value if value.startswith("/") else f"/{value}"

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: object) -> str:
        from airflow_provider_kirin.core.budget import PriceTable

        text = json.dumps(value) if isinstance(value, dict) else ("" if value is None else str(value))
        PriceTable.parse(text)  # refuse a bad table when the connection is read, naming the entry
        return text

    @property
    def price_table(self) -> PriceTable:
        """The ``prices`` extra, parsed (``core.budget.PriceTable``)."""
        from airflow_provider_kirin.core.budget import PriceTable

        return PriceTable.parse(self.prices)

    @property
    def verify_ssl(self) -> bool:
        """Whether TLS certificates are verified: unless ``skip_tls_verification`` is on. When that
        extra is not set at all, the legacy ``verify_ssl`` extra decides (``false``, ``"False"``
        or ``"false"``: off, as its old form switch showed); by default they are verified."""
        if self.skip_tls_verification is not None:
            return not self.skip_tls_verification
        return self.legacy_verify_ssl is not False

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of the API; the only origin the API key is ever sent to."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @classmethod
    def from_connection(cls, conn: Connection, extra: dict[str, Any] | None = None) -> KirinConnectionConfig:
        """Read a ``kirin`` connection; raise :class:`KirinConnectionError` naming a bad field.

        ``extra``: the connection's extra, when the caller already read it (async code reads it
        without blocking the loop); by default ``conn.extra_dejson``. An extra this provider does
        not read (a misspelling, usually) is named in a warning, never dropped silently.
        """
        from airflow_provider_kirin.core.redaction import register_secret
        from airflow_provider_kirin.exceptions import KirinConnectionError

        if not conn.host:
            raise KirinConnectionError(
                f"Connection {conn.conn_id!r} has no host; set it to the Kirin base URL "
                "(for the bundled emulator: http://127.0.0.1:8765)."
            )
        if not conn.password:
            raise KirinConnectionError(
                f"Connection {conn.conn_id!r} has no API key; put the key in its password field."
            )
        register_secret(conn.password)
        host = conn.host.strip()
        if "://" in host:
            scheme, rest = host.split("://", 1)
            host = f"{scheme.lower()}://{rest}"
        else:
            scheme = conn.schema if conn.schema in ("http", "https") else "https"
            host = f"{scheme}://{host}"
        if conn.port and host.count(":") < 2:
            host = f"{host}:{conn.port}"
        if extra is None:
            extra = dict(conn.extra_dejson or {})
        # A field left empty in the form means "the provider's default", however the UI stores it.
        extra = {name: value for name, value in extra.items() if value is not None and value != ""}
        _warn_unknown_extras(conn.conn_id, extra)
        data = {"base_url": host, "api_key": conn.password, **extra}
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            # Name the field and the rule, never the input: the input may be the API key.
            problems = "; ".join(
                f"{_FIELD_LABELS.get(str(e['loc'][0]), 'extra ' + str(e['loc'][0]))}: {e['msg']}"
                for e in err.errors(include_url=False)
            )
            raise KirinConnectionError(f"Connection {conn.conn_id!r} is invalid: {problems}") from None


def _extra_name(name: str, info: FieldInfo) -> str:
    """The extra's name in the connection (a legacy field is read under its old name)."""
    return info.validation_alias if isinstance(info.validation_alias, str) else name


def _warn_unknown_extras(conn_id: str, extra: dict[str, Any]) -> None:
    known = [
        _extra_name(name, info)
        for name, info in KirinConnectionConfig.model_fields.items()
        if name not in _STANDARD
    ]
    for name in sorted(set(extra) - set(known)):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        log.warning(
            "Connection %r has an extra %r that the Kirin provider does not read%s; it is ignored. "
            "Known extras: %s.",
            conn_id,
            name,
            hint,
            ", ".join(known),
        )


def _show(default: object) -> str:
    if default == "":
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def connection_form_fields() -> dict[str, Any]:
    """The connection form's extra fields (provider info ``conn-fields``), one per extra the hooks
    read, from :class:`KirinConnectionConfig` itself.

    No field carries a default value: a form pre-filled with today's defaults would store them in
    every connection saved from the UI, which would then never see a later release's defaults. The
    default is shown in the description instead, and an empty field means "the provider's default".
    """
    fields: dict[str, Any] = {}
    for name, info in KirinConnectionConfig.model_fields.items():
        if name in _STANDARD or name in _NOT_IN_FORM:
            continue
        default = info.default
        kind = _json_type(info)
        # A switch with no default (skip_tls_verification) is off when empty: the safe position.
        shown = _show(default) if default is not None else "off"
        description = " ".join(filter(None, [info.description, f"Empty: the default, {shown}."]))
        fields[name] = {
            "label": info.title or name,
            "description": description,
            "schema": {"type": [kind, "null"]},
        }
    return fields


def _json_type(info: FieldInfo) -> str:
    members = [arg for arg in get_args(info.annotation) if arg is not type(None)] or [info.annotation]
    return _JSON_TYPES[members[0]]


def connection_type_info() -> dict[str, Any]:
    """The provider info's ``connection-types`` entry for ``kirin``: the connection form, declared
    once (Airflow 3.2+ reads it from the provider info; on 3.0/3.1 the hook's
    ``get_ui_field_behaviour``/``get_connection_form_widgets`` derive it, see ``_compat.py``)."""
    return {
        "connection-type": CONN_TYPE,
        "hook-class-name": "airflow_provider_kirin.hooks.kirin.KirinHook",
        "hook-name": "Kirin",
        "conn-fields": connection_form_fields(),
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port", "login"],
            "relabeling": {"host": "Base URL", "password": "API key"},
            "placeholders": {
                "host": "https://api.example.com (emulator: http://127.0.0.1:8765)",
                "password": "your Kirin API key",
            },
        },
    }

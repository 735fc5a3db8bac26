"""How an Airflow connection of type ``kirin`` becomes the settings the hooks use.

The connection (UI, ``AIRFLOW_CONN_KIRIN_DEFAULT`` as URI or JSON, or a secrets backend):

- ``host``: the base URL, with scheme (``https://api.example.com``); without one, the ``schema``
  field names it (``http``/``https``) and ``https`` is assumed otherwise. ``port`` is added if set.
- ``password``: the API key.
- extras (all optional): ``create_path``, ``task_path`` (with ``{task_id}``), ``lookup_path``,
  ``timeout`` (read timeout, s), ``connect_timeout`` (s), ``request_timeout`` (s, one API request
  in all: connect + headers + body), ``download_timeout`` (s, one video download in all),
  ``verify_ssl``, ``max_retries``,
  ``retry_max_wait`` (s, one backoff step at most), ``max_retry_after`` (s, cap on a server's
  ``Retry-After``), ``retry_total_seconds`` (s, all retries of one call at most),
  ``max_response_bytes``.

For example::

    export AIRFLOW_CONN_KIRIN_DEFAULT='{"conn_type": "kirin", "host": "https://api.example.com",
        "password": "<key>", "extra": {"timeout": 60}}'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from airflow_provider_kirin.exceptions import KirinConnectionError, register_secret

if TYPE_CHECKING:
    from airflow.sdk import Connection

from airflow_provider_kirin.defaults import CONN_TYPE, DEFAULT_CONN_ID

__all__ = ["CONN_TYPE", "DEFAULT_CONN_ID", "KirinConnectionConfig"]


_FIELD_LABELS = {"base_url": "host (base URL)", "api_key": "password (API key)"}


class KirinConnectionConfig(BaseModel):
    """Everything the transports need to talk to Kirin, read once from the Airflow connection.

    The API key is a :class:`~pydantic.SecretStr`, so ``repr()`` and ``model_dump()`` never show it.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    base_url: str
    api_key: SecretStr
    create_path: str = "/v1/videos/generations"
    task_path: str = "/v1/tasks/{task_id}"
    lookup_path: str = "/v1/tasks"
    timeout: float = Field(default=30.0, gt=0, description="read timeout in seconds")
    connect_timeout: float = Field(default=10.0, gt=0)
    #: One API request in all (connect + headers + body): a server dripping bytes cannot hold it longer.
    request_timeout: float = Field(default=60.0, gt=0)
    #: One video download in all; a generated clip is tens of MB.
    download_timeout: float = Field(default=900.0, gt=0)
    verify_ssl: bool = True
    max_retries: int = Field(default=5, ge=0, le=20)
    retry_max_wait: float = Field(default=30.0, gt=0)
    max_retry_after: float = Field(default=60.0, ge=0)
    retry_total_seconds: float = Field(default=180.0, gt=0)
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

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
        without blocking the loop); by default ``conn.extra_dejson``.
        """
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

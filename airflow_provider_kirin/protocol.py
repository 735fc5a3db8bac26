"""The one place that knows Kirin's wire format: which request each operation sends, and what each
response (or failure to get one) means. It does no I/O; the sync (``requests``) and async
(``aiohttp``) transports in ``hooks/kirin.py`` send what :class:`KirinProtocol` builds and hand
back what they receive.

Every outcome is one of: a :class:`~airflow_provider_kirin.models.KirinTask`; ``None`` (a lookup
that found nothing); a :class:`~airflow_provider_kirin.core.retry.TransientKirinError` (worth another
try); or a typed :class:`~airflow_provider_kirin.exceptions.KirinError` (final).

Whether a failed request may have reached the server (the fact that decides whether retrying a
create could pay twice) is decided here too, by the failure's exception type
(:func:`reached_server`), for both transports' libraries.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal
from urllib.parse import quote

from pydantic import ValidationError

from airflow_provider_kirin.core.config import KirinConnectionConfig
from airflow_provider_kirin.core.redaction import clean_text
from airflow_provider_kirin.core.retry import TransientKirinError, parse_retry_after
from airflow_provider_kirin.exceptions import (
    KirinBadResponseError,
    KirinError,
    KirinUnreachableError,
    KirinValidationError,
    exception_class_for,
)
from airflow_provider_kirin.models import (
    TASK_ID_ALLOWED,
    TERMINAL_STATUSES,
    KirinTask,
    KirinVideoRequest,
    clean_status,
    plain_task_id,
)

#: ``check`` is a status check while waiting: the same request as ``get``, read only as far as
#: needed (an unfinished task's id and status; a finished one in full).
Operation = Literal["create", "get", "check", "lookup"]

#: How much of a bad response body an error message quotes.
SNIPPET_CHARS = 300


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One request, ready for a transport to send. Holds no secret: headers come from the protocol."""

    operation: Operation
    method: Literal["GET", "POST"]
    url: str
    params: dict[str, str] | None = None
    body: dict[str, Any] | None = None
    task_id: str | None = None
    external_task_id: str | None = None
    label: str = field(default="", compare=False)

    @property
    def is_create(self) -> bool:
        return self.operation == "create"


def snippet(body: bytes | str, limit: int = SNIPPET_CHARS) -> str:
    """A short, secret-free quote of a response body for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return clean_text(" ".join(text.split()), limit)  # redacted before it is cut


class KirinProtocol:
    """Builds :class:`ApiCall` objects from a :class:`KirinConnectionConfig` and interprets responses."""

    def __init__(self, config: KirinConnectionConfig) -> None:
        self.config = config
        self._headers: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"KirinProtocol(base_url={self.config.base_url!r})"

    # -- requests ------------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        """Headers of every API request (one dict, built once: do not change it). The only place
        the API key is read."""
        if self._headers is None:
            self._headers = {
                "Authorization": f"Bearer {self.config.api_key.get_secret_value()}",
                "Accept": "application/json",
                "User-Agent": _user_agent(),
            }
        return self._headers

    def create(self, request: KirinVideoRequest) -> ApiCall:
        return ApiCall(
            operation="create",
            method="POST",
            url=self.config.base_url + self.config.create_path,
            body=request.to_payload(),
            external_task_id=request.external_task_id,
            label=f"create (external_task_id={request.external_task_id})",
        )

    def get(self, task_id: str, operation: Literal["get", "check"] = "get") -> ApiCall:
        task_id = _require_id("task_id", task_id)
        if plain_task_id(task_id) is None:  # never ``.``/``..`` or a path in the URL
            raise KirinValidationError(
                f"task_id={clean_text(task_id, 80)!r} is invalid; allowed: {TASK_ID_ALLOWED}"
            )
        path = self.config.task_path.replace("{task_id}", quote(task_id, safe=""))
        url = self.config.base_url + path
        return ApiCall(operation, "GET", url, task_id=task_id, label=f"{operation} {task_id}")

    def check(self, task_id: str) -> ApiCall:
        """A status check while waiting (see :data:`Operation`)."""
        return self.get(task_id, "check")

    def lookup(self, external_task_id: str) -> ApiCall:
        external_task_id = _require_id("external_task_id", external_task_id)
        return ApiCall(
            "lookup",
            "GET",
            self.config.base_url + self.config.lookup_path,
            params={"external_task_id": external_task_id},
            external_task_id=external_task_id,
            label=f"lookup external_task_id={external_task_id}",
        )

    # -- responses -----------------------------------------------------------------------------
    def interpret(
        self, call: ApiCall, status: int, headers: Mapping[str, str], body: bytes, *, truncated: bool = False
    ) -> KirinTask | None:
        """Turn a response into a task, ``None`` (lookup: no such id), or raise what it means."""
        if 200 <= status < 300:
            try:
                if truncated:
                    limit = self.config.max_response_bytes
                    reason = f"the body is larger than max_response_bytes={limit}"
                    raise TransientKirinError(
                        self._error(KirinBadResponseError, call, reason, http_status=status)
                    )
                task = self.parse_task(call, body, http_status=status)
            except TransientKirinError as err:
                # A create answered 2xx: the task exists even though its envelope is unreadable.
                if call.is_create:
                    err.final.may_have_created = True
                raise self._retry(call, err.final, may_have_created=call.is_create) from None
            if call.is_create and task.external_task_id is None and call.external_task_id:
                # The contract says the envelope echoes it; a service that leaves it out still
                # created the task under the id we sent, and the logs and XComs should say so.
                task = task.model_copy(update={"external_task_id": call.external_task_id})
            return task
        if status == 404 and call.operation == "lookup":
            return None
        code, message = _error_body(body)
        error_cls = exception_class_for(code, status)
        reason = message or (snippet(body) if body else "no body")
        error = self._error(error_cls, call, f"HTTP {status}: {reason}", code=code, http_status=status)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(headers.get("Retry-After"), cap=self.config.max_retry_after)
            may_have_created = call.is_create and status >= 500
            if call.is_create:
                error.may_have_created = may_have_created
            raise self._retry(call, error, retry_after=retry_after, may_have_created=may_have_created)
        raise error

    def one_task(self, call: ApiCall, task: KirinTask | None) -> KirinTask:
        """The task a create or get answered with. Only a lookup answers "no such id" (``None``);
        a ``None`` here means a response we cannot use, not a broken invariant."""
        if task is None:
            raise self._error(KirinBadResponseError, call, "the answer holds no task")
        return task

    def parse_task(
        self, call: ApiCall | None, body: bytes | str, *, http_status: int | None = None
    ) -> KirinTask:
        """Parse a task envelope; an unparseable one, or one about another task than the one asked
        for, is transient (the next try may read a good one).

        The body is decoded with ``json.loads`` and cut down to size before pydantic sees it
        (``models.bounded_envelope``): a hostile body costs its decode and no more. A status check
        (``check``) of an unfinished task reads only its id and status."""
        try:
            data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
        except (ValueError, RecursionError):  # also UnicodeDecodeError; RecursionError: absurdly nested
            data = None
        if not isinstance(data, dict):
            reason = f"the response is not a JSON object; body: {snippet(body)}"
            raise TransientKirinError(
                self._error(KirinBadResponseError, call, reason, http_status=http_status)
            )
        asked = call.task_id if call is not None else None
        if call is not None and call.operation == "check" and asked is not None:
            status = data.get("status")
            answered = data.get("task_id", data.get("id"))
            if isinstance(status, str) and str(answered) == asked:
                status = clean_status(status)
                if status not in TERMINAL_STATUSES:
                    return KirinTask.pending(asked, status)
        try:
            task = KirinTask.model_validate(data, context={"max_videos": self.config.max_videos})
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()[:3]
            )
            reason = f"the response is not a task envelope ({problems}); body: {snippet(body)}"
            raise TransientKirinError(
                self._error(KirinBadResponseError, call, reason, http_status=http_status)
            ) from None
        if asked is not None and task.task_id != asked:
            reason = f"the answer is about task {task.task_id!r}, not the {asked!r} asked for"
            raise TransientKirinError(
                self._error(KirinBadResponseError, call, reason, http_status=http_status)
            )
        return task

    def transport_failure(self, call: ApiCall, error: BaseException) -> Exception:
        """What a connection error, timeout or reset means: something to retry, or to raise now.

        A create that may have reached the server (:func:`reached_server`) is retried only when
        its ``external_task_id`` lets the next try look the task up first; without one it is not
        retried at all.
        """
        reached = reached_server(error)
        what = "may have reached Kirin" if reached else "did not reach Kirin"
        may_have_created = call.is_create and reached
        final = self._error(
            KirinUnreachableError,
            call,
            f"the request {what}: {type(error).__name__}: {error}",
            may_have_created=may_have_created if call.is_create else None,
        )
        return self._retry(call, final, may_have_created=may_have_created)

    def _retry(
        self,
        call: ApiCall,
        error: KirinError,
        *,
        retry_after: float | None = None,
        may_have_created: bool = False,
    ) -> Exception:
        """``error`` as worth another try, unless retrying could pay twice: a create that may have
        made a task is retried only when its ``external_task_id`` lets the next try look it up."""
        if may_have_created and not call.external_task_id:
            return type(error)(
                f"{error.message}; it may have created a task and has no external_task_id to look it up "
                "by, so it was not retried, to avoid paying twice: check the Kirin account before retrying",
                code=error.code,
                task_id=error.task_id,
                http_status=error.http_status,
                may_have_created=True,
            )
        error.retry_after = retry_after  # kept on the typed error: the task's retry honours it too
        return TransientKirinError(error, retry_after=retry_after, may_have_created=may_have_created)

    @staticmethod
    def _error(
        cls: type[KirinError],
        call: ApiCall | None,
        reason: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        may_have_created: bool | None = None,
    ) -> KirinError:
        label = f"Kirin {call.label}" if call is not None else "Kirin response"
        task_id = call.task_id if call is not None else None
        return cls(
            f"{label} failed: {reason}",
            code=code,
            task_id=task_id,
            http_status=http_status,
            may_have_created=may_have_created,
        )


@cache
def _never_connected() -> tuple[type[BaseException], ...]:
    """Exception types that mean the connection itself was never made, so no request was sent:
    refused, host not found, a connect timeout (both transports' libraries, and the OS's own)."""
    import aiohttp
    import requests
    import urllib3.exceptions

    types: list[type[BaseException]] = [
        ConnectionRefusedError,
        socket.gaierror,
        urllib3.exceptions.NewConnectionError,  # also NameResolutionError (urllib3 2)
        urllib3.exceptions.ConnectTimeoutError,
        requests.ConnectTimeout,
        aiohttp.ClientConnectorError,  # refused, DNS, TLS handshake: before a request is sent
    ]
    if (connect_timeout := getattr(aiohttp, "ConnectionTimeoutError", None)) is not None:  # aiohttp 3.10+
        types.append(connect_timeout)
    return tuple(types)


def _chain(error: BaseException) -> Iterator[object]:
    """``error`` and what it explicitly wraps: its cause, urllib3's ``reason``, a wrapped first
    argument (requests' ``ConnectionError(MaxRetryError(...))``). Not ``__context__``: an error
    merely raised while another was handled says nothing about this request."""
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo and len(seen) < 20:  # bounded: a chain is a few links
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseException):
            todo += [item.__cause__, getattr(item, "reason", None)]
            todo += [arg for arg in item.args[:1] if isinstance(arg, BaseException)]


def reached_server(error: BaseException) -> bool:
    """Whether a failed request may have reached the server: ``False`` only when the failure (or
    anything it wraps) is one of the types that mean no connection was made. Anything else — a
    reset, a read timeout, a total deadline — may have delivered the request."""
    never = _never_connected()
    return not any(isinstance(item, never) for item in _chain(error))


#: Markers of a transport error's text, and what they mean in plain words (first match wins).
_PLAIN_REASONS = (
    (("Connection refused", "ConnectionRefusedError", "Errno 111"), "connection refused"),
    (
        ("Name or service not known", "NameResolution", "nodename nor servname", "getaddrinfo"),
        "host not found",
    ),
    (("DeadlineExceeded", "total deadline"), "no complete answer within the request deadline"),
    (("ConnectTimeout", "timed out", "TimeoutError", "ReadTimeout"), "timed out"),
    (
        ("reset by peer", "Connection aborted", "RemoteDisconnected", "ConnectionResetError"),
        "connection reset",
    ),
    (("SSLError", "CERTIFICATE_VERIFY_FAILED", "certificate"), "TLS error (certificate?)"),
)


def plain_reason(detail: str) -> str:
    """What a transport error's text means, in a few plain words (for people, e.g. the connection
    test in the UI); the full detail belongs in the log."""
    for markers, words in _PLAIN_REASONS:
        if any(marker in detail for marker in markers):
            return words
    return "the request failed"


def _require_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KirinValidationError(f"{name}={value!r} is invalid; allowed: a non-empty string")
    return value.strip()


def _error_body(body: bytes) -> tuple[str | None, str | None]:
    """``(code, message)`` of an error body ``{"error": {"code", "error_message"}}``, if it has one."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        return None, None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = error.get("error_message") or error.get("message")
        code = error.get("code")
        code = clean_text(code, 64) if isinstance(code, str) else code
        return code, snippet(str(message)) if message else None
    if isinstance(error, str):
        return None, snippet(error)
    return None, None


def _user_agent() -> str:
    from airflow_provider_kirin import __version__

    return f"airflow-provider-kirin/{__version__}"

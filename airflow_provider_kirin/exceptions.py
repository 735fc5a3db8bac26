"""Typed errors of the Kirin provider, and the one map from API error codes and HTTP statuses to them.

Catch what you care about in a DAG::

    from airflow_provider_kirin.exceptions import KirinRateLimitError, KirinTaskFailedError

    try:
        hook.wait_for_task(task_id, poll_interval=10, timeout=1800)
    except KirinTaskFailedError as err:  # the generation failed: exactly that, nothing else
        print(err.code, err.task_id, err.message)
    except KirinServiceError as err:  # we could not talk to Kirin (network, 5xx, unreadable answers)
        print(err.may_have_created)

Three families a DAG author can tell apart, and the specific answers beside them::

    KirinError (AirflowException)
    ├── KirinTaskFailedError      the generation failed: Kirin reported ``failed`` (unknown or
    │   │                         missing code), or answered with one of the five seed codes
    │   ├── KirinGenerationError     002011095
    │   ├── KirinResultParsingError  002011096 (also: completed, but no video to keep)
    │   ├── KirinHTTPResponseError   002011097
    │   ├── KirinStatusCheckError    002011098
    │   └── KirinTaskCreationError   002011099
    ├── KirinServiceError         we could not talk to Kirin (``may_have_created`` says whether a
    │   │                         create may have reached it)
    │   ├── KirinUnreachableError    connection refused or reset, timeouts, deadlines
    │   └── KirinBadResponseError    5xx or an unexpected status without a code, unreadable bodies
    ├── KirinStorageError         keeping the video failed (download, checks, storage)
    ├── KirinValidationError      bad input, raised before any request is sent
    │   ├── KirinConnectionError  the Airflow connection is incomplete or invalid
    │   └── KirinRequestRejectedError  400/422: Kirin refused the request as invalid
    ├── KirinAuthError            401/403
    ├── KirinNotFoundError        404
    ├── KirinConflictError        409, external_task_id already used (and no lookup finds it)
    ├── KirinRateLimitError       429 after retries
    ├── KirinBudgetExceededError  a spend ceiling (max_cost) would be passed; nothing was created
    └── KirinTaskTimeoutError     waiting passed its deadline (also an AirflowSensorTimeout)

Whether retrying the Airflow task can help is each class's own ``retryable`` (a class attribute):
``False`` for a request Kirin rejects, a bad or unauthorised key, bad input and a spend ceiling
reached, which fail the task at once whatever its ``retries`` (``retry_policy.KirinRetryPolicy``,
docs/reliability.md). A new error class opts in by declaring ``retryable: ClassVar[bool] = False``.

No message ever holds the API key or a control character: every message is redacted and its control
characters escaped before it is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from airflow_provider_kirin._compat import AirflowException, AirflowSensorTimeout
from airflow_provider_kirin.core.redaction import clean_text, escape_controls, redact


def normalize_code(code: object) -> str | None:
    """Return an error code in its canonical string form.

    The seed's codes are nine-digit strings with leading zeros; a server that sends them as JSON
    numbers loses the zeros (``2011095``), so all-digit codes are left-padded back to nine digits.
    """
    if code is None or isinstance(code, bool):
        return None
    text = str(code).strip()
    if not text:
        return None
    if text.isdigit() and len(text) < 9:
        return text.zfill(9)
    return text


class KirinError(AirflowException):
    """Base class of every error the Kirin provider raises.

    :param message: What happened, in a sentence.
    :param code: The API's error code, normalised to its nine-digit string form.
    :param task_id: The Kirin task id the error belongs to, when known.
    :param http_status: The HTTP status of the response that caused the error, when known.
    :param may_have_created: For a create that failed: whether it may have reached Kirin and made
        a task (``None`` when it does not apply).
    """

    #: What a DAG author should do about this error; appended to the message.
    hint: ClassVar[str] = "See the task log for details."
    #: The API error code this class stands for (the five seed codes), if any.
    seed_code: ClassVar[str | None] = None
    #: The HTTP statuses this class stands for when the body names no seed code.
    http_statuses: ClassVar[tuple[int, ...]] = ()
    #: Whether another try of the Airflow task can fix this error. ``False`` fails the task at once,
    #: whatever its ``retries`` (``retry_policy.KirinRetryPolicy``; ``AirflowFailException`` before
    #: Airflow 3.3). A subclass opts in by declaring it.
    retryable: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        code: object = None,
        task_id: str | None = None,
        http_status: int | None = None,
        may_have_created: bool | None = None,
    ) -> None:
        self.message = escape_controls(redact(str(message)))
        self.may_have_created = may_have_created
        normalized = normalize_code(code)
        # A hostile server may echo the key in a code, or send megabytes of one.
        self.code = clean_text(normalized, 64) if normalized else None
        self.task_id = clean_text(task_id, 256) if task_id is not None else None
        self.http_status = http_status
        #: The server's ``Retry-After`` in seconds (capped), when the last answer carried one.
        self.retry_after: float | None = None
        super().__init__(self._render())

    def _render(self) -> str:
        where = [
            f"{name}={value}"
            for name, value in (("task_id", self.task_id), ("code", self.code), ("http", self.http_status))
            if value is not None
        ]
        context = f" [{', '.join(where)}]" if where else ""
        stop = "" if self.message.endswith((".", "!", "?")) or context else "."
        return f"{self.message}{stop}{context} {self.hint}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, used in trigger events; :func:`error_from_event` reverses it."""
        return {
            "error_type": type(self).__name__,
            "message": self.message,
            "code": self.code,
            "task_id": self.task_id,
            "http_status": self.http_status,
            "may_have_created": self.may_have_created,
            "retry_after": self.retry_after,
        }


def _rebuild(cls: type[KirinError], data: dict[str, Any]) -> KirinError:
    error = cls(
        data["message"],
        code=data["code"],
        task_id=data["task_id"],
        http_status=data["http_status"],
        may_have_created=data.get("may_have_created"),
    )
    error.retry_after = _seconds(data.get("retry_after"))
    return error


def _seconds(value: object) -> float | None:
    """A ``Retry-After`` read back from an event: a finite number >= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < float("inf") else None


class KirinValidationError(KirinError, ValueError):
    """A request field is invalid. Raised before any request is sent, so it costs nothing."""

    retryable = False
    hint = "Fix the value in the DAG or its template; nothing was sent to Kirin."


class KirinConnectionError(KirinValidationError):
    """The Airflow connection of type ``kirin`` is missing a field or has a bad one."""

    hint = "Fix the Airflow connection (host = base URL, password = API key, extras); nothing was sent."


class KirinRequestRejectedError(KirinValidationError):
    """Kirin refused the request as invalid (HTTP 400 or 422) without a more specific code."""

    http_statuses = (400, 422)
    hint = "Kirin refused a field of the request; check the values against docs/api-contract.md."


class KirinServiceError(KirinError):
    """We could not talk to Kirin: the parent of transport failures and unreadable answers.

    Not a failed generation: the generation may be fine (or may not exist yet, see
    ``may_have_created``); retrying the Airflow task is safe, it reuses what exists.
    """

    hint = "Could not talk to Kirin; check the network and the connection's base URL, then retry."


class KirinUnreachableError(KirinServiceError):
    """The request did not complete: connection refused or reset, a timeout, or its total deadline."""

    hint = "Kirin could not be reached in time; check the network and the base URL, then retry."


class KirinBadResponseError(KirinServiceError):
    """Kirin answered, but not usefully: a 5xx or unexpected status without an error code, or a
    body that could not be read as the API's JSON, after every retry."""

    hint = "Kirin answered with an error or an unreadable body; retry later."


class KirinStorageError(KirinError):
    """Keeping the video failed: the download, its checks (type, size, length) or the storage."""

    hint = (
        "The generation itself is done and paid for: retrying the task downloads it again without "
        "a new generation (signed URLs expire, so do it soon)."
    )


class KirinAuthError(KirinError):
    """The API refused the key (HTTP 401 or 403)."""

    http_statuses = (401, 403)
    retryable = False
    hint = "Check the API key in the connection's password field."


class KirinNotFoundError(KirinError):
    """No task has that id (HTTP 404)."""

    http_statuses = (404,)
    hint = "Check the task id, and that the connection points at the account that created it."


class KirinConflictError(KirinError):
    """The ``external_task_id`` is already used by another task of this account (HTTP 409)."""

    http_statuses = (409,)
    hint = "Use a new external_task_id, or look the existing task up with get_task_by_external_id()."


class KirinRateLimitError(KirinError):
    """The API kept answering 429 after every retry."""

    http_statuses = (429,)
    hint = "Lower concurrency (an Airflow pool with include_deferred=True) or raise the account's limits."


class KirinBudgetExceededError(KirinError):
    """A spend ceiling (``max_cost``) would be passed: nothing more was created. Retrying with the
    same ceiling changes nothing, so the task fails at once."""

    hint = "Raise max_cost (or set the connection's prices), or ask for fewer or cheaper generations."
    #: A retry cannot fix it (read by the retry policy).
    retryable: ClassVar[bool] = False


class KirinTaskTimeoutError(KirinError, AirflowSensorTimeout):
    """The task did not finish before the deadline. It is also an ``AirflowSensorTimeout``,
    so a sensor with ``soft_fail=True`` is skipped rather than failed."""

    hint = (
        "The generation may still finish and will still be billed; raise the timeout or "
        "check on the task id later."
    )


class KirinTaskFailedError(KirinError):
    """The generation failed; the parent of every seed error code's class.

    Raised itself when a task ended ``failed`` with a code this provider does not know.
    """

    hint = "The generation failed on Kirin's side; retrying the Airflow task submits a new generation."


class KirinGenerationError(KirinTaskFailedError):
    """002011095: internal generation error."""

    seed_code = "002011095"
    hint = "An internal generation error; a retry usually succeeds, or rephrase the prompt."


class KirinResultParsingError(KirinTaskFailedError):
    """002011096: result parsing error; also a task reported completed with no video to keep."""

    seed_code = "002011096"
    hint = "Kirin could not produce a usable result; retry, and report it to Kirin if it persists."


class KirinHTTPResponseError(KirinTaskFailedError):
    """002011097: HTTP error response (the code, as Kirin sent it)."""

    seed_code = "002011097"
    hint = "Kirin reported an HTTP error response; retry later."


class KirinStatusCheckError(KirinTaskFailedError):
    """002011098: status check error (the code, as Kirin sent it)."""

    seed_code = "002011098"
    hint = "Kirin reported a status check error; retry later."


class KirinTaskCreationError(KirinTaskFailedError):
    """002011099: task creation error (the code, as Kirin sent it)."""

    seed_code = "002011099"
    hint = "Kirin could not create the task; retry later."


def _family(root: type[KirinError] = KirinError) -> Iterator[type[KirinError]]:
    """``root`` and every class below it: the registries below are read off the class tree, so a
    new error class is known everywhere by being declared."""
    yield root
    for sub in root.__subclasses__():
        yield from _family(sub)


#: API error code -> its class (the classes' own ``seed_code``).
SEED_ERROR_CODES: dict[str, type[KirinError]] = {cls.seed_code: cls for cls in _family() if cls.seed_code}
_BY_HTTP_STATUS: dict[int, type[KirinError]] = {
    status: cls for cls in _family() for status in cls.http_statuses
}
#: Every error class by name, to rebuild one from a trigger event (:func:`error_from_event`).
_BY_NAME: dict[str, type[KirinError]] = {cls.__name__: cls for cls in _family()}


def exception_class_for(code: object = None, http_status: int | None = None) -> type[KirinError]:
    """The one map from an API error code or HTTP status to its exception class.

    A known seed code wins (the generation failed, whatever the status); otherwise the HTTP status
    decides (400/422, 401/403, 404, 409, 429; any other error status is a
    :class:`KirinBadResponseError`); with neither, the task failed for a reason we do not know:
    :class:`KirinTaskFailedError`.
    """
    normalized = normalize_code(code)
    if normalized in SEED_ERROR_CODES:
        return SEED_ERROR_CODES[normalized]
    if http_status is not None:
        if http_status in _BY_HTTP_STATUS:
            return _BY_HTTP_STATUS[http_status]
        if http_status >= 400:
            return KirinBadResponseError
    return KirinTaskFailedError


def error_from_event(data: dict[str, Any]) -> KirinError:
    """Rebuild the exception that :meth:`KirinError.to_dict` described (e.g. in a trigger event)."""
    cls = _BY_NAME.get(str(data.get("error_type")), KirinError)
    created = data.get("may_have_created")
    error = cls(
        str(data.get("message") or "Kirin reported an error without a message."),
        code=data.get("code"),
        task_id=data.get("task_id"),
        http_status=data.get("http_status"),
        may_have_created=created if isinstance(created, bool) else None,
    )
    error.retry_after = _seconds(data.get("retry_after"))
    return error

"""The Kirin wire format: the request a DAG sends and the task envelope the API answers with.

Build a request (every rule of the vendor's page is checked here, before anything is sent)::

    from airflow_provider_kirin.models import KirinVideoRequest

    request = KirinVideoRequest.build(prompt="a red fox in snow", duration=10, mode="pro")
    request.to_payload()  # the JSON body, duration as a string, unset fields left out

Read a task (unknown fields and unknown statuses are tolerated; ``id`` is read as ``task_id``)::

    task = KirinTask.model_validate(envelope)
    if task.is_completed:
        print(task.video_urls, task.cost)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from decimal import Decimal, InvalidOperation
from types import UnionType
from typing import Annotated, Any, Final, Literal, TypedDict, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from typing_extensions import Unpack

from airflow_provider_kirin.core.defaults import MAX_VIDEOS
from airflow_provider_kirin.core.redaction import MAX_TEXT_CHARS, clean_json, clean_text
from airflow_provider_kirin.exceptions import KirinValidationError, normalize_code

MODEL_ID: Final = "kirin_v2_5_turbo_t2v"
MAX_PROMPT_CHARS: Final = 2500
TERMINAL_STATUSES: Final = frozenset({"completed", "failed"})
#: A task id the provider accepts, from the server or a DAG: a plain identifier, never ``.``/``..``,
#: never a path, so it is safe in a URL path segment, a log line and a file name.
TASK_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
TASK_ID_ALLOWED: Final = "1 to 64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
#: A cost the provider passes on: a plain, finite, non-negative decimal (``0.35``).
_COST = re.compile(r"[0-9]{1,12}(\.[0-9]{1,12})?")
#: Longest video URL kept (signed URLs are long, but not this long).
MAX_URL_CHARS: Final = 4096


class RequestArgs(TypedDict, total=False):
    """The optional arguments of :meth:`KirinVideoRequest.build` (and ``KirinHook.create_task``):
    their names and types, declared once. Rules and defaults live on :class:`KirinVideoRequest`."""

    negative_prompt: str | None
    duration: int | str | None
    aspect_ratio: str | None
    mode: str | None
    watermark: bool | None
    callback_url: str | None
    external_task_id: str | None


def _duration_to_wire(value: object) -> object:
    # Accept 5/10 as int or str; send str. A bool is an int in Python, and never a duration.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class WatermarkInfo(BaseModel):
    """``watermark_info`` on the wire; custom watermarks are not supported by the API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool = False


class KirinVideoRequest(BaseModel):
    """A text-to-video generation request, validated against every rule of the vendor's page.

    Use :meth:`build` rather than the constructor: it raises :class:`KirinValidationError` naming
    the field, the value and what is allowed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Each field's type, limits and default are declared here and nowhere else: what validation
    # errors say is allowed (:data:`ALLOWED`), the builders' arguments, the fingerprint and the
    # batch items' fields are all read off these declarations. A ``description`` states only the
    # rule a validator below adds.
    model: Literal["kirin_v2_5_turbo_t2v"] = MODEL_ID
    prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="not only white space")
    negative_prompt: StrictStr | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    duration: Annotated[Literal["5", "10"], BeforeValidator(_duration_to_wire)] = Field(
        default="5", description="as int or str"
    )
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    mode: Literal["std", "pro"] = "std"
    watermark_info: WatermarkInfo = WatermarkInfo()
    callback_url: StrictStr | None = Field(default=None, description="an http:// or https:// URL with a host")
    external_task_id: StrictStr | None = Field(
        default=None, min_length=1, max_length=256, description="no white space at either end"
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is only white space")
        return value

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL with a host")
        return value

    @field_validator("external_task_id")
    @classmethod
    def _trimmed(cls, value: str | None) -> str | None:
        if value is not None and value != value.strip():
            raise ValueError("white space at either end")
        return value

    @classmethod
    def build(cls, *, prompt: object, **fields: Unpack[RequestArgs]) -> KirinVideoRequest:
        """Validate the fields a DAG author passes (:class:`RequestArgs`); raise
        :class:`KirinValidationError` if any is wrong. A field left out or ``None`` takes its
        default, declared on this model and nowhere else, so hooks and operators pass what the
        author set and ``None`` for the rest."""
        given: dict[str, Any] = {name: value for name, value in fields.items() if value is not None}
        if "watermark" in given:
            given["watermark_info"] = {"enabled": given.pop("watermark")}
        # ``prompt`` has no default: a None prompt is kept, so the error names it and its value.
        return validate_model(cls, {"prompt": prompt, **given})

    def to_payload(self) -> dict[str, Any]:
        """The JSON body: unset optional fields are left out, ``watermark_info`` is always sent."""
        return self.model_dump(mode="json", exclude_none=True)

    def fingerprint(self) -> str:
        """SHA-256 (hex) of every field that shapes the video: all of them but
        :data:`NOT_SHAPING_FIELDS`. Two requests with the same fingerprint ask for the same video,
        so a retry may reuse the generation of one for the other; a field added to this model
        later is covered without a change here."""
        shaping = self.model_dump(mode="json", exclude=set(NOT_SHAPING_FIELDS))
        canonical = json.dumps(shaping, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


#: Request fields that do not change the video: where Kirin reports progress, and the caller's id.
NOT_SHAPING_FIELDS: Final = ("callback_url", "external_task_id")


def _allowed(info: FieldInfo) -> str:
    """What a field allows, in words, read off its declaration: the type, its length limits or
    values, ``None`` if optional, and the rule its ``description`` states."""
    annotation, optional = info.annotation, False
    if get_origin(annotation) in (Union, UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        optional = len(members) < len(get_args(annotation))
        annotation = members[0]
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Literal:
        values = ", ".join(repr(value) for value in get_args(annotation))
        text = f"one of {values}" if len(get_args(annotation)) > 1 else values
    elif annotation is bool:
        text = "True or False"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        text = (
            "{" + ", ".join(f"'{name}': {_allowed(f)}" for name, f in annotation.model_fields.items()) + "}"
        )
    else:
        low = next((m.min_length for m in info.metadata if hasattr(m, "min_length")), None)
        high = next((m.max_length for m in info.metadata if hasattr(m, "max_length")), None)
        if high is not None:
            text = (
                f"a string of {low} to {high} characters" if low else f"a string of at most {high} characters"
            )
        else:
            text = "a non-empty string" if low else "a string"
    if info.description:
        text = f"{text} ({info.description})"
    return f"{text}, or None" if optional else text


#: What each request field allows, as validation errors say it (read off the model).
ALLOWED: Final[dict[str, str]] = {
    name: _allowed(info) for name, info in KirinVideoRequest.model_fields.items()
} | {"watermark": _allowed(WatermarkInfo.model_fields["enabled"])}


#: Every argument of :meth:`KirinVideoRequest.build` (``prompt`` and :class:`RequestArgs`).
BUILD_ARGS: Final = ("prompt", *RequestArgs.__annotations__)
#: What a DAG author sets that shapes the video (the operators' arguments, a batch item's fields).
VIDEO_ARGS: Final = tuple(name for name in BUILD_ARGS if name not in NOT_SHAPING_FIELDS)


def is_http_url(url: object) -> bool:
    """Whether ``url`` is an ``http``/``https`` URL with a host, in plain printable ASCII with no
    space or backslash: the only kind the provider links to or downloads (never ``javascript:``,
    ``file:``, ``data:``, nor one carrying control characters)."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        return False
    if not (url.isascii() and url.isprintable()) or " " in url or "\\" in url:
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an invalid port or IPv6 literal
        return False


def plain_task_id(value: object) -> str | None:
    """``value`` if it is a plain task id (see :data:`TASK_ID_PATTERN`), else ``None``."""
    if isinstance(value, str) and TASK_ID_PATTERN.fullmatch(value):
        return value
    return None


def _describe(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # e.g. an int too long to print
        return f"<{type(value).__name__} too large to show>"
    if len(text) > 80:
        text = f"{text[:60]}...{text[-10:]} ({len(value) if hasattr(value, '__len__') else '?'} long)"
    return text


def validate_model(model: type[Any], data: dict[str, Any]) -> Any:
    """Validate ``data`` into ``model``, turning pydantic's error into a :class:`KirinValidationError`
    that names every bad field, its value and what the field allows."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors(include_url=False):
            loc = [str(part) for part in item["loc"]]
            field = "watermark" if loc[:1] == ["watermark_info"] else (loc[0] if loc else "request")
            allowed = ALLOWED.get(field, "see the field's documentation")
            problems.append(
                f"{field}={_describe(item.get('input'))} is invalid ({item['msg']}); allowed: {allowed}"
            )
        raise KirinValidationError("Invalid Kirin request: " + "; ".join(problems)) from None


# ---------------------------------------------------------------------------------------------------
# The task envelope
#
# What one task answer may hold is bounded where it enters (``KirinTask``'s first validator), so
# everything built from it is bounded too, whatever a server sends: at most ``max_videos`` videos
# (a connection extra, default ``core.defaults.MAX_VIDEOS``) whose URLs total at most
# :data:`MAX_URL_BUDGET` characters, more cut with a warning; short text fields; ``metadata`` and
# unknown fields kept only while small. A trigger event or the ``kirin_result`` XCom built from a
# task therefore stays under 16 KB (``tests/reliability/test_bounded_answers.py``).

#: The most characters of video URLs one task keeps in all.
MAX_URL_BUDGET: Final = 12 * 1024
#: Longest text kept in a short field (model, timestamps, discount); longer is cut.
MAX_SHORT_CHARS: Final = 64
#: ``metadata`` and each unknown top-level field are kept only while their JSON is this small.
MAX_EXTRA_CHARS: Final = 1024
#: Unknown top-level fields kept at most (each within :data:`MAX_EXTRA_CHARS`).
MAX_EXTRA_FIELDS: Final = 8
#: How many ``output`` blocks, and items per block, are looked at.
MAX_SCANNED: Final = 64
_KNOWN_FIELDS = frozenset(
    {"task_id", "id", "external_task_id", "model", "status", "created_at", "updated_at", "output",
     "usage", "error", "metadata"}
)  # fmt: skip
log = logging.getLogger(__name__)


def clean_status(status: str) -> str:
    """A status as the provider compares and logs it: trimmed, lower case, plain text, short."""
    return clean_text(status.strip().lower(), MAX_SHORT_CHARS)


def _json_chars(value: Any, budget: int) -> int | None:
    """About how many characters ``value`` takes as JSON, or ``None`` once past ``budget``: a
    bounded walk, so a huge value is not serialised just to be measured."""
    todo, used = [value], 0
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
            used += 2
        elif isinstance(item, list):
            todo.extend(item)
            used += 2
        else:
            used += len(item) + 3 if isinstance(item, str) else 8
        if used > budget:
            return None
    return used


def _short(value: object, limit: int = MAX_SHORT_CHARS) -> object:
    return value[:limit] if isinstance(value, str) else value


def _is_video(item: dict[str, Any]) -> bool:
    kind = item.get("type")
    return is_http_url(item.get("url")) and (
        kind is None or (isinstance(kind, str) and kind.lower() == "video")
    )


def _bounded_videos(output: object, max_videos: int) -> tuple[list[dict[str, Any]], bool]:
    """The first videos of ``output`` (at most ``max_videos``, URLs within :data:`MAX_URL_BUDGET`,
    looking at no more than :data:`MAX_SCANNED` blocks and items per block), and whether any was
    cut. Only ``type``, ``url`` and ``size`` of each are kept."""
    candidates = (
        item
        for block in (output[:MAX_SCANNED] if isinstance(output, list) else [])
        if isinstance(block, dict) and isinstance(block.get("content"), list)
        for item in block["content"][:MAX_SCANNED]
        if isinstance(item, dict) and _is_video(item)
    )
    videos: list[dict[str, Any]] = []
    url_chars = 0
    for item in candidates:
        url = item["url"]
        if len(videos) >= max_videos or url_chars + len(url) > MAX_URL_BUDGET:
            return videos, True
        url_chars += len(url)
        videos.append({"type": _short(item.get("type")), "url": url, "size": _short(item.get("size"))})
    return videos, False


def bounded_envelope(data: dict[str, Any], max_videos: int) -> dict[str, Any]:
    """``data`` with everything a task keeps bounded (see the section comment): the one place a
    server's envelope is cut down to size, before it is cleaned and validated."""
    bounded: dict[str, Any] = {name: data[name] for name in ("task_id", "id") if name in data}
    if "status" in data:
        status = data["status"]
        bounded["status"] = status.strip()[:MAX_SHORT_CHARS] if isinstance(status, str) else status
    external = data.get("external_task_id")
    if isinstance(external, str) and 0 < len(external) <= 256:
        bounded["external_task_id"] = external
    for name in ("model", "created_at", "updated_at"):
        if name in data:
            bounded[name] = _short(data[name])
    output = data.get("output")
    if isinstance(output, list):
        videos, cut = _bounded_videos(output, max_videos)
        bounded["output"] = [{"content": videos}] if videos else []
        if cut:
            log.warning(
                "Kirin task %s names more videos than kept: the first %d (max_videos=%d, at most "
                "%d characters of URLs) were kept.",
                clean_text(data.get("task_id") or data.get("id"), MAX_SHORT_CHARS),
                len(videos),
                max_videos,
                MAX_URL_BUDGET,
            )
    elif "output" in data:
        bounded["output"] = _short(output)  # not a list: the model refuses it
    usage, error = data.get("usage"), data.get("error")
    if isinstance(usage, dict):
        bounded["usage"] = {"cost": _short(usage.get("cost")), "discount": _short(usage.get("discount"))}
    elif "usage" in data:
        bounded["usage"] = _short(usage)  # not an object: the model refuses it
    if isinstance(error, dict):
        message = error.get("error_message", error.get("message"))
        bounded["error"] = {
            "code": _short(error.get("code")),
            "error_message": _short(message, MAX_TEXT_CHARS * 2),
        }
    elif "error" in data:
        bounded["error"] = _short(error)
    metadata = data.get("metadata")
    if isinstance(metadata, dict) and _json_chars(metadata, MAX_EXTRA_CHARS) is not None:
        bounded["metadata"] = metadata
    extras = 0
    for name, value in data.items():
        if extras >= MAX_EXTRA_FIELDS:
            break
        small = name not in _KNOWN_FIELDS and len(name) <= MAX_SHORT_CHARS
        if small and _json_chars(value, MAX_EXTRA_CHARS) is not None:
            bounded[name] = value
            extras += 1
    return bounded


class KirinVideo(BaseModel):
    """One generated item of ``output[].content[]``."""

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    url: str | None = None
    size: str | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _http_only(cls, value: object) -> object:
        # Anything but an http(s) URL (``javascript:``, ``file:``, one with control characters...)
        # is no video: dropped here, so no link, XCom or download ever carries it.
        return value if value is None or is_http_url(value) else None


class KirinOutput(BaseModel):
    """One element of ``output``."""

    model_config = ConfigDict(extra="allow")

    content: list[KirinVideo] = Field(default_factory=list)


class KirinUsage(BaseModel):
    """``usage``: cost in USD as a decimal string, and the discount."""

    model_config = ConfigDict(extra="allow")

    cost: str | None = None
    discount: float | str | None = None

    @field_validator("cost", mode="before")
    @classmethod
    def _cost_as_text(cls, value: object) -> object:
        # The contract says a decimal string; a JSON number is tolerated and kept exact as text.
        # Only a plain, finite, non-negative decimal in ASCII digits passes: not 1e400, NaN,
        # -3.5, "lots" or "١٢٣".
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError("the cost is not a finite number")
            try:
                value = format(Decimal(str(value)), "f")
            except InvalidOperation:  # pragma: no cover - str() of a finite number is a decimal
                raise ValueError("the cost is not a decimal") from None
        if not isinstance(value, str) or not _COST.fullmatch(value):
            raise ValueError("the cost is not a plain non-negative decimal such as '0.35'")
        return value


class KirinTaskError(BaseModel):
    """``error`` of a failed task."""

    model_config = ConfigDict(extra="allow")

    code: str | None = None
    error_message: str | None = Field(default=None, validation_alias=AliasChoices("error_message", "message"))

    @field_validator("code", mode="before")
    @classmethod
    def _normalize(cls, value: object) -> str | None:
        code = normalize_code(value)
        return clean_text(code, 64) if code is not None else None

    @field_validator("error_message", mode="before")
    @classmethod
    def _capped(cls, value: object) -> object:
        # A server's text is quoted in exceptions and logs: never megabytes of it.
        return clean_text(value, MAX_TEXT_CHARS) if isinstance(value, str) else value


class KirinTask(BaseModel):
    """A Kirin task as the API reports it. Unknown statuses mean "not yet"; small unknown fields
    are kept.

    Every hook method that returns a task returns this model. Nothing the server sent reaches
    it unchecked: the envelope is first cut down to size (:func:`bounded_envelope`: at most
    ``max_videos`` videos, short fields, small metadata), then every string has the API key
    removed and its control characters escaped (``core.redaction``); the task id must be a plain
    identifier, video URLs http(s) and plain ASCII, the cost a plain ASCII decimal, error text
    capped. So every XCom, event, log line, link, sidecar and file name built from a task is
    clean and bounded, on the sync and async paths alike. Pass
    ``context={"max_videos": n}`` to :meth:`model_validate` for another video cap.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    task_id: str = Field(validation_alias=AliasChoices("task_id", "id"), min_length=1)
    external_task_id: str | None = None
    model: str | None = None
    status: str
    created_at: str | None = None
    updated_at: str | None = None
    output: list[KirinOutput] | None = None
    usage: KirinUsage | None = None
    error: KirinTaskError | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _entered(cls, data: object, info: ValidationInfo) -> object:
        # Where server values enter: bounded, then every string redacted and made plain text,
        # before anything reads it.
        if not isinstance(data, dict):
            return data
        max_videos = (info.context or {}).get("max_videos", MAX_VIDEOS)
        return clean_json(bounded_envelope(data, max_videos))

    @field_validator("task_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and plain_task_id(value) is None:
            raise ValueError(f"the task id is not a plain identifier ({TASK_ID_ALLOWED})")
        return value

    @field_validator("status", mode="before")
    @classmethod
    def _status_lower(cls, value: object) -> object:
        return clean_status(value) if isinstance(value, str) else value

    @classmethod
    def pending(cls, task_id: str, status: str) -> KirinTask:
        """A task known only by its id and a not-yet-terminal status: what a status check reads of
        an unfinished task (the rest of the envelope is not needed, so it is not parsed). Both
        values must already be clean: ``task_id`` the one asked for, ``status`` cleaned.

        Shared, so do not change it: every status check makes one, and the checks of a wait
        mostly find the same status. One object per id and status (a bounded table) means no
        allocation per check and no new long-lived object for the garbage collector to promote
        and later walk, which in a triggerer holding thousands of waits is most of what a check
        costs beyond its HTTP."""
        key = (task_id, status)
        stub = _PENDING_STUBS.get(key)
        if stub is None:
            if len(_PENDING_STUBS) >= MAX_PENDING_STUBS:
                _PENDING_STUBS.clear()  # the waits still hold theirs; only sharing restarts
            stub = _PENDING_STUBS[key] = _PENDING.model_copy(update={"task_id": task_id, "status": status})
        return stub

    @property
    def is_terminal(self) -> bool:
        """``completed`` and ``failed`` are the only terminal states."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_completed(self) -> bool:
        return self.status == "completed"

    @property
    def is_failed(self) -> bool:
        return self.status == "failed"

    @property
    def videos(self) -> list[KirinVideo]:
        """Every generated video with a URL (items of other types are left out)."""
        return [
            item
            for block in self.output or []
            for item in block.content
            if item.url and (item.type is None or item.type.lower() == "video")
        ]

    @property
    def video_urls(self) -> list[str]:
        return [video.url for video in self.videos if video.url]

    @property
    def cost(self) -> str | None:
        return self.usage.cost if self.usage else None

    @property
    def discount(self) -> float | str | None:
        return self.usage.discount if self.usage else None

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error else None

    @property
    def error_message(self) -> str | None:
        return self.error.error_message if self.error else None

    def to_result(self) -> dict[str, Any]:
        """The plain, JSON-serialisable result that operators and sensors push to XCom (bounded:
        see the section comment)."""
        return {
            "task_id": self.task_id,
            "external_task_id": self.external_task_id,
            "status": self.status,
            "videos": [{"url": v.url, "type": v.type or "video", "size": v.size} for v in self.videos],
            "cost": self.cost,
            "discount": self.discount,
            "metadata": dict(self.metadata or {}),
        }

    def to_event(self) -> dict[str, Any]:
        """The task as a trigger event carries it: the envelope's known fields (bounded), without
        unknown ones; :meth:`model_validate` reads it back."""
        return self.model_dump(mode="json", include=set(type(self).model_fields), exclude_none=True)


_PENDING = KirinTask.model_construct(task_id="pending", status="pending")
#: The pending tasks :meth:`KirinTask.pending` hands out, by id and status: at most
#: :data:`MAX_PENDING_STUBS` (about 0.8 KB each, so 8 MB at most; the running waits hold theirs
#: anyway, and those of ended waits go at the next clear).
_PENDING_STUBS: dict[tuple[str, str], KirinTask] = {}
MAX_PENDING_STUBS = 10_000

"""Keeping generated videos: streaming one to a local path or an Airflow ``ObjectStoragePath``,
safely, and the files around it (sidecars, where a file landed). Used by ``KirinHook.download_video``,
``KirinDownloadVideoOperator`` and the batch operator.

- Only ``http``/``https`` URLs; the caller decides whether the API key goes along (only to the
  API's own origin, see ``KirinHook.download_video``).
- 64 KiB chunks: memory stays constant whatever the size.
- The bytes go to a hidden ``.<name>.<random>.part`` file next to the destination and are moved
  into place only when complete; a short body (Content-Length mismatch), a body that is not a
  video (Content-Type), one over ``max_bytes``, or any error leaves nothing behind.
- A destination that is a directory gets a file name from the URL only if it is a plain, safe
  ``*.mp4`` name; otherwise ``video.mp4``. Nothing from the URL can point outside the directory.
- Every file name the provider writes (videos, sidecars, a batch manifest) comes from
  :func:`safe_name`, the one place that knows what a safe name is.
- The whole download (connect + headers + body) has a total deadline (``download_timeout``),
  so a host that drips bytes cannot hold it; ``identity`` encoding is asked for, and a body sent
  compressed anyway is decoded, its length checked on the wire bytes.
- The response must say it is a video (``Content-Type`` ``video/*`` or octet-stream); a host
  that sends no type is refused unless the caller opts out with ``require_video_type=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_kirin.core.defaults import DEFAULT_MAX_BYTES
from airflow_provider_kirin.core.redaction import clean_text
from airflow_provider_kirin.exceptions import KirinStorageError, KirinValidationError
from airflow_provider_kirin.io.deadline import DeadlineExceeded, request_deadline
from airflow_provider_kirin.models import is_http_url

if TYPE_CHECKING:
    import requests
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_kirin.hooks.kirin import KirinHook
    from airflow_provider_kirin.models import KirinTask

#: 64 KiB: measured faster than 1 MiB chunks (fewer page faults on fresh buffers), memory stays flat.
CHUNK_BYTES = 64 * 1024
VIDEO_CONTENT_TYPES = ("video/", "application/octet-stream", "binary/octet-stream")
#: Content encodings ``requests`` decodes; anything else is refused (identity is asked for).
DECODED_ENCODINGS = ("gzip", "x-gzip", "deflate")
#: Longest stem :func:`safe_name` keeps: with a suffix, far below every file system's 255 bytes.
MAX_STEM_CHARS = 100
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,10}){0,3}")


@dataclass(frozen=True)
class StoredVideo:
    """A video kept by :func:`store_video` (``KirinHook.download_video``)."""

    path: Any  # pathlib.Path or airflow.sdk.ObjectStoragePath
    size: int
    sha256: str | None  # None unless asked for: hashing costs more CPU than the download itself
    content_type: str | None


def safe_name(stem: object, suffix: str = ".mp4", *, fallback: str = "video") -> str:
    """The one function that derives a file name the provider writes: ``<stem><suffix>``, a single
    plain path component that cannot leave the directory it is joined to.

    ``stem`` may come from anywhere (a Kirin task id, a URL, a batch item's key): it is
    NFKC-normalised, every run of characters other than ASCII letters, digits, ``.``, ``_`` and
    ``-`` (separators, NUL, control and other unicode characters) becomes ``_``, runs of dots
    (``..``) become ``_``, leading and trailing dots, ``_`` and ``-`` are dropped (no hidden file,
    no option-like name), and it is cut to :data:`MAX_STEM_CHARS`. Whenever the stem had to be
    changed, 8 hex digits of its SHA-256 are appended, so two different stems never share a name
    (``a/b`` and ``a_b`` stay apart). An empty result uses ``fallback``. ``suffix`` is the
    caller's own (``.mp4``, ``.mp4.json``, ``.jsonl``, or empty for a stem), never server data,
    and is checked too.

    Use it for every file you add next to the videos, e.g. a batch manifest::

        from airflow_provider_kirin.io.storage import safe_name

        (directory / safe_name(batch_key, ".manifest.json")).write_text(...)
    """
    if not _SUFFIX.fullmatch(suffix):
        raise KirinValidationError(f"suffix={suffix!r} is invalid; allowed: '.ext', up to 3 parts")
    original = str(stem)
    text = unicodedata.normalize("NFKC", original)
    text = _UNSAFE_CHARS.sub("_", text)
    text = re.sub(r"\.{2,}", "_", text).strip("._-")[:MAX_STEM_CHARS].rstrip("._-")
    if text != original:
        digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        text = f"{text}-{digest}" if text else f"{fallback}-{digest}"
    return f"{text or fallback}{suffix}"


def safe_file_name(url: str) -> str:
    """The URL's last path segment if it is a plain ``*.mp4`` name, else ``video.mp4``."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if name.lower().endswith(".mp4"):
        candidate = safe_name(name[:-4], ".mp4")
        if candidate == name:  # kept only when nothing had to be changed
            return name
    return "video.mp4"


def describe_url(url: str) -> str:
    """A URL fit for an error message: no credentials, query or fragment, redacted and capped."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return clean_text(url.split("?", 1)[0].split("@")[-1], 100)
    where = f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else parts.path
    return clean_text(where, 100)


def check_url(url: str) -> str:
    """The URL's origin (``scheme://host[:port]``); a non-http(s) URL is a validation error."""
    if not is_http_url(url):
        raise KirinValidationError(f"url={describe_url(str(url))!r} is invalid; allowed: an http(s) URL")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def as_destination(path: str | os.PathLike[str] | Any, url: str) -> Any:
    """A ``Path``/``ObjectStoragePath`` for ``path``; a ``scheme://`` string becomes an ObjectStoragePath."""
    if isinstance(path, str) and "://" in path:
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(path)
    elif isinstance(path, (str, os.PathLike)):
        path = Path(path)
    if path.is_dir() or str(path).endswith("/"):
        path = path / safe_file_name(url)
    return path


def store_video(
    session: requests.Session,
    url: str,
    destination: Any,
    *,
    headers: dict[str, str],
    timeout: tuple[float, float],
    deadline: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
    checksum: bool = False,
    require_video_type: bool = True,
) -> StoredVideo:
    """Stream ``url`` to ``destination`` (see the module docstring for the guarantees), in all
    within ``deadline`` seconds; with ``checksum``, also compute the SHA-256 of what was stored.
    ``require_video_type=False`` accepts a response without a ``Content-Type`` (a host that
    sends a wrong one is refused all the same)."""
    import requests

    host = urlsplit(url).hostname
    with _suppress_missing():
        destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.parent / f".{destination.name}.{uuid.uuid4().hex[:12]}.part"
    digest = hashlib.sha256() if checksum else None
    written = 0
    content_type: str | None = None
    try:
        with (
            request_deadline(deadline, "video download"),
            session.get(
                url, headers={**headers, "Accept-Encoding": "identity"}, stream=True, timeout=timeout
            ) as response,
        ):
            if response.status_code != 200:
                raise _failed(f"HTTP {response.status_code} from {host}")
            content_type = _video_type(response.headers.get("Content-Type"), host, require_video_type)
            encoding = _encoding(response.headers.get("Content-Encoding"), host)
            expected = _content_length(response.headers.get("Content-Length"), host)
            if expected is not None and encoding is None and expected > max_bytes:
                raise KirinStorageError(f"The video is {expected} bytes, over max_bytes={max_bytes}.")
            with part.open("wb") as out:
                for chunk in response.iter_content(CHUNK_BYTES):
                    written += len(chunk)
                    if written > max_bytes:
                        raise KirinStorageError(f"The video is over max_bytes={max_bytes}.")
                    if digest is not None:
                        digest.update(chunk)
                    out.write(chunk)
            # Content-Length counts the bytes on the wire: compressed ones, if compressed.
            received = response.raw.tell() if encoding is not None else written
        if expected is not None and received != expected:
            raise KirinStorageError(
                f"Downloading the video was cut short: {received} of {expected} bytes from {host}."
            )
        if written == 0:
            raise _failed(f"{host} sent an empty body")
        part.replace(destination)
    except requests.RequestException as err:
        _remove(part)
        # The error's own text may quote the signed URL: only the deadline's message is shown.
        detail = f": {err}" if isinstance(err, DeadlineExceeded) else ""
        raise _failed(f"{type(err).__name__} from {host}{detail}") from None
    except BaseException:
        _remove(part)
        raise
    sha256 = digest.hexdigest() if digest is not None else None
    return StoredVideo(path=destination, size=written, sha256=sha256, content_type=content_type)


def _failed(reason: str) -> KirinStorageError:
    return KirinStorageError(f"Downloading the video failed: {reason}.")


def _video_type(value: str | None, host: str | None, required: bool) -> str | None:
    if value is None:
        if required:
            raise _failed(f"{host} sent no Content-Type (pass require_video_type=False to accept that)")
        return None
    if not value.strip().lower().startswith(VIDEO_CONTENT_TYPES):
        raise _failed(f"{host} sent Content-Type {clean_text(value, 80)!r}, not a video")
    return value


def _encoding(value: str | None, host: str | None) -> str | None:
    """``None`` for an uncompressed body, else the one encoding ``requests`` decodes."""
    encoding = (value or "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in DECODED_ENCODINGS:
        raise _failed(f"{host} sent Content-Encoding {clean_text(value, 80)!r}, which is not supported")
    return encoding


def _content_length(value: str | None, host: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise _failed(f"{host} sent a malformed Content-Length {clean_text(value, 40)!r}")
    return int(text)


def _remove(path: Any) -> None:
    with _suppress_missing():
        path.unlink()


def _suppress_missing() -> contextlib.suppress:
    # Object stores may refuse to mkdir or unlink what does not exist; neither matters here.
    return contextlib.suppress(FileNotFoundError, NotImplementedError)


# -- where videos and their sidecars go --------------------------------------------------------
def location(path: Any) -> str:
    """Where a file landed, written the same way on every Airflow line: as a URL (``file:///...``,
    ``s3://...``). Older ``universal-pathlib`` releases (Airflow 3.0) print a local
    ``ObjectStoragePath`` without its ``file://``."""
    text = str(path)
    return text if "://" in text or not text.startswith("/") else Path(text).as_uri()


def destination_dir(destination: Any) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` for a URL (``s3://...``, ``file:///...``) or a local directory path."""
    from airflow.sdk import ObjectStoragePath

    if isinstance(destination, ObjectStoragePath):
        return destination
    text = str(destination)
    if "://" not in text:
        text = Path(text).expanduser().resolve().as_uri()
    return ObjectStoragePath(text)


def keep_task_videos(
    hook: KirinHook,
    task: KirinTask,
    directory: ObjectStoragePath,
    stem: str,
    request: dict[str, Any] | None,
    *,
    max_bytes: int,
    log: Any,
    require_video_type: bool = True,
) -> list[str]:
    """Stream every video of a completed ``task`` to ``directory/<stem>.mp4`` (``<stem>-2.mp4``...
    for more than one), each with its ``.json`` sidecar; return the stored paths. Every name goes
    through :func:`safe_name`, so whatever ``stem`` holds (a task
    id the server sent, an item key), no file lands outside ``directory``."""
    stored_paths: list[str] = []
    for index, video in enumerate(task.videos, start=1):
        item_stem = stem if index == 1 else f"{stem}-{index}"
        stored = hook.download_video(
            str(video.url),
            directory / safe_name(item_stem, ".mp4"),
            max_bytes=max_bytes,
            checksum=True,
            require_video_type=require_video_type,
        )
        sidecar = _sidecar(task, request, video.size, stored)
        (directory / safe_name(item_stem, ".mp4.json")).write_text(
            json.dumps(sidecar, indent=2, sort_keys=True)
        )
        stored_paths.append(location(stored.path))
        log.info("Kept %s (%d bytes, sha256 %s) with its sidecar", stored.path, stored.size, stored.sha256)
    return stored_paths


def _sidecar(
    task: KirinTask, request: dict[str, Any] | None, frame_size: str | None, stored: Any
) -> dict[str, Any]:
    return {
        "kirin_task_id": task.task_id,
        "external_task_id": task.external_task_id,
        "model": task.model,
        "status": task.status,
        "request": request,
        "prompt": (request or {}).get("prompt"),
        "cost": task.cost,
        "discount": task.discount,
        "created_at": task.created_at,
        "completed_at": task.updated_at,
        "stored_at": datetime.now(timezone.utc).isoformat(),
        "frame_size": frame_size,
        "bytes": stored.size,
        "sha256": stored.sha256,
        "content_type": stored.content_type,
    }

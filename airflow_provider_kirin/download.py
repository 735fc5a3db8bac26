"""Streaming a generated video to a local path or an Airflow ``ObjectStoragePath``, safely.

- Only ``http``/``https`` URLs; the caller decides whether the API key goes along (only to the
  API's own origin, see ``KirinHook.download_video``).
- 64 KiB chunks: memory stays constant whatever the size.
- The bytes go to a hidden ``.<name>.<random>.part`` file next to the destination and are moved
  into place only when complete; a short body (Content-Length mismatch), a body that is not a
  video (Content-Type), one over ``max_bytes``, or any error leaves nothing behind.
- A destination that is a directory gets a file name from the URL only if it is a plain, safe
  ``*.mp4`` name; otherwise ``video.mp4``. Nothing from the URL can point outside the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_kirin.exceptions import KirinResultParsingError, KirinValidationError, redact

if TYPE_CHECKING:
    import requests

#: 64 KiB: measured faster than 1 MiB chunks (fewer page faults on fresh buffers), memory stays flat.
CHUNK_BYTES = 64 * 1024
#: A generated clip is tens of MB; anything past this is not a video we asked for.
DEFAULT_MAX_BYTES = 2 * 1024**3
VIDEO_CONTENT_TYPES = ("video/", "application/octet-stream", "binary/octet-stream")
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class StoredVideo:
    """A video kept by :func:`store_video`."""

    path: Any  # pathlib.Path or airflow.sdk.ObjectStoragePath
    size: int
    sha256: str | None  # None unless asked for: hashing costs more CPU than the download itself
    content_type: str | None


def safe_file_name(url: str) -> str:
    """The URL's last path segment if it is a plain ``*.mp4`` name, else ``video.mp4``."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if _SAFE_FILE_NAME.match(name) and name.lower().endswith(".mp4") and ".." not in name:
        return name
    return "video.mp4"


def check_url(url: str) -> str:
    """The URL's origin (``scheme://host[:port]``); a non-http(s) URL is a validation error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KirinValidationError(f"url={redact(url)[:200]!r} is invalid; allowed: an http(s) URL")
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
    max_bytes: int = DEFAULT_MAX_BYTES,
    checksum: bool = False,
) -> StoredVideo:
    """Stream ``url`` to ``destination`` (see the module docstring for the guarantees); with
    ``checksum``, also compute the SHA-256 of what was stored."""
    import requests

    host = urlsplit(url).hostname
    with _suppress_missing():
        destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.parent / f".{destination.name}.{uuid.uuid4().hex[:12]}.part"
    digest = hashlib.sha256() if checksum else None
    written = 0
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                raise KirinResultParsingError(
                    f"Downloading the video failed: HTTP {response.status_code} from {host}."
                )
            content_type = response.headers.get("Content-Type")
            if content_type and not content_type.lower().startswith(VIDEO_CONTENT_TYPES):
                raise KirinResultParsingError(
                    f"Downloading the video failed: {host} sent Content-Type {content_type!r}, not a video."
                )
            expected = response.headers.get("Content-Length")
            if expected is not None and int(expected) > max_bytes:
                raise KirinResultParsingError(f"The video is {expected} bytes, over max_bytes={max_bytes}.")
            with part.open("wb") as out:
                for chunk in response.iter_content(CHUNK_BYTES):
                    written += len(chunk)
                    if written > max_bytes:
                        raise KirinResultParsingError(f"The video is over max_bytes={max_bytes}.")
                    if digest is not None:
                        digest.update(chunk)
                    out.write(chunk)
        if expected is not None and written != int(expected):
            raise KirinResultParsingError(
                f"Downloading the video was cut short: {written} of {expected} bytes from {host}."
            )
        if written == 0:
            raise KirinResultParsingError(f"Downloading the video failed: {host} sent an empty body.")
        part.replace(destination)
    except requests.RequestException as err:
        _remove(part)
        raise KirinResultParsingError(
            f"Downloading the video from {host} failed: {type(err).__name__}."
        ) from None
    except BaseException:
        _remove(part)
        raise
    sha256 = digest.hexdigest() if digest is not None else None
    return StoredVideo(path=destination, size=written, sha256=sha256, content_type=content_type)


def _remove(path: Any) -> None:
    with _suppress_missing():
        path.unlink()


def _suppress_missing() -> contextlib.suppress:
    # Object stores may refuse to mkdir or unlink what does not exist; neither matters here.
    return contextlib.suppress(FileNotFoundError, NotImplementedError)

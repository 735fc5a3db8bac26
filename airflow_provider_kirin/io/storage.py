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
  :func:`safe_name`, the one place that knows what a safe name is, and every file is written by
  :func:`write_file`, the one writer: it never follows a symlink (the bytes go to a fresh temporary
  name in the destination directory, created exclusively, then renamed over the final name), it
  refuses a final name that is a symlink or a directory, and it never replaces a file it did not
  write: an existing file may be replaced only when the caller says it is its own (a video or
  sidecar whose sidecar names the same generation; a manifest that names the same generations),
  else :class:`KirinStorageError` names the path, unless the caller passes ``overwrite=True``.
- Where a video may come from (:func:`check_url`, :class:`VideoSources`): only http(s); never
  ``http://`` under an ``https://`` API (a downgrade); never a loopback, private or link-local
  address while the API itself is not on one, unless the host is listed in the connection extra
  ``allowed_video_hosts``. Redirects are followed by hand (at most :data:`MAX_REDIRECTS`), each
  hop checked the same way and the API key sent only to the API's own origin.
- The whole download (connect + headers + body) has a total deadline (``download_timeout``),
  so a host that drips bytes cannot hold it; ``identity`` encoding is asked for, and a body sent
  compressed anyway is decoded, its length checked on the wire bytes.
- The response must say it is a video (``Content-Type`` ``video/*`` or octet-stream); a host
  that sends no type is refused unless the caller opts out with ``require_video_type=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import socket
import stat
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

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

T = TypeVar("T")
#: 64 KiB: measured faster than 1 MiB chunks (fewer page faults on fresh buffers), memory stays flat.
CHUNK_BYTES = 64 * 1024
VIDEO_CONTENT_TYPES = ("video/", "application/octet-stream", "binary/octet-stream")
#: Content encodings ``requests`` decodes; anything else is refused (identity is asked for).
DECODED_ENCODINGS = ("gzip", "x-gzip", "deflate")
#: Longest stem :func:`safe_name` keeps: with a suffix, far below every file system's 255 bytes.
MAX_STEM_CHARS = 100
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,10}){0,3}")
#: Marks the n-th (n >= 2) video of one generation: ``<stem>~2.mp4``. A stem from :func:`safe_name`
#: never holds ``~`` (nor does a Kirin task id, ``models.TASK_ID_PATTERN``), so no other task's or
#: item's name can end up equal to it.
PART_MARK = "~"
#: Redirects a video download follows at most, each hop checked like the first URL.
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
#: Largest existing sidecar or manifest read to decide whether a file is the provider's own.
MAX_OWNER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class StoredVideo:
    """A video kept by :func:`store_video` (``KirinHook.download_video``)."""

    path: Any  # pathlib.Path or airflow.sdk.ObjectStoragePath
    size: int
    sha256: str | None  # None unless asked for: hashing costs more CPU than the download itself
    content_type: str | None


def safe_name(stem: object, suffix: str = ".mp4", *, fallback: str = "video", part: int = 1) -> str:
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
    and is checked too. ``part`` numbers the extra videos of one generation: ``part=2`` gives
    ``<stem>~2<suffix>``; ``~`` is never in a stem this function makes, so a part's name cannot be
    another stem's (``kt_x``'s second video ``kt_x~2.mp4`` is not task ``kt_x-2``'s ``kt_x-2.mp4``).

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
    if isinstance(part, bool) or not isinstance(part, int) or part < 1:
        raise KirinValidationError(f"part={part!r} is invalid; allowed: an int >= 1")
    mark = f"{PART_MARK}{part}" if part > 1 else ""
    return f"{text or fallback}{mark}{suffix}"


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
    """The URL's origin (``scheme://host[:port]``); a non-http(s) URL is a validation error.
    Where a video may come from besides is :meth:`VideoSources.check`."""
    if not is_http_url(url):
        raise KirinValidationError(f"url={describe_url(str(url))!r} is invalid; allowed: an http(s) URL")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names without asking DNS: an IP literal in any spelling the resolver
    accepts (``127.0.0.1``, ``::ffff:127.0.0.1``, ``2130706433``, ``0x7f.1``), else ``None``."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone id names no other host
    except ValueError:
        if not re.fullmatch(r"[0-9a-fA-FxX.]+", host):
            return None
        try:  # inet_aton parses the legacy forms (decimal, octal, hex, short) the resolver accepts
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def internal_host(host: str | None) -> str | None:
    """Why ``host`` is on this machine or a private network, or ``None`` when it is not known to
    be: ``localhost`` (and ``*.localhost``), or an IP literal that is loopback, private,
    link-local, unspecified, shared, reserved or multicast. Names are not resolved (see
    ``docs/reliability.md``: a DNS answer checked here could differ from the one the download
    connects to)."""
    name = (host or "").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return "a loopback name"
    address = _host_address(name)
    if address is None:
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if not address.is_global or address.is_multicast:
        return "a private or reserved address"
    return None


def parse_hosts(value: str | Iterable[str] | None) -> frozenset[str]:
    """``allowed_video_hosts``: a comma-separated string (or a list) of host names or IP
    literals, lower-cased, without ports or brackets."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return frozenset(item.strip().lower().strip("[]").rstrip(".") for item in items if item.strip())


@dataclass(frozen=True)
class VideoSources:
    """Where the videos of one connection may come from (see :meth:`check`)."""

    api_url: str
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, api_url: str, allowed_hosts: str | Iterable[str] | None = None) -> VideoSources:
        return cls(api_url, parse_hosts(allowed_hosts))

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be downloaded under this API, or ``None`` when it may.

        - only ``http``/``https`` with a host;
        - not ``http://`` when the API is ``https://`` (a downgrade: anyone on the path could
          read or replace the video);
        - not a loopback, private or link-local host (:func:`internal_host`) when the API's own
          host is not one: a public API has no business pointing the worker at its network.

        A host listed in ``allowed_video_hosts`` is trusted for both of the last two.
        """
        if not is_http_url(url):
            return "not an http(s) URL"
        video, api = urlsplit(url), urlsplit(self.api_url)
        host = (video.hostname or "").lower().rstrip(".")
        if host in self.allowed_hosts:
            return None
        if api.scheme.lower() == "https" and video.scheme.lower() == "http":
            return "a downgrade from the API's https:// to http://"
        why = internal_host(host)
        if why is not None and internal_host(api.hostname) is None:
            return f"{why}, while the API ({api.hostname}) is not on one"
        return None

    def check(self, url: str, *, field_name: str = "url") -> str:
        """``url``'s origin if it may be downloaded, else :class:`KirinValidationError` naming the
        URL (without credentials or query), the reason and what is allowed."""
        reason = self.refusal(url)
        if reason is not None:
            raise KirinValidationError(
                f"{field_name}={describe_url(str(url))!r} is invalid ({reason}); allowed: an http(s) URL "
                "on the API's scheme, on a public host unless the API is on a private one, or a host "
                "listed in the connection extra allowed_video_hosts"
            )
        return check_url(url)


def as_destination(path: str | os.PathLike[str] | Any, url: str) -> Any:
    """A ``Path``/``ObjectStoragePath`` for ``path``; a ``scheme://`` string becomes an ObjectStoragePath.
    A path the caller names as a directory (an existing one, or a trailing ``/``) gets a file name
    from :func:`safe_file_name`. Callers that name the file themselves (the operators) never come
    through here, so a final name that is a symlink to a directory cannot redirect their files."""
    named_dir = isinstance(path, str) and path.endswith(("/", os.sep))
    if isinstance(path, str) and "://" in path:
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(path)
    elif isinstance(path, (str, os.PathLike)):
        path = Path(path)
    # A symlink is a directory only when named as one (a trailing "/"): a link planted at a file's
    # name must not send the video elsewhere; write_file then refuses the link itself.
    if named_dir or str(path).endswith("/") or (path.is_dir() and not _is_symlink(path)):
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
    sources: VideoSources | None = None,
    api_origin: str | None = None,
    may_replace: Callable[[Any], bool] | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> StoredVideo:
    """Stream ``url`` to ``destination`` (see the module docstring for the guarantees), in all
    within ``deadline`` seconds; with ``checksum``, also compute the SHA-256 of what was stored.
    ``require_video_type=False`` accepts a response without a ``Content-Type`` (a host that
    sends a wrong one is refused all the same).

    ``headers`` (the API's, with its key) go only to ``api_origin``; any other origin gets none.
    ``sources`` decides where the first URL and every redirect may lead. The file is written by
    :func:`write_file` with ``may_replace``/``overwrite``, checked before any request."""
    import requests

    sources = sources or VideoSources(url)
    sources.check(url)
    check_target(destination, may_replace=may_replace, overwrite=overwrite)
    host = urlsplit(url).hostname
    digest = hashlib.sha256() if checksum else None
    written = 0
    content_type: str | None = None

    def fill(out: IO[bytes]) -> None:
        nonlocal written, content_type, host
        with request_deadline(deadline, "video download"):
            response = _follow(session, url, sources, headers, api_origin, timeout, verify)
            host = urlsplit(response.url).hostname or host
            with response:
                if response.status_code != 200:
                    raise _failed(f"HTTP {response.status_code} from {host}")
                content_type = _video_type(response.headers.get("Content-Type"), host, require_video_type)
                encoding = _encoding(response.headers.get("Content-Encoding"), host)
                expected = _content_length(response.headers.get("Content-Length"), host)
                if expected is not None and encoding is None and expected > max_bytes:
                    raise KirinStorageError(f"The video is {expected} bytes, over max_bytes={max_bytes}.")
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

    try:
        write_file(destination, fill, may_replace=may_replace, overwrite=overwrite)
    except requests.RequestException as err:
        # The error's own text may quote the signed URL: only the deadline's message is shown.
        detail = f": {err}" if isinstance(err, DeadlineExceeded) else ""
        raise _failed(f"{type(err).__name__} from {host}{detail}") from None
    sha256 = digest.hexdigest() if digest is not None else None
    return StoredVideo(path=destination, size=written, sha256=sha256, content_type=content_type)


def _follow(
    session: requests.Session,
    url: str,
    sources: VideoSources,
    api_headers: dict[str, str],
    api_origin: str | None,
    timeout: tuple[float, float],
    verify: bool = True,
) -> requests.Response:
    """GET ``url``, following at most :data:`MAX_REDIRECTS` redirects by hand: each hop is checked
    by ``sources`` before it is requested, and carries the API's headers only on the API's origin."""
    for _ in range(MAX_REDIRECTS + 1):
        origin = check_url(url)
        headers = dict(api_headers) if api_origin is not None and origin == api_origin else {"Accept": "*/*"}
        response = session.get(
            url,
            headers={**headers, "Accept-Encoding": "identity"},
            stream=True,
            timeout=timeout,
            allow_redirects=False,
            verify=verify,  # per request: a session's verify=False loses to REQUESTS_CA_BUNDLE
        )
        location = response.headers.get("Location")
        if response.status_code not in _REDIRECTS or not location:
            return response
        response.close()
        target = urljoin(url, location)
        reason = sources.refusal(target)
        if reason is not None:
            raise _failed(f"{urlsplit(url).hostname} redirected to {describe_url(target)!r} ({reason})")
        url = target
    raise _failed(f"more than {MAX_REDIRECTS} redirects")


# -- the one writer ------------------------------------------------------------------------------
def _local_path(path: Any) -> Path | None:
    """The local file system path of ``path`` (a ``Path`` or a ``file://`` ObjectStoragePath), or
    ``None`` for object storage, which has no symlinks.

    The protocol is asked first: with universal-pathlib 0.2 (Airflow 3.0) an ObjectStoragePath is
    itself a ``Path`` subclass whose ``os.fspath`` is its URL, not a file name."""
    protocol = getattr(path, "protocol", None)
    if protocol is not None:
        return Path(path.path) if protocol in ("file", "local") else None
    if isinstance(path, Path):
        return path
    return None


def _is_symlink(path: Any) -> bool:
    local = _local_path(path)
    return local is not None and local.is_symlink()


def check_target(
    path: Any, *, may_replace: Callable[[Any], bool] | None = None, overwrite: bool = False
) -> bool:
    """Whether ``path`` exists and may be replaced (``False``: it does not exist); raise
    :class:`KirinStorageError` naming it when it is a symlink, a directory or anything but a
    regular file, or a file the caller may not replace (``may_replace`` says no, and not
    ``overwrite``). No file is opened for writing and no symlink is followed."""
    local = _local_path(path)
    where = location(path)
    if local is not None:
        try:
            mode = os.lstat(local).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode):
            raise KirinStorageError(f"Refusing to write {where}: it is a symlink, which is never followed.")
        if stat.S_ISDIR(mode):
            raise KirinStorageError(f"Refusing to write {where}: it is a directory.")
        if not stat.S_ISREG(mode):
            raise KirinStorageError(f"Refusing to write {where}: it is not a regular file.")
    else:
        if path.is_dir():
            raise KirinStorageError(f"Refusing to write {where}: it is a directory.")
        if not path.exists():
            return False
    if overwrite or (may_replace is not None and may_replace(path)):
        return True
    raise KirinStorageError(
        f"Refusing to replace {where}: the file exists and was not written by this generation "
        "(no sidecar of the provider names it); move it away, or pass overwrite=True to replace it."
    )


def write_file(
    path: Any,
    fill: Callable[[IO[bytes]], T] | bytes,
    *,
    may_replace: Callable[[Any], bool] | None = None,
    overwrite: bool = False,
) -> T | None:
    """The one way the provider writes a file (videos, sidecars, manifests, anything later), to a
    local ``Path`` or an Airflow ``ObjectStoragePath``; returns what ``fill`` returned.

    ``fill`` writes the content to the file object it is given (or pass the bytes). Rules:

    - the final name is checked first (:func:`check_target`): a symlink or a directory is refused,
      and so is an existing file unless ``may_replace(path)`` says it is the caller's own or
      ``overwrite=True``;
    - the content goes to ``.<name>.<random>.part`` in the same directory, created exclusively
      and without following a symlink (``O_EXCL | O_NOFOLLOW``), and is renamed over the final
      name only when complete: a rename replaces a symlink planted meanwhile instead of following
      it; a new file is linked in place (``link``), which fails rather than replace a file that
      appeared meanwhile;
    - on any error nothing is left behind (the existing file, if any, is untouched).
    """
    replace = check_target(path, may_replace=may_replace, overwrite=overwrite)
    write = fill if callable(fill) else (lambda out: out.write(fill))
    parent = path.parent
    with _suppress_missing():
        parent.mkdir(parents=True, exist_ok=True)
    part = parent / f".{path.name}.{uuid.uuid4().hex[:12]}.part"
    local, local_part = _local_path(path), _local_path(part)
    try:
        if local is not None and local_part is not None:
            flags = (
                os.O_WRONLY
                | os.O_CREAT
                | os.O_EXCL
                | getattr(os, "O_NOFOLLOW", 0)
                | getattr(os, "O_CLOEXEC", 0)
            )
            with os.fdopen(os.open(local_part, flags, 0o666), "wb") as out:
                result = write(out)
            _publish_local(local_part, local, replace, may_replace, overwrite, path)
        else:
            with part.open("wb") as out:
                result = write(out)
            part.replace(path)
    except BaseException:
        _remove(part)
        raise
    return result


def _publish_local(
    part: Path,
    final: Path,
    replace: bool,
    may_replace: Callable[[Any], bool] | None,
    overwrite: bool,
    path: Any,
) -> None:
    if not replace:
        try:
            os.link(part, final)
        except FileExistsError:  # it appeared since the check: decide again, then replace or refuse
            check_target(path, may_replace=may_replace, overwrite=overwrite)
        except OSError:  # no hard links here (some network and FAT file systems): rename below
            pass
        else:
            part.unlink()
            return
    os.replace(part, final)


# -- whose file is it? ----------------------------------------------------------------------------
def read_small(path: Any, limit: int = MAX_OWNER_BYTES) -> bytes | None:
    """At most ``limit`` bytes of an existing regular file, never through a symlink; ``None`` if
    it is missing, a symlink, not a regular file or larger."""
    local = _local_path(path)
    try:
        if local is not None:
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(local, flags)
            with os.fdopen(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return None
                data = handle.read(limit + 1)
        else:
            with path.open("rb") as handle:
                data = handle.read(limit + 1)
    except (OSError, NotImplementedError):
        return None
    return None if len(data) > limit else data


def sidecar_path(video: Any) -> Any:
    """The sidecar of a video file: ``<name>.json`` beside it."""
    return video.parent / f"{video.name}.json"


def same_generation(task_id: str, external_task_id: str | None) -> Callable[[Any], bool]:
    """``may_replace`` for a video and its sidecar: the file is this generation's when its sidecar
    (the file itself, for a ``.json``) names the same Kirin task id and external id."""

    def owned(path: Any) -> bool:
        sidecar = path if path.name.endswith(".json") else sidecar_path(path)
        data = read_small(sidecar)
        try:
            record = json.loads(data) if data is not None else None
        except ValueError:
            return False
        return (
            isinstance(record, dict)
            and record.get("kirin_task_id") == task_id
            and record.get("external_task_id") == external_task_id
        )

    return owned


def already_kept(path: Any, sidecar: Any, task_id: str, external_task_id: str | None) -> StoredVideo | None:
    """The video at ``path`` if an earlier try kept it whole: its sidecar is complete, names the
    same generation, and the file's size and SHA-256 are the ones it records (the file is read
    again to check them, never through a symlink). ``None`` otherwise: then it is downloaded."""
    data = read_small(sidecar)
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        return None
    if not (
        isinstance(record, dict)
        and record.get("complete") is True
        and record.get("kirin_task_id") == task_id
        and record.get("external_task_id") == external_task_id
        and isinstance(record.get("bytes"), int)
        and isinstance(record.get("sha256"), str)
    ):
        return None
    digest, size = hashlib.sha256(), 0
    local = _local_path(path)
    try:
        if local is not None:
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            handle = os.fdopen(os.open(local, flags), "rb")
        else:
            handle = path.open("rb")
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                size += len(chunk)
                if size > record["bytes"]:
                    return None
                digest.update(chunk)
    except (OSError, NotImplementedError):
        return None
    if size != record["bytes"] or digest.hexdigest() != record["sha256"]:
        return None
    return StoredVideo(path=path, size=size, sha256=record["sha256"], content_type=record.get("content_type"))


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
    overwrite: bool = False,
) -> list[str]:
    """Stream every video of a completed ``task`` to ``directory/<stem>.mp4`` (``<stem>~2.mp4``...
    for more than one, see :func:`safe_name`), each with its ``.json`` sidecar; return the stored
    paths. ``stem`` is the caller's (the task id it asked for, an item's index and key), never a
    server value; every name goes through :func:`safe_name`, so no file lands outside
    ``directory``, and every file through :func:`write_file`.

    A retry may replace the files of the same generation (their sidecar names this Kirin task id
    and external id); any other existing file is refused with :class:`KirinStorageError` before
    anything is downloaded, unless ``overwrite=True``. The sidecar is written first (marked
    ``"complete": false``), then the video, then the sidecar again: whatever point a crash
    stops at, an existing video has a sidecar naming its generation, so the retry may replace it.
    A video an earlier try kept whole (:func:`already_kept`: complete sidecar of the same
    generation, same size and SHA-256) is not downloaded again: a retry after a lost worker
    downloads only the rest.
    """
    owned = same_generation(task.task_id, task.external_task_id)
    targets = []
    for index, video in enumerate(task.videos, start=1):
        hook.video_sources.check(str(video.url))  # every URL and name checked before anything is written
        path = directory / safe_name(stem, ".mp4", part=index)
        sidecar = directory / safe_name(stem, ".mp4.json", part=index)
        for target in (path, sidecar):
            check_target(target, may_replace=owned, overwrite=overwrite)
        targets.append((video, path, sidecar))
    stored_paths: list[str] = []
    for video, path, sidecar in targets:
        kept = already_kept(path, sidecar, task.task_id, task.external_task_id)
        if kept is not None:
            stored_paths.append(location(kept.path))
            log.info(
                "Already kept %s (%d bytes, sha256 %s): not downloaded again", path, kept.size, kept.sha256
            )
            continue
        _write_json(
            sidecar, _sidecar(task, request, video.size, None), may_replace=owned, overwrite=overwrite
        )
        stored = hook.download_video(
            str(video.url),
            path,
            max_bytes=max_bytes,
            checksum=True,
            require_video_type=require_video_type,
            may_replace=owned,
            overwrite=overwrite,
        )
        _write_json(
            sidecar, _sidecar(task, request, video.size, stored), may_replace=owned, overwrite=overwrite
        )
        stored_paths.append(location(stored.path))
        log.info("Kept %s (%d bytes, sha256 %s) with its sidecar", stored.path, stored.size, stored.sha256)
    return stored_paths


def _write_json(path: Any, data: dict[str, Any], **rules: Any) -> None:
    # ensure_ascii: one plain line-safe text whatever the server put in its strings.
    write_file(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True).encode("ascii"), **rules)


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
        "stored_at": datetime.now(timezone.utc).isoformat() if stored is not None else None,
        "complete": stored is not None,
        "frame_size": frame_size,
        "bytes": stored.size if stored is not None else None,
        "sha256": stored.sha256 if stored is not None else None,
        "content_type": stored.content_type if stored is not None else None,
    }

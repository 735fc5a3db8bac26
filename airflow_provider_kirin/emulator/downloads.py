"""Download endpoints: the sample video of a completed task and a synthetic blob of any size.

Downloads need no key (generated URLs are pre-signed), but each video download records whether
it carried an ``Authorization`` header, so client tests can prove the key is not sent to another
origin. Both endpoints honour a single ``Range: bytes=a-b`` (206) and support ``HEAD``.

Blob bytes are a fixed pattern: byte ``i`` of the stream is ``i % 256``, produced from one
shared 1 MiB buffer, so memory stays constant whatever ``N`` is.

Example::

    GET /v1/files/kt_0123/video.mp4        -> 200 video/mp4 (the bundled clip)
    GET /v1/files/blob?bytes=1073741824    -> 200 video/mp4, Content-Length: 1073741824
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from airflow_provider_kirin.emulator.faults import Fault
from airflow_provider_kirin.emulator.responses import finish, json_error, pre_fault
from airflow_provider_kirin.emulator.state import EmulatorState, iso
from airflow_provider_kirin.emulator.transport import close_connection

CHUNK = 1024 * 1024
_PATTERN = bytes(range(256)) * (CHUNK // 256)
MAX_BLOB_BYTES = 1 << 40
VIDEO = "video/mp4"


async def file_response(
    state: EmulatorState, request: Request, videos: dict[str, bytes], task_id: str
) -> Response:
    """``GET /v1/files/{task_id}/video.mp4``: the sample clip of the task's aspect ratio (its frame
    size is the ``size`` the envelope reports), once the task is completed."""
    counters = state.counters
    counters["downloads"] += 1
    has_auth = "authorization" in request.headers
    if has_auth:
        counters["download_auth_headers"] += 1
    state.downloads_log.append(
        {
            "task_id": task_id,
            "authorization": has_auth,
            "host": request.headers.get("host"),
            "at": iso(time.time()),
        }
    )
    fault = state.faults.take("download") if state.faults else None
    if fault is not None:
        early = await pre_fault(state, request, fault, "download")
        if early is not None:
            return early
    task = state.get(task_id)
    if task is None or task.status_at() != "completed":
        state.counters["not_found"] += 1
        why = "no such task" if task is None else "the video is not ready"
        return await finish(
            state, request, fault, json_error(state, 404, "not_found", f"task_id: {why}"), None
        )
    data = videos.get(task.params.get("aspect_ratio", "16:9"), videos["16:9"])
    return await _ranged(state, request, fault, len(data), lambda start, n: _bytes_chunks(data, start, n))


async def blob_response(state: EmulatorState, request: Request) -> Response:
    """``GET /v1/files/blob?bytes=N``: ``N`` synthetic bytes, streamed in 1 MiB chunks."""
    fault = state.faults.take("blob") if state.faults else None
    if fault is not None:
        early = await pre_fault(state, request, fault, "blob")
        if early is not None:
            return early
    raw = request.query_params.get("bytes", "")
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_BLOB_BYTES:
        response = json_error(
            state, 422, "invalid_request", f"bytes: must be an integer in 0..{MAX_BLOB_BYTES}"
        )
        return await finish(state, request, fault, response, None)
    return await _ranged(state, request, fault, int(raw), _pattern_chunks)


async def _ranged(
    state: EmulatorState, request: Request, fault: Fault | None, total: int, chunks: Any
) -> Response:
    status, start, length = 200, 0, total
    headers = {"Accept-Ranges": "bytes"}
    wanted = _parse_range(request.headers.get("range"), total)
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{total}"
        refusal = json_error(state, 416, "invalid_request", "range: not satisfiable", headers)
        return await finish(state, request, fault, refusal, None)
    if isinstance(wanted, tuple):
        start, end = wanted
        status, length = 206, end - start + 1
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
    headers["Content-Length"] = str(length)
    state.count_status(status)
    if fault is not None and fault.kind == "truncated_download":
        sent = fault.bytes if fault.bytes is not None else length // 2
        return TruncatedResponse(status, headers, chunks(start, max(0, min(sent, length - 1))))
    if request.method == "HEAD":
        response: Response = Response(b"", status, headers=headers, media_type=VIDEO)
    else:
        response = StreamingResponse(chunks(start, length), status, headers=headers, media_type=VIDEO)
    return await finish(state, request, fault, response, None)


def _parse_range(header: str | None, total: int) -> tuple[int, int] | str | None:
    """``(start, end)`` inclusive, ``"unsatisfiable"``, or ``None`` to send everything."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or total == 0:
                return "unsatisfiable"
            return max(0, total - suffix), total - 1
        start = int(first)
        end = int(last) if last else total - 1
    except ValueError:
        return None
    if start >= total or end < start:
        return "unsatisfiable"
    return start, min(end, total - 1)


async def _bytes_chunks(data: bytes, start: int, length: int) -> AsyncIterator[bytes]:
    if length > 0:
        yield data[start : start + length]


async def _pattern_chunks(start: int, length: int) -> AsyncIterator[bytes]:
    offset = start % CHUNK
    while length > 0:
        if offset == 0 and length >= CHUNK:
            piece = _PATTERN
        else:
            piece = _PATTERN[offset : offset + min(length, CHUNK - offset)]
        offset = 0
        length -= len(piece)
        yield piece


class TruncatedResponse(Response):
    """Announces the full ``Content-Length``, sends only ``body``'s bytes, then closes (FIN)."""

    def __init__(self, status: int, headers: dict[str, str], body: AsyncIterator[bytes]) -> None:
        super().__init__(status_code=status)
        self._announced = headers
        self._body = body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raw = [(k.lower().encode(), v.encode()) for k, v in self._announced.items()]
        raw.append((b"content-type", VIDEO.encode()))
        await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
        async for piece in self._body:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if not await close_connection(scope, receive):
            raise ConnectionAbortedError("emulator: cannot reach the transport to cut the download")

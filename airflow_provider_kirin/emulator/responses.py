"""Response helpers and the application of fault rules around a request.

A fault acts at one of two points:

* :func:`pre_fault` before the request is processed (``http_error``, ``reset_before``,
  ``non_json``, ``delay``): a returned response replaces the real one and nothing is recorded.
* :func:`finish` after it was processed (``reset_after``, ``delay`` with ``after_processing``,
  and the envelope rewrites ``unknown_status``, ``id_alias``, ``completed_no_video``,
  ``huge_body``).

Example::

    early = await pre_fault(state, request, fault, "get")
    if early is not None:
        return early
    ...
    return await finish(state, request, fault, response, task)
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from airflow_provider_kirin.emulator.config import COSTS
from airflow_provider_kirin.emulator.faults import DEFAULT_HUGE_BYTES, Fault
from airflow_provider_kirin.emulator.state import EmulatorState, Task, dumps, error_body
from airflow_provider_kirin.emulator.transport import reset_connection

JSON = "application/json"
HTML = "text/html; charset=utf-8"


class NoResponse(Response):
    """Sends nothing: used once the connection has been reset."""

    def __init__(self) -> None:
        super().__init__(status_code=599)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


def json_response(
    state: EmulatorState, body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """An ``application/json`` response from pre-encoded ``body``; counts its status."""
    state.count_status(status)
    return Response(content=body, status_code=status, headers=headers, media_type=JSON)


def json_error(
    state: EmulatorState, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """``{"error": {"code": code, "error_message": message}}`` with ``status``."""
    return json_response(state, dumps(error_body(code, message)), status, headers)


def default_error_code(status: int, endpoint: str) -> str:
    """Error code of an injected ``http_error`` without an explicit ``code``."""
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "unauthorized" if status == 401 else "forbidden"
    if status >= 500:
        return {"create": "002011099", "get": "002011098", "lookup": "002011098"}.get(endpoint, "002011097")
    return "invalid_request" if status in (400, 422) else "http_error"


async def reset(state: EmulatorState, request: Request) -> Response:
    """Reset the connection with an RST and return a response that sends nothing."""
    state.counters["connection_resets"] += 1
    if await reset_connection(request.scope, request.receive):
        return NoResponse()
    # Not served through EmulatorServer's protocol: the best we can do is a gateway error.
    return json_error(state, 502, "connection_reset", "emulator: cannot reach the transport to reset")


async def pre_fault(state: EmulatorState, request: Request, fault: Fault, endpoint: str) -> Response | None:
    """Apply the part of ``fault`` that happens before processing; a response ends the request."""
    kind = fault.kind
    if kind == "http_error":
        status = fault.status or 503
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.body is not None:
            state.count_status(status)
            return Response(fault.body, status, headers=headers, media_type=fault.content_type or HTML)
        code = fault.code or default_error_code(status, endpoint)
        message = fault.error_message or f"emulator: injected HTTP {status}"
        return json_error(state, status, code, message, headers)
    if kind == "reset_before":
        # Take the body off the socket first, so the client has finished sending and reads the
        # RST as ECONNRESET (rather than failing mid-send); the request is still not processed.
        await request.body()
        return await reset(state, request)
    if kind == "non_json":
        status = fault.status or 200
        state.count_status(status)
        body = fault.body if fault.body is not None else "<html><body><h1>gateway</h1></body></html>"
        return Response(body, status, media_type=fault.content_type or HTML)
    if kind == "delay" and not fault.after_processing:
        await asyncio.sleep(fault.seconds)
    return None


async def finish(
    state: EmulatorState, request: Request, fault: Fault | None, response: Response, task: Task | None
) -> Response:
    """Apply the part of ``fault`` that happens after processing, then return the response."""
    if fault is None:
        return response
    kind = fault.kind
    if kind == "reset_after":
        code = response.status_code  # processed, but never sent
        state.status_codes[code] = state.status_codes.get(code, 1) - 1
        return await reset(state, request)
    if kind == "delay" and fault.after_processing:
        await asyncio.sleep(fault.seconds)
        return response
    if task is None or response.status_code >= 300:
        return response
    if kind in ("unknown_status", "id_alias", "completed_no_video", "huge_body"):
        env = rewrite_envelope(task.envelope(), fault)
        body = dumps(env)
        if kind == "huge_body":
            body = pad_to(env, fault.bytes if fault.bytes is not None else DEFAULT_HUGE_BYTES)
        return Response(body, response.status_code, media_type=JSON)
    return response


def rewrite_envelope(env: dict[str, Any], fault: Fault) -> dict[str, Any]:
    """The envelope as an envelope-rewriting fault presents it."""
    kind = fault.kind
    if kind == "unknown_status":
        env["status"] = fault.status_value
    elif kind == "id_alias":
        env = {"id": env.pop("task_id"), **env}
        env["x_new_field"] = {"introduced_in": "v2.6", "values": [1, 2, 3], "note": "clients must ignore"}
    elif kind == "completed_no_video":
        metadata = env.pop("metadata")
        env.pop("error", None)
        env["status"] = "completed"
        env["output"] = []
        cost = COSTS[(metadata["mode"], metadata["duration"])]
        env["usage"] = {"cost": cost, "discount": 0}
        env["metadata"] = metadata
    return env


def pad_to(env: dict[str, Any], size: int) -> bytes:
    """Encode ``env`` with ``metadata.padding`` sized so that the body is ``size`` bytes (if possible)."""
    env["metadata"] = {**env.get("metadata", {}), "padding": ""}
    base = len(dumps(env))
    env["metadata"]["padding"] = "x" * max(0, size - base)
    return dumps(env)

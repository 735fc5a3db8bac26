"""The emulator's FastAPI application: the Kirin API, downloads and the ``/_emulator`` control plane.

Handlers take only ``Request`` and return ready-made ``Response`` objects (no pydantic models on
the hot path) so one process can serve thousands of concurrent pollers.

Example::

    import uvicorn
    from airflow_provider_kirin.emulator import EmulatorConfig, create_app

    app = create_app(EmulatorConfig(pending_seconds=0.2))
    uvicorn.run(app, port=8765)   # faults that cut connections need EmulatorServer's protocol

API paths (all under ``config.path_prefix``): ``POST /v1/videos/generations``,
``GET /v1/tasks/{task_id}``, ``GET /v1/tasks?external_task_id=ID``,
``GET /v1/files/{task_id}/video.mp4``, ``GET /v1/files/blob?bytes=N``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from airflow_provider_kirin.emulator import controls
from airflow_provider_kirin.emulator.callbacks import CallbackSender
from airflow_provider_kirin.emulator.config import (
    CONTROL_PREFIX,
    DEFAULT_FAIL_CODE,
    SAMPLE_VIDEOS,
    EmulatorConfig,
)
from airflow_provider_kirin.emulator.downloads import blob_response, file_response
from airflow_provider_kirin.emulator.guard import GuardMiddleware
from airflow_provider_kirin.emulator.responses import (
    finish,
    json_error,
    json_response,
    pre_fault,
)
from airflow_provider_kirin.emulator.state import DuplicateExternalIdError, EmulatorState, Task
from airflow_provider_kirin.emulator.validation import CreateValidationError, validate_create

SAMPLE_VIDEO = SAMPLE_VIDEOS["16:9"]


def load_sample_video(aspect_ratio: str = "16:9") -> bytes:
    """The bundled clip served for a completed task of ``aspect_ratio``, whose frame size is the
    one its envelope reports (``VIDEO_SIZES``; rendered by ``scripts/make_sample_video.py``)."""
    package = resources.files("airflow_provider_kirin.emulator")
    return package.joinpath(SAMPLE_VIDEOS[aspect_ratio]).read_bytes()


def create_app(config: EmulatorConfig | None = None, *, state: EmulatorState | None = None) -> FastAPI:
    """Build an emulator app. Its state is ``app.state.kirin`` (an :class:`EmulatorState`).

    Pass ``state`` to share one state object with a controller (``EmulatorServer`` does).
    """
    state = state or EmulatorState(config)
    sender = CallbackSender(state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await sender.aclose()

    app = FastAPI(
        title="Kirin V2.5 Turbo emulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.kirin = state
    app.state.kirin_callbacks = sender
    app.add_middleware(PrefixMiddleware, state=state)
    app.add_middleware(GuardMiddleware, state=state)  # outermost: Host and control-plane checks first

    @app.exception_handler(StarletteHTTPException)
    async def http_exception(_: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return json_error(state, exc.status_code, code, f"path: {exc.detail}")

    videos = {ratio: load_sample_video(ratio) for ratio in SAMPLE_VIDEOS}
    KirinApiRoutes(state, sender, videos).register(app)
    controls.register(app, state)
    return app


class KirinApiRoutes:
    """The Kirin API's routes (``docs/api-contract.md``), each a method: auth, faults, the
    counters ``/_emulator/stats`` reports, then the answer the contract gives."""

    def __init__(self, state: EmulatorState, sender: CallbackSender, videos: dict[str, bytes]) -> None:
        self.state = state
        self.sender = sender
        #: The clip served for each aspect ratio.
        self.videos = videos

    def register(self, app: FastAPI) -> None:
        app.add_api_route("/v1/videos/generations", self.create_task, methods=["POST"])
        app.add_api_route("/v1/tasks/{task_id}", self.get_task, methods=["GET"])
        app.add_api_route("/v1/tasks", self.lookup_task, methods=["GET"])
        app.add_api_route("/v1/files/blob", self.download_blob, methods=["GET", "HEAD"])
        app.add_api_route("/v1/files/{task_id}/video.mp4", self.download_video, methods=["GET", "HEAD"])

    # -- the API -----------------------------------------------------------------------------------
    async def create_task(self, request: Request) -> Response:
        state = self.state
        state.counters["create_requests"] += 1
        fault = state.faults.take("create") if state.faults else None
        if fault is not None:
            early = await pre_fault(state, request, fault, "create")
            if early is not None:
                return early
        task = None
        if not self._authorized(request):
            response = self._unauthorized()
        else:
            response, task = await self._create(request)
        return await finish(state, request, fault, response, task)

    async def get_task(self, request: Request) -> Response:
        self.state.counters["gets"] += 1
        task_id = request.path_params["task_id"]
        self.state.count_status_check(task_id)  # before any fault: a check refused with 503 still counts
        return await self._read_task(request, "get", task_id, None)

    async def lookup_task(self, request: Request) -> Response:
        self.state.counters["lookups"] += 1
        external = request.query_params.get("external_task_id")
        return await self._read_task(request, "lookup", None, external)

    async def download_blob(self, request: Request) -> Response:
        counters = self.state.counters
        counters["blob_downloads"] += 1
        if "authorization" in request.headers:
            counters["blob_auth_headers"] += 1
        return await blob_response(self.state, request)

    async def download_video(self, request: Request) -> Response:
        return await file_response(self.state, request, self.videos, request.path_params["task_id"])

    # -- the steps they share ---------------------------------------------------------------------
    async def _create(self, request: Request) -> tuple[Response, Task | None]:
        state = self.state
        try:
            body = json.loads(await request.body())
        except ValueError:
            state.counters["invalid_requests"] += 1
            return json_error(state, 400, "invalid_request", "body: not valid JSON"), None
        cfg = state.config
        try:
            params = validate_create(body, reject_unknown=cfg.reject_unknown_fields)
        except CreateValidationError as exc:
            state.counters["invalid_requests"] += 1
            return json_error(state, 422, "invalid_request", str(exc)), None
        external = params["external_task_id"]
        existing = state.lookup(external) if external is not None else None
        if existing is not None:  # checked first so that a 409 does not use up a fail_task rule
            return self._conflict(existing), None
        fail = state.faults.take("create", task_rules=True, prompt=params["prompt"]) if state.faults else None
        try:
            task = state.create_task(
                params,
                self._origin(request),
                fail_code=(fail.code or DEFAULT_FAIL_CODE) if fail else None,
                fail_message=fail.error_message if fail else None,
            )
        except DuplicateExternalIdError as exc:  # pragma: no cover - raced by another thread
            return self._conflict(exc.existing), None
        if task.callback_url:
            self.sender.schedule(task)
        return json_response(state, task.envelope_bytes(), cfg.create_status_code), task

    async def _read_task(
        self, request: Request, endpoint: str, task_id: str | None, external: str | None
    ) -> Response:
        state = self.state
        fault = state.faults.take(endpoint) if state.faults else None
        if fault is not None:
            early = await pre_fault(state, request, fault, endpoint)
            if early is not None:
                return early
        task = None
        if not self._authorized(request):
            response = self._unauthorized()
        elif endpoint == "lookup" and not external:
            state.counters["invalid_requests"] += 1
            response = json_error(state, 422, "invalid_request", "external_task_id: query parameter required")
        else:
            task = state.get(task_id) if task_id is not None else state.lookup(external or "")
            if task is None:
                state.counters["not_found"] += 1
                what = f"task_id {task_id!r}" if task_id is not None else f"external_task_id {external!r}"
                response = json_error(state, 404, "not_found", f"task: no task with {what}")
            else:
                response = json_response(state, task.envelope_bytes())
        return await finish(state, request, fault, response, task)

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization")
        if not header:
            return False
        scheme, _, key = header.partition(" ")
        return scheme.lower() == "bearer" and key.strip() == self.state.config.api_key

    def _unauthorized(self) -> Response:
        self.state.counters["unauthorized"] += 1
        return json_error(
            self.state,
            401,
            "unauthorized",
            "authorization: missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _conflict(self, existing: Task) -> Response:
        self.state.counters["conflicts"] += 1
        message = (
            f"external_task_id: {existing.external_task_id!r} is already used by task {existing.task_id}"
        )
        return json_error(self.state, 409, "duplicate_external_task_id", message)

    def _origin(self, request: Request) -> str:
        """Where this client reached us: the origin of the video URLs it is given."""
        scope = request.scope
        server = scope.get("server") or ("127.0.0.1", 0)
        base = self.state.config.download_base_url
        if base:
            return base.replace("{port}", str(server[1]))
        host = request.headers.get("host") or f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}"


class PrefixMiddleware:
    """Serve API paths only under ``config.path_prefix`` (read per request, so it can change).

    With a prefix, ``/gateway/v1/tasks/x`` is routed as ``/v1/tasks/x`` and the bare
    ``/v1/tasks/x`` answers 404. ``/_emulator`` control paths are never prefixed.
    """

    def __init__(self, app: Any, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        prefix = self.state.config.path_prefix
        if prefix and scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(prefix + "/"):
                scope["path"] = path[len(prefix) :]
            elif not path.startswith(CONTROL_PREFIX):
                response = json_error(self.state, 404, "not_found", f"path: {path} is not served")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

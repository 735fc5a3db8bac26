"""The ``/_emulator`` control plane (never under ``path_prefix``). Every route but ``health`` needs
the API key as a bearer token, refuses cross-site requests and takes JSON bodies only
(``emulator/guard.py``); ``GET /_emulator/config`` never shows the key.

=========  ==========================================  =========================================
method     path                                        effect
=========  ==========================================  =========================================
GET        /_emulator/health                           ``{"ok": true}``
GET        /_emulator/stats                            counters (see ``EmulatorState.stats``)
GET        /_emulator/faults                           active rules with remaining counts
POST       /_emulator/faults                           add one rule (object) or several (list)
DELETE     /_emulator/faults                           remove all rules
POST       /_emulator/reset                            forget tasks, counters, logs and rules
GET/PATCH  /_emulator/config                           read / change settings (JSON object)
GET        /_emulator/tasks                            ``[{"task_id", "external_task_id", "status",
                                                       "status_checks"}]``
POST       /_emulator/tasks/{task_id}/complete         finish the task as ``completed`` now
POST       /_emulator/tasks/{task_id}/fail?code=C      finish it as ``failed`` now (code optional)
GET        /_emulator/downloads                        recent video downloads (auth header seen?)
GET        /_emulator/callbacks                        callback delivery log
=========  ==========================================  =========================================
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from airflow_provider_kirin.emulator.config import CONTROL_PREFIX, DEFAULT_FAIL_CODE
from airflow_provider_kirin.emulator.state import EmulatorState, dumps, error_body


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status, media_type="application/json")


def _bad(message: str, status: int = 422) -> Response:
    return _json(error_body("invalid_request", message), status)


async def _read_json(request: Request) -> Any:
    raw = await request.body()
    return json.loads(raw) if raw.strip() else None


def register(app: FastAPI, state: EmulatorState) -> None:
    """Add the control routes for ``state`` to ``app``."""
    p = CONTROL_PREFIX

    @app.get(f"{p}/health")
    async def health() -> Response:
        return _json({"ok": True})

    @app.get(f"{p}/stats")
    async def stats() -> Response:
        return _json(state.stats())

    @app.get(f"{p}/faults")
    async def list_faults() -> Response:
        return _json(state.faults.snapshot())

    @app.post(f"{p}/faults")
    async def add_faults(request: Request) -> Response:
        try:
            data = await _read_json(request)
        except ValueError:
            return _bad("body: not valid JSON", 400)
        rules = data if isinstance(data, list) else [data]
        try:
            added = [state.faults.add(rule) for rule in rules]
        except ValueError as exc:
            return _bad(str(exc))
        return _json({"added": [f.to_dict() for f in added], "active": state.faults.snapshot()})

    @app.delete(f"{p}/faults")
    async def clear_faults() -> Response:
        state.faults.clear()
        return _json({"active": []})

    @app.post(f"{p}/reset")
    async def reset() -> Response:
        state.reset()
        return _json({"reset": True})

    @app.get(f"{p}/config")
    async def get_config() -> Response:
        return _json(state.config.to_dict())

    @app.patch(f"{p}/config")
    async def patch_config(request: Request) -> Response:
        try:
            changes = await _read_json(request)
        except ValueError:
            return _bad("body: not valid JSON", 400)
        if not isinstance(changes, dict):
            return _bad("body: must be a JSON object")
        try:
            state.config = state.config.replace(**changes)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return _json(state.config.to_dict())

    @app.get(f"{p}/tasks")
    async def list_tasks() -> Response:
        tasks = list(state.tasks.values())
        return _json(
            [
                {
                    "task_id": t.task_id,
                    "external_task_id": t.external_task_id,
                    "status": t.status_at(),
                    "status_checks": state.status_checks.get(t.task_id, 0),
                }
                for t in tasks
            ]
        )

    @app.post(f"{p}/tasks/{{task_id}}/complete")
    async def complete(request: Request) -> Response:
        try:
            task = state.complete_task(request.path_params["task_id"])
        except KeyError:
            return _json(error_body("not_found", "task_id: no such task"), 404)
        return _json(task.envelope())

    @app.post(f"{p}/tasks/{{task_id}}/fail")
    async def fail(request: Request) -> Response:
        code = request.query_params.get("code") or DEFAULT_FAIL_CODE
        message = request.query_params.get("message")
        try:
            task = state.fail_task(request.path_params["task_id"], code, message)
        except KeyError:
            return _json(error_body("not_found", "task_id: no such task"), 404)
        return _json(task.envelope())

    @app.get(f"{p}/downloads")
    async def downloads() -> Response:
        return _json(list(state.downloads_log))

    @app.get(f"{p}/callbacks")
    async def callbacks() -> Response:
        return _json(list(state.callbacks_log))

"""Hooks for the Kirin text-to-video API: :class:`KirinHook` (sync, for workers) and
:class:`KirinAsyncHook` (async, for triggers).

Both are thin transports: what to send and what a response means lives in ``protocol.py``, the
retry policy in ``retry.py``, the waiting logic in ``polling.py``.

In a TaskFlow task::

    from airflow.sdk import task

    @task
    def generate(prompt: str) -> dict:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        hook = KirinHook(kirin_conn_id="kirin_default")
        created = hook.create_task(prompt, duration=5, external_task_id="my-run-42")
        done = hook.wait_for_task(created.task_id, poll_interval=10, timeout=1800)
        hook.download_video(done.video_urls[0], "/tmp/out.mp4")
        return done.to_result()
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests
from tenacity import AsyncRetrying, Retrying

from airflow_provider_kirin._compat import (
    BaseHook,
    aextra_dejson,
    aget_connection,
    amask_secret,
    legacy_connection_form_widgets,
    legacy_ui_field_behaviour,
    mask_secret,
)
from airflow_provider_kirin.config import CONN_TYPE, DEFAULT_CONN_ID, KirinConnectionConfig
from airflow_provider_kirin.defaults import MAX_CONSECUTIVE_POLL_ERRORS
from airflow_provider_kirin.download import (
    DEFAULT_MAX_BYTES,
    StoredVideo,
    as_destination,
    check_url,
    store_video,
)
from airflow_provider_kirin.exceptions import (
    KirinError,
    KirinResultParsingError,
    KirinValidationError,
)
from airflow_provider_kirin.models import KirinTask, KirinVideoRequest, validate_model
from airflow_provider_kirin.polling import PollState
from airflow_provider_kirin.protocol import ApiCall, KirinProtocol
from airflow_provider_kirin.retry import TransientKirinError, retry_kwargs

if TYPE_CHECKING:
    import aiohttp
    from airflow.sdk import ObjectStoragePath

#: Failed generations one external id may be resubmitted after (``<id>``, ``<id>.g2``, ...).
MAX_GENERATIONS_PER_ID = 50


def generation_id(external_task_id: str, generation: int) -> str:
    """The id of the ``generation``-th submission under one external id: ``<id>``, ``<id>.g2``, ..."""
    return external_task_id if generation == 1 else f"{external_task_id}.g{generation}"


class _KirinHookBase(BaseHook):
    conn_name_attr = "kirin_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Kirin"

    def __init__(self, kirin_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kirin_conn_id = kirin_conn_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kirin_conn_id={self.kirin_conn_id!r})"


class KirinHook(_KirinHookBase):
    """Sync Kirin client for workers: one pooled ``requests.Session`` per hook.

    :param kirin_conn_id: The Airflow connection of type ``kirin`` (host = base URL, password = key).
    """

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 3.0/3.1 (3.2+ reads it from the provider info)."""
        return legacy_ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields on Airflow 3.0/3.1 (3.2+ reads the provider info)."""
        return legacy_connection_form_widgets()

    @cached_property
    def config(self) -> KirinConnectionConfig:
        conn = self.get_connection(self.kirin_conn_id)
        if conn.password:
            mask_secret(conn.password)
        config = KirinConnectionConfig.from_connection(conn)
        if not config.verify_ssl:
            self.log.warning("TLS verification is OFF for Kirin connection %r.", self.kirin_conn_id)
        return config

    @cached_property
    def protocol(self) -> KirinProtocol:
        return KirinProtocol(self.config)

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.verify = self.config.verify_ssl
        return session

    def get_conn(self) -> requests.Session:
        """The pooled HTTP session (API key not attached; it is added per API request)."""
        return self.session

    # -- transport -----------------------------------------------------------------------------
    def _send_once(self, call: ApiCall) -> KirinTask | None:
        config = self.config
        try:
            response = self.session.request(
                call.method,
                call.url,
                params=call.params,
                json=call.body,
                headers=self.protocol.headers(),
                timeout=(config.connect_timeout, config.timeout),
                stream=True,
            )
            with response:
                body, truncated = _read_capped(response.iter_content(65536), config.max_response_bytes)
        except requests.RequestException as err:
            raise self.protocol.transport_failure(call, err, reached_server=_requests_reached(err)) from None
        return self.protocol.interpret(
            call, response.status_code, response.headers, body, truncated=truncated
        )

    def _send(self, call: ApiCall) -> KirinTask | None:
        for attempt in Retrying(**retry_kwargs(self.config, call.label)):
            with attempt:
                return self._send_once(call)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- API -----------------------------------------------------------------------------------
    def create_task(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        duration: int | str = 5,
        aspect_ratio: str = "16:9",
        mode: str = "std",
        watermark: bool = False,
        callback_url: str | None = None,
        external_task_id: str | None = None,
    ) -> KirinTask:
        """Submit one generation and return its task. Validates every field first (no request on
        bad input). With an ``external_task_id``, retries are safe: a retry after a lost response
        looks the id up before it creates again. Without one, a create that may have reached the
        server is never retried."""
        request = KirinVideoRequest.build(
            prompt=prompt,
            negative_prompt=negative_prompt,
            duration=duration,
            aspect_ratio=aspect_ratio,
            mode=mode,
            watermark=watermark,
            callback_url=callback_url,
            external_task_id=external_task_id,
        )
        return self.submit(request)

    def submit(self, request: KirinVideoRequest) -> KirinTask:
        """Create a task from a validated request (see :meth:`create_task`)."""
        call = self.protocol.create(request)
        recheck = False
        for attempt in Retrying(**retry_kwargs(self.config, call.label)):
            with attempt:
                if recheck and call.external_task_id:
                    existing = self._send_once(self.protocol.lookup(call.external_task_id))
                    if existing is not None:
                        self.log.info(
                            "Kirin task %s was created by an earlier try; reusing it.", existing.task_id
                        )
                        return existing
                try:
                    created = self._send_once(call)
                except TransientKirinError as err:
                    recheck = recheck or err.may_have_created
                    raise
                if created is None:  # pragma: no cover - a create never answers "not found" as None
                    raise KirinResultParsingError("Kirin create returned no task.")
                return created
        raise AssertionError("unreachable")  # pragma: no cover

    def submit_idempotent(self, request: KirinVideoRequest) -> tuple[KirinTask, bool]:
        """Submit at most one paid generation per external id; return ``(task, reused)``.

        Looks ``<id>``, ``<id>.g2``, ``<id>.g3``, ... up in turn: the first task that is pending,
        processing (or in a status not seen before) or completed with a video is reused; each one
        that ended ``failed``, or ``completed`` without a video URL (nothing to keep, so no retry
        could ever succeed with it), moves on to the next id; the first id with no task is
        created. So a retry after a failed generation pays for a new one under a new,
        deterministic id, and a retry after anything else pays for nothing.
        """
        if not request.external_task_id:
            raise KirinValidationError("external_task_id=None is invalid here; allowed: a non-empty string")
        base = request.external_task_id
        for generation in range(1, MAX_GENERATIONS_PER_ID + 1):
            candidate = generation_id(base, generation)
            existing = self.get_task_by_external_id(candidate)
            if existing is None:
                retry_request = validate_model(
                    KirinVideoRequest, {**request.to_payload(), "external_task_id": candidate}
                )
                return self.submit(retry_request), False
            unusable = existing.is_failed or (existing.is_completed and not existing.video_urls)
            if not unusable:
                return existing, True
            self.log.info(
                "Kirin task %s (external id %s) ended %s (%s); the next try uses a new id.",
                existing.task_id,
                candidate,
                existing.status if existing.is_failed else "without a video",
                existing.error_code or "no code",
            )
        raise KirinValidationError(
            f"external_task_id={base!r} already has {MAX_GENERATIONS_PER_ID} failed generations; "
            "allowed: an id with fewer. Use a new external_task_id."
        )

    def get_task(self, task_id: str) -> KirinTask:
        """The task's current envelope (retried on 429/5xx/transport errors)."""
        task = self._send(self.protocol.get(task_id))
        assert task is not None
        return task

    def get_task_by_external_id(self, external_task_id: str) -> KirinTask | None:
        """The task created with this ``external_task_id``, or ``None`` if there is none (404)."""
        return self._send(self.protocol.lookup(external_task_id))

    def wait_for_task(
        self,
        task_id: str,
        poll_interval: float = 10.0,
        timeout: float = 1800.0,
        *,
        first_poll_delay: float = 0.0,
        max_consecutive_errors: int = MAX_CONSECUTIVE_POLL_ERRORS,
        expected_seconds: float | None = None,
    ) -> KirinTask:
        """Poll until the task ends; return it when ``completed``.

        Checks after ``first_poll_delay`` seconds (plus a random phase of up to 10 % of the
        interval), then every ``poll_interval``, and once more at the deadline ``timeout``
        seconds from now. Raises the typed error of a ``failed`` task,
        :class:`KirinTaskTimeoutError` at the deadline, and :class:`KirinStatusCheckError`
        after ``max_consecutive_errors`` failed checks in a row. With ``expected_seconds``,
        checks come twice as often around then, within the same request budget (see
        ``PollState.is_due``).
        """
        state = PollState(
            task_id=task_id,
            deadline=time.time() + timeout,
            poll_interval=poll_interval,
            max_consecutive_errors=max_consecutive_errors,
            expected_seconds=expected_seconds,
        )
        call = self.protocol.get(task_id)
        time.sleep(state.first_delay(first_poll_delay))
        while True:
            retry_after = None
            try:
                task = self._send_once(call)
            except TransientKirinError as err:
                retry_after = state.observe_error(err)
            else:
                assert task is not None
                if (done := state.observe(task)) is not None:
                    return done
            if state.expired():
                raise state.timeout_error()
            time.sleep(state.next_delay(retry_after))

    def download_video(self, url: str, path: str | os.PathLike[str] | ObjectStoragePath) -> Any:
        """Stream a video to ``path`` in 64 KiB chunks (constant memory); return where it landed.

        ``path`` is a local file or directory, or an ``ObjectStoragePath``/``scheme://`` URL
        (``s3://``, ``gs://``... through Airflow's object storage). Completed only when every byte
        arrived; otherwise nothing is left behind (see ``download.py``). The API key is sent only
        when the URL is on the API's own origin, never to a file host.
        """
        return self.store_video(url, path).path

    def store_video(
        self,
        url: str,
        path: str | os.PathLike[str] | ObjectStoragePath,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        checksum: bool = False,
    ) -> StoredVideo:
        """:meth:`download_video`, returning the stored path with its byte size, SHA-256 and type."""
        origin = check_url(url)
        destination = as_destination(path, url)
        headers = self.protocol.headers() if origin == self.config.origin else {"Accept": "*/*"}
        stored = store_video(
            self.session,
            url,
            destination,
            headers=headers,
            timeout=(self.config.connect_timeout, self.config.timeout),
            max_bytes=max_bytes,
            checksum=checksum,
        )
        self.log.info("Stored %d bytes of video at %s", stored.size, stored.path)
        return stored

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated request (a lookup of an id that does not exist)."""
        try:
            probe = f"airflow-connection-test-{uuid.uuid4().hex}"
            self._send_once(self.protocol.lookup(probe))
        except TransientKirinError as err:
            return False, err.final.message
        except KirinError as err:
            return False, str(err)
        return True, f"Connected to Kirin at {self.config.base_url}; the API key was accepted."


@dataclass
class _SharedSession:
    session: aiohttp.ClientSession
    users: int = 0


# One aiohttp session per event loop and connection settings, shared by every trigger using it.
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _SharedSession]] = (
    weakref.WeakKeyDictionary()
)


class KirinAsyncHook(_KirinHookBase):
    """Async Kirin client for triggers: the reads of :class:`KirinHook`, without blocking the loop.

    The Airflow connection is read once, without blocking the loop (``_compat.aget_connection``);
    HTTP goes through one ``aiohttp.ClientSession`` shared by every hook on the same event loop and connection
    settings, closed when the last of them calls :meth:`close`. Use it as an async context manager::

        async with KirinAsyncHook("kirin_default") as hook:
            task = await hook.get_task(task_id)
    """

    def __init__(self, kirin_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(kirin_conn_id, **kwargs)
        self._config: KirinConnectionConfig | None = None
        self._protocol: KirinProtocol | None = None
        self._lease: tuple[asyncio.AbstractEventLoop, tuple[Any, ...]] | None = None

    async def __aenter__(self) -> KirinAsyncHook:
        await self.get_config()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get_config(self) -> KirinConnectionConfig:
        """Read the connection once (without blocking the loop) and register the key with the masker."""
        if self._config is None:
            conn = await aget_connection(self.kirin_conn_id)
            if conn.password:
                await amask_secret(conn.password)
            extra = await aextra_dejson(conn)
            self._config = KirinConnectionConfig.from_connection(conn, extra)
            self._protocol = KirinProtocol(self._config)
            if not self._config.verify_ssl:
                self.log.warning("TLS verification is OFF for Kirin connection %r.", self.kirin_conn_id)
        return self._config

    async def _session(self) -> aiohttp.ClientSession:
        import aiohttp

        config = await self.get_config()
        loop = asyncio.get_running_loop()
        key = (config.base_url, config.verify_ssl, config.connect_timeout, config.timeout)
        per_loop = _SESSIONS.setdefault(loop, {})
        shared = per_loop.get(key)
        if shared is None or shared.session.closed:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=config.verify_ssl, limit=100),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=config.connect_timeout, sock_read=config.timeout
                ),
            )
            shared = per_loop[key] = _SharedSession(session)
        if self._lease is None:
            shared.users += 1
            self._lease = (loop, key)
        return shared.session

    async def close(self) -> None:
        """Release this hook's share of the session; the last user closes it."""
        if self._lease is None:
            return
        loop, key = self._lease
        self._lease = None
        shared = _SESSIONS.get(loop, {}).get(key)
        if shared is None:
            return
        shared.users -= 1
        if shared.users <= 0:
            _SESSIONS[loop].pop(key, None)
            await shared.session.close()

    async def _send_once(self, call: ApiCall) -> KirinTask | None:
        import aiohttp

        session = await self._session()
        assert self._protocol is not None
        assert self._config is not None
        try:
            async with session.request(
                call.method, call.url, params=call.params, json=call.body, headers=self._protocol.headers()
            ) as response:
                body, truncated = await _aread_capped(response, self._config.max_response_bytes)
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            raise self._protocol.transport_failure(call, err, reached_server=_aiohttp_reached(err)) from None
        return self._protocol.interpret(call, status, headers, body, truncated=truncated)

    async def _send(self, call: ApiCall) -> KirinTask | None:
        config = await self.get_config()
        async for attempt in AsyncRetrying(**retry_kwargs(config, call.label)):
            with attempt:
                return await self._send_once(call)
        raise AssertionError("unreachable")  # pragma: no cover

    async def protocol(self) -> KirinProtocol:
        await self.get_config()
        assert self._protocol is not None
        return self._protocol

    async def get_task(self, task_id: str) -> KirinTask:
        """The task's current envelope (retried on 429/5xx/transport errors)."""
        task = await self._send((await self.protocol()).get(task_id))
        assert task is not None
        return task

    async def get_task_by_external_id(self, external_task_id: str) -> KirinTask | None:
        """The task created with this ``external_task_id``, or ``None`` if there is none (404)."""
        return await self._send((await self.protocol()).lookup(external_task_id))

    async def poll_once(self, task_id: str) -> KirinTask:
        """One status check, not retried: a transient failure raises ``TransientKirinError`` so the
        caller's poll loop can count it as "not yet"."""
        task = await self._send_once((await self.protocol()).get(task_id))
        assert task is not None
        return task


# -- helpers -------------------------------------------------------------------------------------
def _read_capped(chunks: Any, limit: int) -> tuple[bytes, bool]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            return bytes(buffer[:limit]), True
    return bytes(buffer), False


async def _aread_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    buffer = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        buffer += chunk
        if len(buffer) > limit:
            return bytes(buffer[:limit]), True
    return bytes(buffer), False


def _requests_reached(error: requests.RequestException) -> bool:
    """Whether the request may have reached the server: False only when no connection was made."""
    if isinstance(error, requests.ConnectTimeout):
        return False
    if isinstance(error, requests.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        text = f"{type(reason).__name__} {reason}" if reason is not None else str(error)
        return not any(
            marker in text
            for marker in (
                "NewConnectionError",
                "Connection refused",
                "Name or service not known",
                "NameResolution",
            )
        )
    return True


def _aiohttp_reached(error: BaseException) -> bool:
    import aiohttp

    return not isinstance(error, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))

"""Hooks for the Kirin text-to-video API: :class:`KirinHook` (sync, for workers) and
:class:`KirinAsyncHook` (async, for triggers).

Both are thin transports: what to send and what a response means lives in ``protocol.py``; when
to retry, look up, wait or give up lives in the core's plans (``core/steps.py``); a hook only
sends one request at a time and sleeps when a plan asks it to (:meth:`KirinHook.run`).

In a TaskFlow task::

    from airflow.sdk import task

    @task
    def generate(prompt: str) -> dict:
        from airflow_provider_kirin.hooks.kirin import KirinHook

        hook = KirinHook(kirin_conn_id="kirin_default")
        created = hook.create_task(prompt, duration=5, external_task_id="my-run-42")
        done = hook.wait_for_task(created.task_id)  # the provider's defaults: first check after 20 s
        stored = hook.download_video(done.video_urls[0], "/tmp/out.mp4")  # stored.path, .size
        return done.to_result()

Every request is counted in Airflow's metrics (``metrics.py``), and ``download_video`` reports the
file it wrote to Airflow's hook lineage collector, so such a task has lineage too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from typing_extensions import Unpack

from airflow_provider_kirin._compat import (
    BaseHook,
    aextra_dejson,
    aget_connection,
    amask_secret,
    get_hook_lineage_collector,
    legacy_connection_form_widgets,
    legacy_ui_field_behaviour,
    mask_secret,
    warm_stats,
)
from airflow_provider_kirin.core import defaults
from airflow_provider_kirin.core.budget import Budget, SpendPlan, kind_of, parse_usd, plan_spend
from airflow_provider_kirin.core.config import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    KirinConnectionConfig,
    connection_type_info,
)
from airflow_provider_kirin.core.idempotency import create_plan, find_plan, get_plan, lookup_plan, submit_plan
from airflow_provider_kirin.core.retry import SharedPause, TransientKirinError
from airflow_provider_kirin.core.steps import Plan, PlanRunner, Sleep
from airflow_provider_kirin.core.waiting import Outcome, Wait, error_seconds_from_count, wait_plan
from airflow_provider_kirin.exceptions import (
    KirinAuthError,
    KirinError,
    KirinServiceError,
    KirinUnreachableError,
)
from airflow_provider_kirin.io.deadline import deadline_session, request_deadline
from airflow_provider_kirin.io.storage import (
    DEFAULT_MAX_BYTES,
    StoredVideo,
    VideoSources,
    as_destination,
    location,
    store_video,
)
from airflow_provider_kirin.metrics import KirinMetrics
from airflow_provider_kirin.models import KirinTask, KirinVideoRequest, RequestArgs
from airflow_provider_kirin.protocol import ApiCall, KirinProtocol, plain_reason

if TYPE_CHECKING:
    from collections.abc import Sequence
    from decimal import Decimal

    import aiohttp
    from airflow.sdk import ObjectStoragePath

T = TypeVar("T")
#: Answers larger than this are parsed in a worker thread, not on the triggerer's event loop.
INLINE_PARSE_BYTES = 64 * 1024

log = logging.getLogger(__name__)


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

    @cached_property
    def metrics(self) -> KirinMetrics:
        """What this hook's run loop reports to Airflow's metrics (``metrics.py``)."""
        return KirinMetrics(self.kirin_conn_id)

    def _config_read(self, config: KirinConnectionConfig) -> KirinConnectionConfig:
        if not config.verify_ssl:
            why = (
                "extra skip_tls_verification is on"
                if config.skip_tls_verification
                else "legacy extra verify_ssl is false; set skip_tls_verification instead"
            )
            self.log.warning("TLS verification is OFF for Kirin connection %r (%s).", self.kirin_conn_id, why)
        return config


class KirinHook(_KirinHookBase):
    """Sync Kirin client for workers: one pooled ``requests.Session`` per hook.

    :param kirin_conn_id: The Airflow connection of type ``kirin`` (host = base URL, password = key).
    """

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 3.0/3.1 (3.2+ reads it from the provider info)."""
        return legacy_ui_field_behaviour(connection_type_info())

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields on Airflow 3.0/3.1 (3.2+ reads the provider info)."""
        return legacy_connection_form_widgets(connection_type_info())

    @cached_property
    def config(self) -> KirinConnectionConfig:
        conn = self.get_connection(self.kirin_conn_id)
        if conn.password:
            mask_secret(conn.password)
        return self._config_read(KirinConnectionConfig.from_connection(conn))

    @cached_property
    def protocol(self) -> KirinProtocol:
        return KirinProtocol(self.config)

    @cached_property
    def session(self) -> requests.Session:
        session = deadline_session()
        session.verify = self.config.verify_ssl
        return session

    @cached_property
    def video_sources(self) -> VideoSources:
        """Where this connection's videos may come from (``io/storage.VideoSources``)."""
        return VideoSources.of(self.config.base_url, self.config.allowed_video_hosts)

    def get_conn(self) -> requests.Session:
        """The pooled HTTP session (API key not attached; it is added per API request)."""
        return self.session

    # -- transport -----------------------------------------------------------------------------
    def run(self, plan: Plan[T]) -> T:
        """Carry out a plan (``core/steps.py``): send each request, sleep when asked. The only loop
        of the sync transport: every operation below is a plan run here, so its runner is also
        where the provider's metrics are taken (``metrics.py``)."""
        runner = PlanRunner(plan, self.metrics)
        while (step := runner.next_step()) is not None:
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                continue
            try:
                runner.answer(self._send_once(step.call, step.budget))
            except (TransientKirinError, KirinError) as err:
                runner.fail(err)
        return runner.result

    def _send_once(self, call: ApiCall, budget: float | None = None) -> KirinTask | None:
        """One request, in all at most ``request_timeout`` seconds (or ``budget``, if less)."""
        config = self.config
        seconds = config.request_timeout if budget is None else min(budget, config.request_timeout)
        try:
            with request_deadline(seconds, f"Kirin {call.label}"):
                response = self.session.request(
                    call.method,
                    call.url,
                    params=call.params,
                    json=call.body,
                    headers=self.protocol.headers(),
                    timeout=(min(config.connect_timeout, seconds), config.timeout),
                    stream=True,
                    # Per request: a session's verify=False loses to REQUESTS_CA_BUNDLE in the environment.
                    verify=config.verify_ssl,
                )
                with response:
                    body, truncated = _read_capped(response.iter_content(65536), config.max_response_bytes)
        except requests.RequestException as err:
            raise self.protocol.transport_failure(call, err) from None
        return self.protocol.interpret(
            call, response.status_code, response.headers, body, truncated=truncated
        )

    # -- API -----------------------------------------------------------------------------------
    def create_task(self, prompt: str, **fields: Unpack[RequestArgs]) -> KirinTask:
        """Submit one generation and return its task. ``fields`` are the other request fields
        (``negative_prompt``, ``duration``, ``aspect_ratio``, ``mode``, ``watermark``,
        ``callback_url``, ``external_task_id``); one left out takes the request model's default.
        Validates every field first (no request on bad input). With an ``external_task_id``,
        retries are safe: a retry after a lost response looks the id up before it creates again.
        Without one, a create that may have reached the server is never retried."""
        return self.submit(KirinVideoRequest.build(prompt=prompt, **fields))

    def submit(self, request: KirinVideoRequest) -> KirinTask:
        """Create a task from a validated request (see :meth:`create_task`); a 409 for its
        ``external_task_id`` is resolved by looking the id up (``idempotency.create_plan``)."""
        return self.run(create_plan(self.protocol, request))[0]

    def submit_idempotent(self, request: KirinVideoRequest) -> tuple[KirinTask, bool]:
        """Submit at most one paid generation per external id; return ``(task, reused)``.

        Looks ``<id>``, ``<id>.g2``, ``<id>.g3``, ... up in turn: the first task that is pending,
        processing (or in a status not seen before) or completed with a video is reused; each one
        that ended unusable moves on to the next id; the first id with no task is created. So a
        retry after a failed generation pays for a new one under a new, deterministic id, and a
        retry after anything else pays for nothing (``idempotency.submit_plan``).
        """
        return self.run(submit_plan(self.protocol, request))

    def get_task(self, task_id: str) -> KirinTask:
        """The task's current envelope (retried on 429/5xx/transport errors)."""
        return self.run(get_plan(self.protocol, task_id))

    def get_task_by_external_id(self, external_task_id: str) -> KirinTask | None:
        """The task created with this ``external_task_id``, or ``None`` if there is none (404)."""
        return self.run(lookup_plan(self.protocol, external_task_id))

    def wait(self, wait: Wait) -> Outcome:
        """Drive ``wait`` to its outcome (``waiting.wait_plan``)."""
        self.metrics.watch(wait.task_id)
        return self.run(wait_plan(self.protocol, wait))

    def wait_for_task(
        self,
        task_id: str,
        poll_interval: float = defaults.POLL_INTERVAL,
        timeout: float = defaults.TIMEOUT,
        *,
        first_poll_delay: float = defaults.FIRST_POLL_DELAY,
        max_poll_error_seconds: float = defaults.MAX_POLL_ERROR_SECONDS,
        expected_seconds: float | None = None,
        max_consecutive_errors: int | None = None,
    ) -> KirinTask:
        """Poll until the task ends; return it when ``completed`` with a video.

        Checks after ``first_poll_delay`` seconds (plus a random phase of up to 10 % of the
        interval), then every ``poll_interval``, and once more at the deadline ``timeout``
        seconds from now. Raises the typed error of a ``failed`` task,
        :class:`KirinTaskTimeoutError` at the deadline, and the last check's own error once
        status checks have failed for ``max_poll_error_seconds`` in a row
        (``max_consecutive_errors``, a count, is its deprecated older form). With
        ``expected_seconds``, checks come twice as often around then, within the same request
        budget (``waiting.Wait.is_due``).
        """
        if max_consecutive_errors is not None:
            max_poll_error_seconds = error_seconds_from_count(max_consecutive_errors, poll_interval)
        now = time.time()
        wait = Wait(
            task_id,
            deadline=now + timeout,
            poll_interval=poll_interval,
            first_check_at=now + first_poll_delay,
            max_error_seconds=max_poll_error_seconds,
            expected_seconds=expected_seconds,
            started=now,
            logger=self.log,
        )
        return self.wait(wait).result()

    def estimate(
        self,
        requests: Sequence[KirinVideoRequest],
        *,
        max_cost: Decimal | str | float | None = None,
        concurrency: int = 10,
    ) -> SpendPlan:
        """What submitting ``requests`` (each with its ``external_task_id``, as ``submit_idempotent``
        takes them) would do, without creating anything: how many generations it would create and
        reuse, their estimated cost by kind (the connection's ``prices``), and which would not fit
        ``max_cost``. Only lookups are sent, ``concurrency`` at a time. In a TaskFlow task::

            plan = KirinHook().estimate(requests, max_cost="100")
            print(plan.sentence())  # would create 412, reuse 88, estimated $86.52 of max_cost $100
        """
        ceiling = None if max_cost is None else parse_usd("max_cost", max_cost)
        found = asyncio.run(_find_all(self.kirin_conn_id, list(requests), concurrency))
        entries = [
            (index, kind_of(request), task)
            for index, (request, task) in enumerate(zip(requests, found, strict=True))
        ]
        return plan_spend(entries, Budget(ceiling, self.config.price_table))

    def download_video(
        self,
        url: str,
        path: str | os.PathLike[str] | ObjectStoragePath,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        checksum: bool = False,
        require_video_type: bool = True,
        deadline: float | None = None,
        overwrite: bool = False,
        may_replace: Callable[[Any], bool] | None = None,
    ) -> StoredVideo:
        """Stream a video to ``path`` in 64 KiB chunks (constant memory); return where it landed
        (``.path``) with its byte size, content type and, with ``checksum``, its SHA-256.

        ``path`` is a local file or directory, or an ``ObjectStoragePath``/``scheme://`` URL
        (``s3://``, ``gs://``... through Airflow's object storage). Completed only when every byte
        arrived, within ``deadline`` seconds (default: the connection's ``download_timeout``);
        otherwise nothing is left behind (see ``io/storage.py``). The response must say it is a
        video (``Content-Type``); ``require_video_type=False`` accepts one that sends no type. The
        API key is sent only when the URL is on the API's own origin, never to a file host.

        Where a video may come from (``io/storage.VideoSources``): never ``http://`` under an
        ``https://`` API, never a loopback, private or link-local address while the API is not on
        one, unless the host is in the connection extra ``allowed_video_hosts``; each redirect is
        checked the same way. Refused before any request, as :class:`KirinValidationError`.

        An existing file at ``path`` is never replaced (:class:`KirinStorageError` names it),
        unless ``overwrite=True`` or ``may_replace(path)`` says it is the caller's own (the
        operators pass "its sidecar names this generation"); a symlink or directory at the final
        name is always refused (``io/storage.write_file``).
        """
        config = self.config
        destination = as_destination(path, url)
        stored = store_video(
            self.session,
            url,
            destination,
            headers=self.protocol.headers(),
            api_origin=config.origin,
            sources=self.video_sources,
            timeout=(config.connect_timeout, config.timeout),
            verify=config.verify_ssl,
            deadline=config.download_timeout if deadline is None else deadline,
            max_bytes=max_bytes,
            checksum=checksum,
            require_video_type=require_video_type,
            may_replace=may_replace,
            overwrite=overwrite,
        )
        self.log.info("Stored %d bytes of video at %s", stored.size, stored.path)
        self._lineage_output(location(stored.path))
        return stored

    def _lineage_output(self, where: str) -> None:
        """Tell Airflow's hook lineage collector that this hook wrote ``where`` (a URL), so a
        TaskFlow task that calls the hook gets the file in its lineage (OpenLineage reads it)."""
        collector = get_hook_lineage_collector()
        if collector is None:
            return
        try:
            collector.add_output_asset(context=self, uri=where)
        except Exception:  # lineage is never worth failing a download for
            self.log.debug("Could not record the lineage of %s", where, exc_info=True)

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated request (a lookup of an id that does not exist). The answer is
        for a person in the UI: what failed, in plain words; the detail goes to the log."""
        base_url = self.config.base_url
        try:
            probe = f"airflow-connection-test-{uuid.uuid4().hex}"
            self._send_once(self.protocol.lookup(probe))
        except (TransientKirinError, KirinError) as caught:
            err = caught.final if isinstance(caught, TransientKirinError) else caught
            self.log.warning("Kirin connection test against %s failed: %s", base_url, err.message)
            if isinstance(err, KirinUnreachableError):
                return False, f"Could not connect to {base_url}: {plain_reason(err.message)}."
            if isinstance(err, KirinAuthError):
                return False, f"Kirin at {base_url} refused the API key (HTTP {err.http_status})."
            if isinstance(err, KirinServiceError):
                return False, f"Kirin at {base_url} answered, but not as the Kirin API: {err.message}"
            return False, str(err)
        return True, f"Connected to Kirin at {base_url}; the API key was accepted."


@dataclass
class _SharedSession:
    session: aiohttp.ClientSession
    users: int = 0


#: How long the hooks of one event loop share a reading of a connection (see ``get_config``).
CONNECTION_READ_SECONDS = 30.0
Reading = tuple[KirinConnectionConfig, KirinProtocol]
# Readings per event loop and connection id: (when read, the reading; a future while in progress).
_READINGS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Future[Reading]]]
] = weakref.WeakKeyDictionary()


async def _read_connection(hook: KirinAsyncHook) -> Reading:
    """The hook's connection, read once per :data:`CONNECTION_READ_SECONDS` and event loop: hooks
    asking at once wait for the same reading (a failed one is not kept)."""
    per_loop = _READINGS.setdefault(asyncio.get_running_loop(), {})
    read_at, pending = per_loop.get(hook.kirin_conn_id, (0.0, None))
    if pending is None or time.monotonic() - read_at > CONNECTION_READ_SECONDS:
        pending = asyncio.ensure_future(_read(hook))
        per_loop[hook.kirin_conn_id] = (time.monotonic(), pending)
    try:
        return await asyncio.shield(pending)
    except BaseException:
        if per_loop.get(hook.kirin_conn_id, (0.0, None))[1] is pending and pending.done():
            del per_loop[hook.kirin_conn_id]  # the next hook tries again
        raise


def forget_connection_readings() -> None:
    """Make the next async hook of every event loop read its connection again, at once (for code
    that changes a connection and wants the change seen within :data:`CONNECTION_READ_SECONDS`,
    such as tests)."""
    for per_loop in list(_READINGS.values()):
        per_loop.clear()


async def _read(hook: KirinAsyncHook) -> Reading:
    conn = await aget_connection(hook.kirin_conn_id)
    if conn.password:
        await amask_secret(conn.password)
    extra = await aextra_dejson(conn)
    config = hook._config_read(KirinConnectionConfig.from_connection(conn, extra))
    return config, KirinProtocol(config)


# One aiohttp session per event loop and connection settings, shared by every trigger using it.
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _SharedSession]] = (
    weakref.WeakKeyDictionary()
)


class KirinAsyncHook(_KirinHookBase):
    """Async Kirin client for triggers: the operations of :class:`KirinHook`, without blocking the loop.

    The Airflow connection is read once, without blocking the loop (``_compat.aget_connection``);
    HTTP goes through one ``aiohttp.ClientSession`` shared by every hook on the same event loop
    and connection settings, closed when the last of them calls :meth:`close`. Use it as an async
    context manager::

        async with KirinAsyncHook("kirin_default") as hook:
            task = await hook.get_task(task_id)
    """

    def __init__(
        self, kirin_conn_id: str = DEFAULT_CONN_ID, *, pause: SharedPause | None = None, **kwargs: Any
    ) -> None:
        super().__init__(kirin_conn_id, **kwargs)
        #: With a :class:`SharedPause`, a 429 seen by any request slows every request down.
        self.pause = pause
        self._config: KirinConnectionConfig | None = None
        self._protocol: KirinProtocol | None = None
        self._lease: tuple[asyncio.AbstractEventLoop, tuple[Any, ...]] | None = None
        self._leased: tuple[aiohttp.ClientSession, KirinConnectionConfig, KirinProtocol] | None = None

    async def __aenter__(self) -> KirinAsyncHook:
        await self.get_config()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get_config(self) -> KirinConnectionConfig:
        """The connection's settings, read without blocking the loop, the key registered with the
        masker.

        Hooks of one event loop share a reading of the same connection for
        :data:`CONNECTION_READ_SECONDS`: a triggerer that starts a thousand waits at once reads the
        connection once (the lookup, through Airflow's secrets backends and a worker thread, is most
        of what starting a wait costs) and holds one config and protocol, not a thousand. A hook
        started later reads it again, so a changed connection is seen within that time."""
        if self._config is None:
            self._config, self._protocol = await _read_connection(self)
            await _warm_stats_once()
        return self._config

    async def get_protocol(self) -> KirinProtocol:
        """The wire protocol for this connection (read once, see :meth:`get_config`)."""
        if self._protocol is None:
            await self.get_config()
        return self._protocol  # type: ignore[return-value]  # set with the config

    async def _ready(self) -> tuple[aiohttp.ClientSession, KirinConnectionConfig, KirinProtocol]:
        """The shared session, config and protocol this hook sends with (looked up once)."""
        if self._leased is not None and not self._leased[0].closed:
            return self._leased  # every request after the first: no lookups
        import aiohttp

        config, protocol = await self.get_config(), await self.get_protocol()
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
        self._leased = (shared.session, config, protocol)
        return self._leased

    async def close(self) -> None:
        """Release this hook's share of the session; the last user closes it."""
        if self._lease is None:
            return
        loop, key = self._lease
        self._lease, self._leased = None, None
        shared = _SESSIONS.get(loop, {}).get(key)
        if shared is None:
            return
        shared.users -= 1
        if shared.users <= 0:
            _SESSIONS[loop].pop(key, None)
            await shared.session.close()

    # -- transport -----------------------------------------------------------------------------
    async def run(self, plan: Plan[T]) -> T:
        """:meth:`KirinHook.run` without blocking the loop (metrics included: sending one never
        waits, see ``metrics.py``)."""
        runner = PlanRunner(plan, self.metrics)
        while (step := runner.next_step()) is not None:
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                continue
            try:
                runner.answer(await self._send_once(step.call, step.budget))
            except (TransientKirinError, KirinError) as err:
                runner.fail(err)
        return runner.result

    async def _send_once(self, call: ApiCall, budget: float | None = None) -> KirinTask | None:
        """One request, in all at most ``request_timeout`` seconds (or ``budget``, if less)."""
        import aiohttp

        leased = self._leased
        if leased is None or leased[0].closed:
            leased = await self._ready()
        session, config, protocol = leased
        if self.pause is not None:
            await _wait_out(self.pause)
        seconds = config.request_timeout if budget is None else min(budget, config.request_timeout)
        started = time.monotonic()
        try:
            async with session.request(
                call.method,
                call.url,
                params=call.params,
                json=call.body,
                headers=protocol.headers(),
                timeout=_total_timeout(seconds, config.connect_timeout, config.timeout),
            ) as response:
                body, truncated = await _aread_capped(response, config.max_response_bytes)
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            error: BaseException = err
            if time.monotonic() - started >= seconds:
                error = asyncio.TimeoutError(
                    f"the Kirin {call.label} passed its total deadline of {seconds:.1f} s"
                )
            raise protocol.transport_failure(call, error) from None
        try:
            if len(body) > INLINE_PARSE_BYTES:  # decoding a large body would hold up the loop
                return await asyncio.to_thread(
                    protocol.interpret, call, status, headers, body, truncated=truncated
                )
            return protocol.interpret(call, status, headers, body, truncated=truncated)
        except TransientKirinError as err:
            if self.pause is not None:
                self.pause.observe(err)
            raise

    # -- API -----------------------------------------------------------------------------------
    async def get_task(self, task_id: str) -> KirinTask:
        """The task's current envelope (retried on 429/5xx/transport errors)."""
        return await self.run(get_plan(await self.get_protocol(), task_id))

    async def get_task_by_external_id(self, external_task_id: str) -> KirinTask | None:
        """The task created with this ``external_task_id``, or ``None`` if there is none (404)."""
        return await self.run(lookup_plan(await self.get_protocol(), external_task_id))

    async def submit_idempotent(self, request: KirinVideoRequest) -> tuple[KirinTask, bool]:
        """:meth:`KirinHook.submit_idempotent` without blocking the loop."""
        return await self.run(submit_plan(await self.get_protocol(), request))

    async def wait(self, wait: Wait) -> Outcome:
        """:meth:`KirinHook.wait` without blocking the loop."""
        self.metrics.watch(wait.task_id)
        return await self.run(wait_plan(await self.get_protocol(), wait))


# -- helpers -------------------------------------------------------------------------------------
async def _find_all(
    kirin_conn_id: str, requests: list[KirinVideoRequest], concurrency: int
) -> list[KirinTask | None]:
    """The reusable generation of each request (``None`` where one would be created), looked up
    ``concurrency`` at a time over one shared session (``idempotency.find_plan``)."""
    found: list[KirinTask | None] = [None] * len(requests)
    queue = iter(enumerate(requests))
    async with KirinAsyncHook(kirin_conn_id) as hook:
        protocol = await hook.get_protocol()

        async def worker() -> None:
            for index, request in queue:
                found[index] = (await hook.run(find_plan(protocol, request))).task

        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(requests))))))
    return found


_STATS_WARM = False


async def _warm_stats_once() -> None:
    """Build the metrics client in a worker thread, once per process, before the first request of
    a trigger: building it may resolve a host name, which must not happen on the event loop."""
    global _STATS_WARM
    if not _STATS_WARM:
        # Every trigger starting before the first warm-up is over waits for one of its own (in a
        # thread): none may send a metric, and so import or build the client, on the loop first.
        try:
            await asyncio.to_thread(warm_stats)
        except Exception:  # metrics are never worth failing a trigger for
            log.debug("Could not set up the metrics client", exc_info=True)
        _STATS_WARM = True


async def _wait_out(pause: SharedPause) -> None:
    """Sleep until ``pause`` is over, even if another request extends it meanwhile."""
    for _ in range(1000):  # bounded; each round waits out the longest pause seen so far
        wait = pause.remaining()
        if wait <= 0:
            return
        await asyncio.sleep(wait)


@functools.lru_cache(maxsize=64)
def _total_timeout(seconds: float, connect_timeout: float, read_timeout: float) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for one request of at most ``seconds`` in all (``total`` covers connect,
    headers and body: a server dripping bytes is cut off). The per-read timeout is left out when
    ``total`` ends the request first anyway (a status check, see ``waiting.py``): aiohttp re-arms
    that timer on every chunk it reads. Cached: most checks share one (keyed on numbers: hashing
    and comparing the connection's config on every check cost more than the timeout itself)."""
    import aiohttp

    return aiohttp.ClientTimeout(
        total=seconds,
        sock_connect=min(connect_timeout, seconds),
        sock_read=read_timeout if read_timeout < seconds else None,
    )


def _read_capped(chunks: Any, limit: int) -> tuple[bytes, bool]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            return bytes(buffer[:limit]), True
    return bytes(buffer), False


async def _aread_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    length = response.content_length
    if length is not None and length <= limit and not response.headers.get("Content-Encoding"):
        return await response.read(), False  # the common case: one read of a small, announced body
    buffer = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        buffer += chunk
        if len(buffer) > limit:
            return bytes(buffer[:limit]), True
    return bytes(buffer), False

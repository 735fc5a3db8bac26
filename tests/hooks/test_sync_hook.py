"""``KirinHook`` against the emulator over real HTTP: the API, validation, retries, downloads."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from airflow_provider_kirin.emulator import EmulatorConfig, EmulatorServer
from airflow_provider_kirin.exceptions import (
    KirinAuthError,
    KirinBadResponseError,
    KirinConflictError,
    KirinNotFoundError,
    KirinRateLimitError,
    KirinRequestRejectedError,
    KirinResultParsingError,
    KirinServiceError,
    KirinStatusCheckError,
    KirinStorageError,
    KirinTaskFailedError,
    KirinTaskTimeoutError,
    KirinUnreachableError,
    KirinValidationError,
)
from airflow_provider_kirin.hooks.kirin import KirinHook
from airflow_provider_kirin.io.storage import safe_file_name


def api_requests(server: EmulatorServer) -> int:
    stats = server.stats()
    return stats["create_requests"] + stats["gets"] + stats["lookups"]


def test_create_get_lookup_wait_download(emulator: EmulatorServer, tmp_path: Path) -> None:
    hook = KirinHook()
    created = hook.create_task(
        "a red fox", duration=10, mode="pro", aspect_ratio="1:1", external_task_id="e-1"
    )
    assert created.status == "pending"
    assert created.external_task_id == "e-1"
    assert hook.get_task(created.task_id).task_id == created.task_id
    found = hook.get_task_by_external_id("e-1")
    assert found is not None
    assert found.task_id == created.task_id
    assert hook.get_task_by_external_id("no-such-id") is None

    done = hook.wait_for_task(created.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0)
    assert done.is_completed
    assert done.cost == "1.20"
    assert done.to_result()["videos"][0]["size"] == "240x240"

    path = hook.download_video(done.video_urls[0], tmp_path / "fox.mp4").path
    with av.open(str(path)) as container:
        assert container.streams.video, "the download is a real video"
        stream = container.streams.video[0]
        # The envelope's size is the real frame size of the video served for it.
        assert f"{stream.width}x{stream.height}" == done.to_result()["videos"][0]["size"]
    assert emulator.stats()["creates"] == 1


def test_get_unknown_task_is_not_found(emulator: EmulatorServer) -> None:
    with pytest.raises(KirinNotFoundError):
        KirinHook().get_task("kt_missing")


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": ""},
        {"prompt": "p", "duration": 7},
        {"prompt": "p", "aspect_ratio": "4:3"},
        {"prompt": "p", "mode": "ultra"},
        {"prompt": "p", "negative_prompt": "n" * 2501},
        {"prompt": "p", "watermark": "yes"},
        {"prompt": "p", "callback_url": "file:///etc/passwd"},
        {"prompt": "p", "external_task_id": ""},
    ],
)
def test_bad_input_costs_nothing(emulator: EmulatorServer, fields: dict) -> None:
    prompt = fields.pop("prompt")
    with pytest.raises(KirinValidationError):
        KirinHook().create_task(prompt, **fields)
    assert api_requests(emulator) == 0


def test_429_with_retry_after_is_honoured(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 429s with ``Retry-After: 1``: the emulator counts three create requests and one create,
    and before each of the two retries the hook waited at least the second the server asked for.
    Its waits are recorded, not slept (the emulator's rule counts requests, not time)."""
    emulator.add_fault(endpoint="create", kind="http_error", status=429, retry_after="1", times=2)
    waits = record_sleeps(monkeypatch)
    task = KirinHook().create_task("p", external_task_id="rl-1")
    assert task.external_task_id == "rl-1"
    stats = emulator.stats()
    assert (stats["create_requests"], stats["creates"]) == (3, 1)
    assert len(waits) == stats["create_requests"] - 1  # one wait before each retry
    assert all(w >= 1.0 for w in waits), waits


def record_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What this thread asks ``time.sleep`` for from now on (the sync hook's waits), recorded instead
    of slept; other threads (the emulator's) sleep as usual."""
    recorded: list[float] = []
    real_sleep, this_thread = time.sleep, threading.current_thread()

    def sleep(seconds: float) -> None:
        if threading.current_thread() is this_thread:
            recorded.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    return recorded


def test_429_forever_ends_in_a_rate_limit_error(
    emulator: EmulatorServer, use_conn: Callable[..., None]
) -> None:
    use_conn(emulator, max_retries=2)
    emulator.add_fault(endpoint="get", kind="http_error", status=429, retry_after="0", times=-1)
    with pytest.raises(KirinRateLimitError) as info:
        KirinHook().get_task("kt_any")
    assert info.value.http_status == 429
    assert emulator.stats()["gets"] == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_bursts_are_ridden_out(emulator: EmulatorServer, status: int) -> None:
    task = KirinHook().create_task("p", external_task_id=f"burst-{status}")
    emulator.add_fault(endpoint="get", kind="http_error", status=status, times=4)
    assert KirinHook().get_task(task.task_id).task_id == task.task_id
    assert emulator.stats()["gets"] == 5


def test_5xx_without_a_code_after_every_retry_is_a_bad_response(
    emulator: EmulatorServer, use_conn: Callable[..., None]
) -> None:
    use_conn(emulator, max_retries=3)
    emulator.add_fault(endpoint="get", kind="http_error", status=503, body="<html>down</html>", times=-1)
    with pytest.raises(KirinBadResponseError) as info:
        KirinHook().get_task("kt_any")
    assert info.value.http_status == 503
    assert "<html>down</html>" in info.value.message
    assert emulator.stats()["gets"] == 4


def test_5xx_with_a_seed_code_raises_that_codes_class(
    emulator: EmulatorServer, use_conn: Callable[..., None]
) -> None:
    use_conn(emulator, max_retries=1)
    emulator.add_fault(endpoint="get", kind="http_error", status=500, code="002011098", times=-1)
    with pytest.raises(KirinStatusCheckError) as info:
        KirinHook().get_task("kt_any")
    assert info.value.code == "002011098"


@pytest.mark.parametrize(("status", "cls"), [(400, KirinRequestRejectedError), (403, KirinAuthError)])
def test_client_errors_are_not_retried(emulator: EmulatorServer, status: int, cls: type) -> None:
    emulator.add_fault(endpoint="get", kind="http_error", status=status, times=-1)
    with pytest.raises(cls):
        KirinHook().get_task("kt_any")
    assert emulator.stats()["gets"] == 1


def test_wrong_key_is_an_auth_error_at_once(
    kirin_emulator_factory: Callable[..., EmulatorServer], use_conn: Callable[..., None]
) -> None:
    server = kirin_emulator_factory(EmulatorConfig(api_key="the-right-key"))
    use_conn(server, api_key="a-wrong-key")
    with pytest.raises(KirinAuthError) as info:
        KirinHook().create_task("p", external_task_id="auth-1")
    assert info.value.http_status == 401
    assert "a-wrong-key" not in str(info.value)
    assert server.stats()["create_requests"] == 1


def test_a_409_is_resolved_by_lookup_and_reuses_the_holder(emulator: EmulatorServer) -> None:
    hook = KirinHook()
    first = hook.create_task("p", external_task_id="dup")
    again = hook.create_task("p", external_task_id="dup")
    assert again.task_id == first.task_id
    stats = emulator.stats()
    assert (stats["create_requests"], stats["conflicts"], stats["creates"], stats["lookups"]) == (2, 1, 1, 1)


def test_a_409_that_no_lookup_explains_is_a_clear_conflict(emulator: EmulatorServer) -> None:
    emulator.add_fault(endpoint="create", kind="http_error", status=409)
    with pytest.raises(KirinConflictError, match="finds no task") as info:
        KirinHook().create_task("p", external_task_id="ghost")
    assert "ghost" in str(info.value)
    assert emulator.stats()["creates"] == 0


def test_lost_create_response_is_resolved_by_lookup(emulator: EmulatorServer) -> None:
    emulator.add_fault(endpoint="create", kind="reset_after")
    task = KirinHook().create_task("p", external_task_id="lost-1")
    stats = emulator.stats()
    assert stats["creates"] == 1
    assert stats["create_requests"] == 1  # no second create: the lookup found the first
    assert emulator.task(task.task_id) is not None


def test_create_that_never_arrived_is_sent_again(emulator: EmulatorServer) -> None:
    emulator.add_fault(endpoint="create", kind="reset_before")
    task = KirinHook().create_task("p", external_task_id="never-1")
    stats = emulator.stats()
    assert stats["creates"] == 1
    assert task.external_task_id == "never-1"


def test_create_without_external_id_is_never_retried_blindly(emulator: EmulatorServer) -> None:
    emulator.add_fault(endpoint="create", kind="reset_after")
    with pytest.raises(KirinUnreachableError, match="not retried") as info:
        KirinHook().create_task("p")
    assert info.value.may_have_created is True
    assert not isinstance(info.value, KirinTaskFailedError)  # could not talk: not a failed generation
    assert emulator.stats()["creates"] == 1


def test_unparseable_bodies_are_retried_then_typed(
    emulator: EmulatorServer, use_conn: Callable[..., None]
) -> None:
    task = KirinHook().create_task("p", external_task_id="nj-1")
    emulator.add_fault(endpoint="get", kind="non_json", times=2)
    assert KirinHook().get_task(task.task_id).task_id == task.task_id
    use_conn(emulator, max_retries=1)
    emulator.add_fault(endpoint="get", kind="non_json", times=-1)
    with pytest.raises(KirinBadResponseError, match="gateway"):
        KirinHook().get_task(task.task_id)


def test_read_timeout_is_retried(emulator: EmulatorServer, use_conn: Callable[..., None]) -> None:
    use_conn(emulator, timeout=0.3)
    task = KirinHook().create_task("p", external_task_id="slow-1")
    emulator.add_fault(endpoint="get", kind="delay", seconds=1.0)
    assert KirinHook().get_task(task.task_id).task_id == task.task_id
    assert emulator.stats()["gets"] == 2


@pytest.mark.kirin_emulator(processing_seconds=30)
def test_wait_times_out_after_a_last_check(emulator: EmulatorServer) -> None:
    task = KirinHook().create_task("p", external_task_id="to-1")
    with pytest.raises(KirinTaskTimeoutError) as info:
        KirinHook().wait_for_task(task.task_id, poll_interval=0.2, timeout=0.5, first_poll_delay=0)
    assert info.value.task_id == task.task_id
    assert "processing" in str(info.value) or "pending" in str(info.value)


def test_wait_tolerates_unknown_statuses_and_aliases(emulator: EmulatorServer) -> None:
    task = KirinHook().create_task("p", external_task_id="unk-1")
    emulator.add_fault(endpoint="get", kind="unknown_status", times=2)
    emulator.add_fault(endpoint="get", kind="id_alias", times=2)
    done = KirinHook().wait_for_task(task.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0)
    assert done.is_completed


def test_completed_without_video_is_a_parse_error(emulator: EmulatorServer) -> None:
    task = KirinHook().create_task("p", external_task_id="nv-1")
    emulator.add_fault(endpoint="get", kind="completed_no_video", times=-1)
    with pytest.raises(KirinResultParsingError, match="no video URL"):
        KirinHook().wait_for_task(task.task_id, poll_interval=0.1, timeout=5, first_poll_delay=0)


# -- downloads -----------------------------------------------------------------------------------
def completed(hook: KirinHook, emulator: EmulatorServer, external_id: str) -> str:
    """The video URL of a new generation, finished on the emulator's side at once (these tests are
    about downloads: the wait is ``test_create_get_lookup_wait_download``'s)."""
    task = hook.create_task("p", external_task_id=external_id)
    emulator.complete_task(task.task_id)
    return hook.wait_for_task(task.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0).video_urls[0]


def test_key_goes_only_to_the_api_origin(emulator: EmulatorServer, tmp_path: Path) -> None:
    hook = KirinHook()
    url = completed(hook, emulator, "dl-1")
    hook.download_video(url, tmp_path / "same.mp4")
    assert emulator.stats()["download_auth_headers"] == 1
    other_origin = url.replace(emulator.url, emulator.alt_url)
    hook.download_video(other_origin, tmp_path / "other.mp4")
    stats = emulator.stats()
    assert (stats["downloads"], stats["download_auth_headers"]) == (2, 1)


def test_truncated_download_leaves_nothing_behind(emulator: EmulatorServer, tmp_path: Path) -> None:
    hook = KirinHook()
    url = completed(hook, emulator, "dl-2")
    emulator.add_fault(endpoint="download", kind="truncated_download", bytes=1000)
    with pytest.raises(KirinStorageError):
        hook.download_video(url, tmp_path / "cut.mp4")
    assert list(tmp_path.iterdir()) == []


def test_download_into_a_directory_uses_a_safe_name(emulator: EmulatorServer, tmp_path: Path) -> None:
    hook = KirinHook()
    path = hook.download_video(completed(hook, emulator, "dl-3"), tmp_path).path
    assert path.parent == tmp_path
    assert path.name == "video.mp4"


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://cdn.example.com/a/b/clip-1.mp4?sig=x", "clip-1.mp4"),
        ("https://cdn.example.com/a/..%2F..%2Fetc%2Fpasswd.mp4", "video.mp4"),
        ("https://cdn.example.com/a/.hidden.mp4", "video.mp4"),
        ("https://cdn.example.com/a/evil.sh", "video.mp4"),
        ("https://cdn.example.com/", "video.mp4"),
    ],
)
def test_safe_file_name(url: str, name: str) -> None:
    assert safe_file_name(url) == name


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/v.mp4", "http:///nohost.mp4"])
def test_only_http_urls_are_downloaded(emulator: EmulatorServer, tmp_path: Path, url: str) -> None:
    with pytest.raises(KirinValidationError):
        KirinHook().download_video(url, tmp_path / "x.mp4")


# -- test_connection -----------------------------------------------------------------------------
def test_connection_good_bad_and_unreachable(
    kirin_emulator_factory: Callable[..., EmulatorServer], use_conn: Callable[..., None]
) -> None:
    server = kirin_emulator_factory()
    use_conn(server)
    assert KirinHook().test_connection()[0] is True

    use_conn(server, conn_id="kirin_bad", api_key="wrong")
    ok, message = KirinHook("kirin_bad").test_connection()
    assert not ok
    assert message == f"Kirin at {server.url} refused the API key (HTTP 401)."

    use_conn(server, conn_id="kirin_down")
    server.stop()  # nothing listens on its port any more
    ok, message = KirinHook("kirin_down").test_connection()
    assert not ok
    assert message == f"Could not connect to {server.url}: connection refused."  # plain words, no pool dump


@pytest.mark.kirin_emulator(path_prefix="/gateway")
def test_paths_come_from_the_connection(emulator: EmulatorServer) -> None:
    hook = KirinHook()
    assert hook.config.create_path == "/gateway/v1/videos/generations"
    task = hook.create_task("p", external_task_id="gw-1")
    assert hook.wait_for_task(task.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0).is_completed


def test_idempotent_submit_replaces_a_completed_task_without_video(emulator: EmulatorServer) -> None:
    """Paid but nothing to keep: a retry must buy a new generation under ``.g2``, not reuse it."""
    from airflow_provider_kirin.models import KirinVideoRequest

    hook = KirinHook()
    first = hook.create_task("p", external_task_id="nv-retry")
    emulator.add_fault(endpoint="lookup", kind="completed_no_video", times=1)
    task, reused = hook.submit_idempotent(KirinVideoRequest.build(prompt="p", external_task_id="nv-retry"))
    assert not reused
    assert task.task_id != first.task_id
    assert task.external_task_id == "nv-retry.g2"
    assert emulator.stats()["creates"] == 2


def test_two_tries_racing_on_one_id_share_one_generation(emulator: EmulatorServer) -> None:
    """Both tries look the id up (404) before either creates it; one create wins, the other is
    answered 409 and reuses the winner's task instead of failing."""
    from concurrent.futures import ThreadPoolExecutor

    from airflow_provider_kirin.models import KirinVideoRequest

    # Each lookup is answered 404 at once but held 1 s, so both tries pass their lookup first.
    emulator.add_fault(endpoint="lookup", kind="delay", seconds=1.0, after_processing=True, times=2)
    request = KirinVideoRequest.build(prompt="p", external_task_id="race-1")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: KirinHook().submit_idempotent(request), range(2)))
    (one, one_reused), (two, two_reused) = results
    assert one.task_id == two.task_id
    assert sorted((one_reused, two_reused)) == [False, True]
    stats = emulator.stats()
    assert (stats["creates"], stats["create_requests"], stats["conflicts"]) == (1, 2, 1)


@pytest.mark.parametrize("operation", ["get", "create"])
def test_a_refused_connection_is_not_a_failed_generation(
    emulator: EmulatorServer,
    use_conn: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
) -> None:
    """``except KirinTaskFailedError`` catches failed generations only: a service that cannot be
    reached is a ``KirinServiceError`` (``KirinUnreachableError``), with whether a create may have
    reached it."""
    from airflow_helpers import free_port

    use_conn(emulator, max_retries=1)
    conn = json.loads(os.environ["AIRFLOW_CONN_KIRIN_DEFAULT"])
    conn["host"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
    hook = KirinHook()
    call = hook.get_task if operation == "get" else lambda _: hook.create_task("p", external_task_id="r-1")
    with pytest.raises(KirinServiceError) as info:
        call("kt_any")
    assert type(info.value) is KirinUnreachableError
    assert not isinstance(info.value, KirinTaskFailedError)
    assert "did not reach Kirin" in info.value.message
    assert info.value.may_have_created is (False if operation == "create" else None)

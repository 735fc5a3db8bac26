"""Keeping videos: ``KirinDownloadVideoOperator`` and ``KirinHook.download_video`` on ``file://`` and on an
in-memory fsspec filesystem, through Airflow's ``ObjectStoragePath``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.exceptions import KirinError, KirinStorageError
from airflow_provider_kirin.hooks.kirin import KirinHook
from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator

REQUEST = {"prompt": "a fox", "duration": "5", "mode": "std", "aspect_ratio": "16:9"}


@pytest.fixture(autouse=True, scope="module")
def memory_store() -> None:
    """Attach fsspec's in-memory filesystem as Airflow object storage (``memory://``)."""
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())


def completed_task(hook: KirinHook, emulator: EmulatorServer, external_id: str) -> str:
    """A new generation, finished on the emulator's side at once (these tests are about keeping it)."""
    task = hook.create_task("a fox", external_task_id=external_id)
    emulator.complete_task(task.task_id)
    return hook.wait_for_task(task.task_id, poll_interval=0.1, timeout=10, first_poll_delay=0).task_id


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_operator_keeps_video_and_sidecar(emulator: EmulatorServer, tmp_path: Path, scheme: str) -> None:
    task_id = completed_task(KirinHook(), emulator, f"keep-{scheme}")
    destination = (
        tmp_path.as_uri() + "/videos/" if scheme == "file" else f"memory://kirin-test-{task_id}/videos/"
    )
    operator = KirinDownloadVideoOperator(
        task_id="keep", kirin_task_id=task_id, destination=destination, request=REQUEST
    )
    (stored,) = operator.execute(context={})  # type: ignore[arg-type]

    video = ObjectStoragePath(stored)
    assert video.name == f"{task_id}.mp4"
    data = video.read_bytes()
    sidecar = json.loads(ObjectStoragePath(stored + ".json").read_text())
    assert sidecar["kirin_task_id"] == task_id
    assert sidecar["external_task_id"] == f"keep-{scheme}"
    assert sidecar["request"] == REQUEST
    assert sidecar["prompt"] == "a fox"
    assert sidecar["cost"] == "0.35"
    assert sidecar["bytes"] == len(data)
    assert sidecar["sha256"] == hashlib.sha256(data).hexdigest()
    assert sidecar["content_type"] == "video/mp4"
    assert sidecar["created_at"]
    assert sidecar["stored_at"]
    assert not [p for p in video.parent.iterdir() if p.name.endswith(".part")]
    if scheme == "file":
        with av.open(str(tmp_path / "videos" / f"{task_id}.mp4")) as container:
            assert container.streams.video


def test_local_directory_destination(emulator: EmulatorServer, tmp_path: Path) -> None:
    task_id = completed_task(KirinHook(), emulator, "keep-local")
    operator = KirinDownloadVideoOperator(
        task_id="keep", kirin_task_id=task_id, destination=str(tmp_path / "out")
    )
    (stored,) = operator.execute(context={})  # type: ignore[arg-type]
    assert (tmp_path / "out" / f"{task_id}.mp4").stat().st_size > 0
    assert stored.endswith(f"{task_id}.mp4")


def test_unfinished_task_is_refused(emulator: EmulatorServer, tmp_path: Path) -> None:
    task = KirinHook().create_task("a fox", external_task_id="keep-early")
    operator = KirinDownloadVideoOperator(
        task_id="keep", kirin_task_id=task.task_id, destination=str(tmp_path)
    )
    with pytest.raises(KirinError, match="not completed"):
        operator.execute(context={})  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_wrong_content_type_is_not_kept(emulator: EmulatorServer, tmp_path: Path) -> None:
    hook = KirinHook()
    url = hook.get_task(completed_task(hook, emulator, "keep-html")).video_urls[0]
    emulator.add_fault(endpoint="download", kind="http_error", status=200, body="<html>login</html>")
    with pytest.raises(KirinStorageError, match="not a video"):
        hook.download_video(url, ObjectStoragePath("memory://kirin-ct/x.mp4"))
    assert not ObjectStoragePath("memory://kirin-ct/x.mp4").exists()


def test_size_limit(emulator: EmulatorServer, tmp_path: Path) -> None:
    hook = KirinHook()
    url = hook.get_task(completed_task(hook, emulator, "keep-big")).video_urls[0]
    with pytest.raises(KirinStorageError, match="max_bytes=100"):
        hook.download_video(url, tmp_path / "x.mp4", max_bytes=100)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_a_retry_keeps_only_what_is_not_kept_whole(
    emulator: EmulatorServer, tmp_path: Path, scheme: str
) -> None:
    """A video kept whole by an earlier try (complete sidecar of the same generation, the same size
    and SHA-256) is not downloaded again; one that is not whole is."""
    task_id = completed_task(KirinHook(), emulator, f"resume-{scheme}")
    destination = tmp_path.as_uri() + "/kept/" if scheme == "file" else f"memory://kirin-resume-{task_id}/"
    operator = KirinDownloadVideoOperator(task_id="keep", kirin_task_id=task_id, destination=destination)
    (stored,) = operator.execute(context={})  # type: ignore[arg-type]
    assert emulator.stats()["downloads"] == 1

    assert operator.execute(context={}) == [stored]  # type: ignore[arg-type]
    assert emulator.stats()["downloads"] == 1  # the retry found it whole: nothing downloaded

    video = ObjectStoragePath(stored)
    whole = video.read_bytes()
    video.write_bytes(whole[:-1] + bytes([whole[-1] ^ 1]))  # one bit changed: not the video kept
    assert operator.execute(context={}) == [stored]  # type: ignore[arg-type]
    assert emulator.stats()["downloads"] == 2
    assert video.read_bytes() == whole

    sidecar = ObjectStoragePath(stored + ".json")
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "complete": False}))  # a try that died mid-download
    operator.execute(context={})  # type: ignore[arg-type]
    assert emulator.stats()["downloads"] == 3
    assert json.loads(sidecar.read_text())["complete"] is True

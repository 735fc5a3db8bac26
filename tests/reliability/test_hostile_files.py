"""Nothing a server says picks, follows or overwrites a file (issue 18, rows 1, 2 and the manifest).

Real HTTP on loopback: the small hostile servers of ``test_hostile_server.py`` (``H``) playing the
API and the file host, and the bundled emulator for the batch operator. Each test plants what an
attacker or a careless neighbour would (a symlink at a file's name, a user's own file, another
task's video) and asserts the typed error naming the path, that the planted thing is untouched,
and that nothing was downloaded when the refusal could be made before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from kirin_fakes import FakeTaskInstance

from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.exceptions import KirinBadResponseError, KirinStorageError
from airflow_provider_kirin.hooks.kirin import KirinHook
from airflow_provider_kirin.models import TASK_ID_PATTERN
from airflow_provider_kirin.operators.batch import MANIFEST_NAME, KirinBatchTextToVideoOperator
from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator
from tests.reliability.test_hostile_server import (
    VIDEO,
    Exchange,
    HostileServer,
    all_files,
    api_and_files,
    envelope,
    with_video,
)

OUTSIDE_TEXT = "the user's own file, outside the destination\n"


def serve_task(hostile: Callable[..., HostileServer], task_id: str, videos: int = 1) -> HostileServer:
    """A hostile API answering every task read with ``task_id``, completed with ``videos`` videos."""

    def task(exchange: Exchange) -> dict[str, Any]:
        content = [{"type": "video", "url": f"{server.url}/files/v{n}.mp4"} for n in range(1, videos + 1)]
        return envelope(task_id, output=[{"content": content}], usage={"cost": "0.35"})

    server = hostile(api_and_files(task))
    return server


def keep(task_id: str, destination: Path | str, **kwargs: Any) -> list[str]:
    operator = KirinDownloadVideoOperator(
        task_id="keep", kirin_task_id=task_id, destination=str(destination), **kwargs
    )
    return operator.execute(context={})  # type: ignore[arg-type]


def downloads(server: HostileServer) -> list[str]:
    return [path for path in server.paths() if path.startswith("/files/")]


# -- row 1: writes follow symlinks and overwrite existing files ------------------------------------
def test_a_sidecar_name_that_is_a_symlink_is_refused_and_its_target_untouched(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    server = serve_task(hostile, "kt_1")
    outside, dest = tmp_path / "outside.txt", tmp_path / "dest"
    outside.write_text(OUTSIDE_TEXT)
    dest.mkdir()
    (dest / "kt_1.mp4.json").symlink_to(outside)
    with pytest.raises(KirinStorageError, match=r"kt_1\.mp4\.json: it is a symlink"):
        keep("kt_1", dest)
    assert outside.read_text() == OUTSIDE_TEXT
    assert downloads(server) == []  # refused before the download
    assert sorted(p.name for p in dest.iterdir()) == ["kt_1.mp4.json"]


def test_a_video_name_that_is_a_symlink_to_a_directory_is_refused(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    server = serve_task(hostile, "kt_1")
    outside, dest = tmp_path / "outside", tmp_path / "dest"
    outside.mkdir()
    dest.mkdir()
    (dest / "kt_1.mp4").symlink_to(outside, target_is_directory=True)
    with pytest.raises(KirinStorageError, match=r"kt_1\.mp4: it is a symlink"):
        keep("kt_1", dest)
    assert list(outside.iterdir()) == []  # nothing landed outside, under any name
    assert downloads(server) == []


def test_a_symlink_planted_at_a_hook_download_name_is_refused(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    server = hostile(api_and_files(lambda e: {}))
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "v.mp4").symlink_to(outside, target_is_directory=True)
    with pytest.raises(KirinStorageError, match="symlink"):
        KirinHook().download_video(f"{server.url}/files/v.mp4", tmp_path / "v.mp4")
    assert list(outside.iterdir()) == []


def test_a_directory_at_a_file_name_is_refused(hostile: Callable[..., HostileServer], tmp_path: Path) -> None:
    serve_task(hostile, "kt_1")
    (tmp_path / "kt_1.mp4").mkdir()
    with pytest.raises(KirinStorageError, match=r"kt_1\.mp4: it is a directory"):
        keep("kt_1", tmp_path)
    assert list((tmp_path / "kt_1.mp4").iterdir()) == []


@pytest.mark.parametrize("planted", ["kt_1.mp4", "kt_1.mp4.json"])
def test_a_users_own_file_is_never_replaced_unless_asked(
    hostile: Callable[..., HostileServer], tmp_path: Path, planted: str
) -> None:
    server = serve_task(hostile, "kt_1")
    (tmp_path / planted).write_text(OUTSIDE_TEXT)
    with pytest.raises(KirinStorageError, match=rf"Refusing to replace .*{planted}.*overwrite=True"):
        keep("kt_1", tmp_path)
    assert (tmp_path / planted).read_text() == OUTSIDE_TEXT
    assert downloads(server) == []
    assert [p.name for p in all_files(tmp_path)] == [planted]  # no .part left, nothing else written

    (stored,) = keep("kt_1", tmp_path, overwrite=True)  # the user said so
    assert (tmp_path / "kt_1.mp4").read_bytes() == VIDEO
    assert json.loads((tmp_path / "kt_1.mp4.json").read_text())["kirin_task_id"] == "kt_1"
    assert stored == (tmp_path / "kt_1.mp4").as_uri()


def test_a_retry_replaces_its_own_generation_and_nothing_else(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    serve_task(hostile, "kt_1")
    keep("kt_1", tmp_path)
    first = json.loads((tmp_path / "kt_1.mp4.json").read_text())
    assert first["complete"] is True
    keep("kt_1", tmp_path)  # the same generation: a retry may replace its own files
    assert (tmp_path / "kt_1.mp4").read_bytes() == VIDEO

    # A sidecar naming another generation (another external id) makes the files someone else's.
    (tmp_path / "kt_1.mp4.json").write_text(json.dumps({**first, "external_task_id": "someone-else"}))
    with pytest.raises(KirinStorageError, match="Refusing to replace"):
        keep("kt_1", tmp_path)


def test_a_crash_between_sidecar_and_video_leaves_files_a_retry_may_replace(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    """The sidecar is written before the video: a video never exists without a sidecar naming it."""
    server = hostile(
        api_and_files(lambda e: with_video(f"{server.url}/files/v.mp4"), lambda e: e.send(503, b"down"))
    )
    with pytest.raises(KirinStorageError, match="HTTP 503"):
        keep("kt_1", tmp_path)
    sidecar = json.loads((tmp_path / "kt_1.mp4.json").read_text())
    assert (sidecar["kirin_task_id"], sidecar["complete"]) == ("kt_1", False)
    assert not (tmp_path / "kt_1.mp4").exists()
    server.handler = api_and_files(lambda e: with_video(f"{server.url}/files/v.mp4"))
    keep("kt_1", tmp_path)  # the retry: its own provisional sidecar does not stop it
    assert json.loads((tmp_path / "kt_1.mp4.json").read_text())["complete"] is True


def test_object_storage_files_follow_the_same_rules(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())
    serve_task(hostile, "kt_1")
    root = ObjectStoragePath("memory://kirin-issue18/dest/")
    (root / "kt_1.mp4").write_bytes(b"the user's")
    with pytest.raises(KirinStorageError, match=r"Refusing to replace .*kt_1\.mp4"):
        keep("kt_1", root)  # type: ignore[arg-type]
    assert (root / "kt_1.mp4").read_bytes() == b"the user's"
    (root / "kt_1.mp4").unlink()
    keep("kt_1", root)  # type: ignore[arg-type]
    keep("kt_1", root)  # a retry replaces its own
    assert (root / "kt_1.mp4").read_bytes() == VIDEO
    assert sorted(p.name for p in root.iterdir()) == ["kt_1.mp4", "kt_1.mp4.json"]


def test_the_writer_never_follows_a_symlink_planted_at_the_final_name_meanwhile(tmp_path: Path) -> None:
    """A link that appears after the check is never written through."""
    from airflow_provider_kirin.io.storage import write_file

    outside = tmp_path / "outside.txt"
    outside.write_text(OUTSIDE_TEXT)
    target = tmp_path / "out.json"

    def plant_then_fill(out: Any) -> None:
        target.symlink_to(outside)  # appears between the check and the rename
        out.write(b"{}")

    with pytest.raises(KirinStorageError, match="symlink"):  # the new file is linked, not renamed
        write_file(target, plant_then_fill)
    assert outside.read_text() == OUTSIDE_TEXT
    assert target.is_symlink()  # left as planted; no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "outside.txt"]


# -- row 2: files named after the id the server answers with ----------------------------------------
def test_an_answer_for_another_task_is_refused_and_its_files_untouched(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    server = serve_task(hostile, "kt_victim")
    (tmp_path / "kt_victim.mp4").write_bytes(b"the victim's video")
    (tmp_path / "kt_victim.mp4.json").write_text('{"kirin_task_id": "kt_victim"}')
    with pytest.raises(KirinBadResponseError, match=r"kt_victim.*not the 'kt_asked_for' asked for"):
        keep("kt_asked_for", tmp_path)
    assert (tmp_path / "kt_victim.mp4").read_bytes() == b"the victim's video"
    assert (tmp_path / "kt_victim.mp4.json").read_text() == '{"kirin_task_id": "kt_victim"}'
    assert downloads(server) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kt_victim.mp4", "kt_victim.mp4.json"]


def test_a_tasks_extra_videos_never_take_another_tasks_name(
    hostile: Callable[..., HostileServer], tmp_path: Path
) -> None:
    serve_task(hostile, "kt_x-2")
    keep("kt_x-2", tmp_path)  # task kt_x-2's own video
    theirs = (tmp_path / "kt_x-2.mp4.json").read_text()
    serve_task(hostile, "kt_x", videos=3)  # the connection now points at a server for kt_x
    stored = keep("kt_x", tmp_path)
    assert [Path(s[len("file://") :]).name for s in stored] == ["kt_x.mp4", "kt_x~2.mp4", "kt_x~3.mp4"]
    assert (tmp_path / "kt_x-2.mp4.json").read_text() == theirs  # untouched
    assert json.loads((tmp_path / "kt_x~2.mp4.json").read_text())["kirin_task_id"] == "kt_x"


def test_the_part_mark_is_in_no_task_id_and_in_no_safe_stem() -> None:
    from airflow_provider_kirin.io.storage import PART_MARK, safe_name

    assert PART_MARK not in "A-Za-z0-9._:-"
    assert TASK_ID_PATTERN.fullmatch(f"kt{PART_MARK}2") is None
    assert safe_name(f"kt{PART_MARK}2") != f"kt{PART_MARK}2.mp4"  # a stem holding it is changed
    assert safe_name("kt_x", ".mp4", part=2) == "kt_x~2.mp4"
    assert safe_name("kt_x", ".mp4.json", part=2) == "kt_x~2.mp4.json"


# -- the manifest: one JSON object per line for every reader, and never someone else's file ------
UNICODE_BREAKS = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei\rj\x1b[31m"


@pytest.mark.kirin_emulator(pending_seconds=0.05, processing_seconds=0.1)
def test_the_manifest_is_one_json_object_per_line_for_every_reader(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    emulator.add_fault(endpoint="create", kind="fail_task", code="002011095", error_message=UNICODE_BREAKS,
                       times=2)  # fmt: skip
    prompts = [{"key": f"k{n}-{UNICODE_BREAKS}", "prompt": f"p{n} {UNICODE_BREAKS}"} for n in range(7)]
    rows = run_batch(tmp_path, prompts, max_failed=7)
    text = (tmp_path / MANIFEST_NAME).read_text(encoding="utf-8")
    assert len(text.splitlines()) == 7  # str.splitlines() splits on U+2028, U+2029, U+0085, \x0b...
    assert text.isascii()
    assert [row["key"] for row in rows] == [f"k{n}-{UNICODE_BREAKS}" for n in range(7)]  # the values kept
    assert sum(row["status"] == "failed" for row in rows) == 2


@pytest.mark.kirin_emulator(pending_seconds=0.05, processing_seconds=0.1)
def test_a_symlinked_or_foreign_manifest_is_refused(emulator: EmulatorServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text(OUTSIDE_TEXT)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / MANIFEST_NAME).symlink_to(outside)
    with pytest.raises(KirinStorageError, match=r"manifest\.jsonl: it is a symlink"):
        run_batch(dest, ["a fox"])
    assert outside.read_text() == OUTSIDE_TEXT

    (dest / MANIFEST_NAME).unlink()
    (dest / MANIFEST_NAME).write_text('{"external_task_id": "another-run"}\n')  # another run's manifest
    with pytest.raises(KirinStorageError, match=r"Refusing to replace .*manifest\.jsonl"):
        run_batch(dest, ["a fox"])
    assert (dest / MANIFEST_NAME).read_text() == '{"external_task_id": "another-run"}\n'

    (dest / MANIFEST_NAME).unlink()
    run_batch(dest, ["a fox"])
    (row,) = run_batch(dest, ["a fox"])  # a retry of the same task instance replaces its own manifest
    assert row["external_task_id"].startswith("af-issue18-batch-")


def run_batch(dest: Path, prompts: list[Any], **kwargs: Any) -> list[dict[str, Any]]:
    """The batch operator in this process (not deferrable), as a worker runs it."""
    operator = KirinBatchTextToVideoOperator(
        task_id="batch",
        prompts=prompts,
        destination=str(dest),
        deferrable=False,
        poll_interval=0.1,
        first_poll_delay=0,
        **kwargs,
    )
    ti = FakeTaskInstance(dag_id="issue18", run_id="run-1", task_id="batch", map_index=-1, pushed={})
    operator.execute(context={"ti": ti})  # type: ignore[arg-type]
    return [json.loads(line) for line in (dest / MANIFEST_NAME).read_text().split("\n") if line]

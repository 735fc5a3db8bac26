"""The batch keeps its videos several at a time, and a retry keeps only what the try before it did
not finish (a video kept whole is not downloaded again), against the emulator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from kirin_fakes import batch_items

from airflow_provider_kirin.core.batch import pack_items
from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.exceptions import KirinStorageError
from airflow_provider_kirin.operators.batch import KirinBatchTextToVideoOperator
from airflow_provider_kirin.triggers.batch import BatchEvent, KirinBatchTrigger


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.2)
def test_a_retry_after_a_lost_download_keeps_only_the_rest(emulator: EmulatorServer, tmp_path: Path) -> None:
    prompts = [f"keep clip {i}" for i in range(10)]
    items = batch_items(prompts, run_id="keep")
    trigger = KirinBatchTrigger(items=pack_items(items), poll_interval=0.05, deadline=time.time() + 60)

    async def first() -> dict[str, Any]:
        (event,) = [event.payload async for event in trigger.run()]
        return dict(event)

    results = BatchEvent.decode(asyncio.run(first())).results
    operator = KirinBatchTextToVideoOperator(
        task_id="batch", prompts=prompts, destination=str(tmp_path), keep_videos=True, keep_concurrency=4
    )
    by_index = {item.index: item for item in items}
    emulator.add_fault(endpoint="download", kind="http_error", status=500, skip=5, times=1)
    with pytest.raises(KirinStorageError, match="1 of 10 videos could not be kept"):
        operator._keep_videos(results, by_index)  # one download lost: the try fails, the rest kept
    stats = emulator.stats()
    assert (stats["downloads"], stats["faults_applied"]["http_error"]) == (10, 1)  # ten tried, one lost
    assert len(list(tmp_path.glob("*.mp4"))) == 9

    kept = operator._keep_videos(results, by_index)  # the retry
    assert emulator.stats()["downloads"] == 11  # only the one that was lost
    assert sorted(kept) == list(range(10))
    assert all(stored for _, stored in kept.values())
    assert len(list(tmp_path.glob("*.mp4"))) == 10

"""DAGs for the batch operator's paths on a real Airflow (test-only). The destination comes from
the Variable ``batch_dest`` (``AIRFLOW_VAR_BATCH_DEST`` in the tests)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, task

from airflow_provider_kirin.operators.batch import KirinBatchTextToVideoOperator

FAST = {"poll_interval": 0.1, "first_poll_delay": 0.1}
PROMPTS = [
    "a red fox in fresh snow",
    {"key": "sale/banner 1", "prompt": "confetti over a shop window", "aspect_ratio": "9:16"},
    {"prompt": "{{ params.subject }} at dawn", "duration": 10, "mode": "pro"},
    "a lighthouse in a storm",
]

with DAG(
    dag_id="kirin_batch_ok", start_date=datetime(2026, 1, 1), schedule=None, params={"subject": "A heron"}
):
    KirinBatchTextToVideoOperator(
        task_id="batch",
        prompts=PROMPTS,
        max_in_flight=2,
        destination="{{ var.value.batch_dest }}/ok",
        keep_videos=True,
        deferrable=True,
        outlets=[Asset("kirin-batch-manifest")],
        **FAST,
    )

with DAG(
    dag_id="kirin_batch_tolerant", start_date=datetime(2026, 1, 1), schedule=None, params={"subject": "x"}
):
    # One item fails (the test scripts it); max_failed=1 lets the task succeed. In the worker.
    KirinBatchTextToVideoOperator(
        task_id="batch",
        prompts=PROMPTS,
        max_in_flight=4,
        max_failed=1,
        destination="{{ var.value.batch_dest }}/tolerant",
        deferrable=False,
        **FAST,
    )

with DAG(
    dag_id="kirin_batch_strict", start_date=datetime(2026, 1, 1), schedule=None, params={"subject": "x"}
):
    # The same failure with a fraction of 0.2 (1 of 4 is 0.25): the task fails, the manifest is written.
    KirinBatchTextToVideoOperator(
        task_id="batch",
        prompts=PROMPTS,
        max_in_flight=4,
        max_failed=0.2,
        destination="{{ var.value.batch_dest }}/strict",
        deferrable=True,
        **FAST,
    )

with DAG(
    dag_id="kirin_batch_bad_input", start_date=datetime(2026, 1, 1), schedule=None, params={"ratio": "4:3"}
):
    KirinBatchTextToVideoOperator(
        task_id="batch",
        prompts=[
            "fine",
            {"prompt": "also fine"},
            {"key": "third", "prompt": "fine", "aspect_ratio": "{{ params.ratio }}"},
        ],
        deferrable=True,
        **FAST,
    )


with DAG(dag_id="kirin_batch_chunks", start_date=datetime(2026, 1, 1), schedule=None):

    @task
    def chunks() -> list[list[str]]:
        """Prompts in chunks, from an upstream task (an XComArg): one batch per chunk."""
        return [["the same prompt", "only in the first chunk"], ["the same prompt"]]

    KirinBatchTextToVideoOperator.partial(task_id="batch", deferrable=True, **FAST).expand(prompts=chunks())


SPEND_PROMPTS = [f"spend clip {i}" for i in range(6)]  # std, 5 s: 0.35 each on the emulator

with DAG(dag_id="kirin_batch_dry_run", start_date=datetime(2026, 1, 1), schedule=None):
    # The plan only: lookups, estimates, nothing created.
    KirinBatchTextToVideoOperator(
        task_id="batch", prompts=SPEND_PROMPTS, max_cost="1.05", dry_run=True, max_in_flight=3, **FAST
    )

with DAG(dag_id="kirin_batch_ceiling", start_date=datetime(2026, 1, 1), schedule=None):
    # A ceiling that fits three of six, in the triggerer; the other three end over_budget, which
    # max_failed=3 tolerates, so the task succeeds and reports the ledger.
    KirinBatchTextToVideoOperator(
        task_id="batch",
        prompts=SPEND_PROMPTS,
        max_cost="1.05",
        max_in_flight=3,
        max_failed=3,
        destination="{{ var.value.batch_dest }}/ceiling",
        deferrable=True,
        **FAST,
    )

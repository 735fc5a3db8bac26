"""DAGs that exercise the operator and sensor paths the example DAGs do not (test-only)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
from airflow_provider_kirin.sensors.kirin import KirinTaskSensor

FAST = {"first_poll_delay": 0.2}

with DAG(
    dag_id="kirin_cases_ok",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    template_searchpath=[__file__.rsplit("/", 1)[0]],
    params={"subject": "A red fox"},
):
    submit_only = KirinTextToVideoOperator(task_id="submit_only", prompt="{{ params.subject }} at dawn")
    KirinTextToVideoOperator(task_id="from_file", prompt="fox_prompt.txt", duration="10", mode="pro")
    KirinTextToVideoOperator(
        task_id="sync_wait", prompt="a lighthouse", wait_for_completion=True, deferrable=False,
        poll_interval=0.2, **FAST,
    )  # fmt: skip
    KirinTaskSensor(
        task_id="sensor_poke", kirin_task_id=submit_only.output, mode="poke", poke_interval=0.2, **FAST
    )
    KirinTaskSensor(
        task_id="sensor_deferrable",
        kirin_task_id=submit_only.output,
        deferrable=True,
        poke_interval=0.2,
        **FAST,
    )

with DAG(
    dag_id="kirin_cases_bad_input",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    params={"empty": "", "url": "ftp://files.example.com/hook"},
):
    KirinTextToVideoOperator(task_id="blank_prompt", prompt="{{ params.empty }}")
    KirinTextToVideoOperator(task_id="bad_callback", prompt="fine", callback_url="{{ params.url }}")
    KirinTextToVideoOperator(task_id="bad_ratio", prompt="fine", aspect_ratio="4:3")

with DAG(dag_id="kirin_cases_soft_fail", start_date=datetime(2026, 1, 1), schedule=None):
    submit = KirinTextToVideoOperator(task_id="submit", prompt="a slow one")
    KirinTaskSensor(
        task_id="gives_up", kirin_task_id=submit.output, mode="poke", poke_interval=0.2, timeout=1,
        soft_fail=True, first_poll_delay=0,
    )  # fmt: skip
    KirinTaskSensor(
        task_id="times_out", kirin_task_id=submit.output, mode="poke", poke_interval=0.2, timeout=1,
        first_poll_delay=0,
    )  # fmt: skip

with DAG(dag_id="kirin_cases_rerun", start_date=datetime(2026, 1, 1), schedule=None):
    # The prompt and the take come from Variables, as a scheduled DAG's often do: a cleared or
    # re-tested task must follow them (a new prompt is a new video) and reuse what already matches.
    KirinTextToVideoOperator(
        task_id="generate",
        prompt="{{ var.value.kirin_rerun_prompt }}",
        variant="{{ var.value.get('kirin_rerun_variant', '') }}",
    )

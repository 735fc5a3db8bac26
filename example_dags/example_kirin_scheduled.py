"""Every morning, one video per prompt of the day, kept in storage you own, within the account's limits.

Prompts come from the Airflow Variable ``kirin_daily_prompts`` (a JSON list of strings) if it is
set, else from ``prompts/daily.txt`` next to this file (one prompt a line); either may use Jinja
with the run's context and ``day``, the start of its data interval (``{{ day | ds }}``; for a
manual run without one, when it was triggered). The generations run in the
``kirin`` pool; create it so that deferred tasks count, e.g. for an account allowing 4 at once:

    airflow pools set kirin 4 "Kirin account limit" --include-deferred
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator

#: Where videos are kept: the Variable ``kirin_video_destination`` (any object-storage URL:
#: ``s3://bucket/videos``, ``gs://...``, ``file:///...``), rendered when the task runs.
DESTINATION = "{{ var.value.get('kirin_video_destination', 'file:///tmp/kirin-videos') }}"
PROMPTS_FILE = Path(__file__).parent / "prompts" / "daily.txt"


@task
def prompts_of_the_day() -> list[str]:
    """The day's prompts (Variable or file), rendered with this run's context."""
    from airflow.sdk import Variable, get_current_context

    raw = Variable.get("kirin_daily_prompts", default=None, deserialize_json=True)
    lines = raw if raw else [line for line in PROMPTS_FILE.read_text().splitlines() if line.strip()]
    context = get_current_context()
    day = context.get("data_interval_start") or context["dag_run"].run_after
    env = context["dag"].get_template_env()
    return [env.from_string(line).render(**context, day=day) for line in lines]


with DAG(
    dag_id="example_kirin_scheduled",
    start_date=datetime(2026, 1, 1),
    schedule="0 6 * * *",
    catchup=False,
    max_active_runs=1,
    tags=["example", "kirin"],
) as dag:
    generate = KirinTextToVideoOperator.partial(
        task_id="generate",
        duration=5,
        wait_for_completion=True,
        deferrable=True,
        pool="kirin",
    ).expand(prompt=prompts_of_the_day())
    KirinDownloadVideoOperator.partial(
        task_id="keep_video",
        destination=DESTINATION + "/daily/{{ (data_interval_start or dag_run.run_after) | ds }}/",
    ).expand(kirin_task_id=generate.output)

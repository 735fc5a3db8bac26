"""Retry decisions that fit the error: the one decision (``core/task_retry.decide``), the Airflow 3.3
policy built on it (``KirinRetryPolicy``), the operators' default, and the fail-now before 3.3.

The real runs (``dags test`` on every line) are ``tests/dags/test_retry_decisions.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_provider_kirin import _compat
from airflow_provider_kirin.core.task_retry import decide
from airflow_provider_kirin.exceptions import (
    KirinAuthError,
    KirinBadResponseError,
    KirinConflictError,
    KirinConnectionError,
    KirinError,
    KirinGenerationError,
    KirinRateLimitError,
    KirinRequestRejectedError,
    KirinStorageError,
    KirinTaskFailedError,
    KirinValidationError,
    error_from_event,
)
from airflow_provider_kirin.operators import common
from airflow_provider_kirin.operators.batch import KirinBatchTextToVideoOperator
from airflow_provider_kirin.operators.download import KirinDownloadVideoOperator
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
from airflow_provider_kirin.sensors.kirin import KirinTaskSensor


def rate_limited(seconds: float | None) -> KirinRateLimitError:
    error = KirinRateLimitError("HTTP 429: slow down", http_status=429)
    error.retry_after = seconds
    return error


@pytest.mark.parametrize(
    "error",
    [
        KirinAuthError("HTTP 401: no", http_status=401),
        KirinRequestRejectedError("HTTP 422: duration", http_status=422),
        KirinValidationError("duration=7 is invalid"),
        KirinConnectionError("no host"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_a_retry_cannot_fix_fail_now(error: KirinError) -> None:
    verdict = decide(error)
    assert verdict.action == "fail"
    assert type(error).__name__ in (verdict.reason or "")


@pytest.mark.parametrize(
    "error",
    [
        KirinBadResponseError("HTTP 503"),
        KirinStorageError("truncated download"),
        KirinGenerationError("failed", code="002011095"),
        rate_limited(None),
        ValueError("not a Kirin error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_errors_follow_the_tasks_settings(error: BaseException) -> None:
    assert decide(error).action == "default"


def test_an_error_class_opts_out_of_retries_with_a_class_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    """How a new class (e.g. a spend ceiling reached) says a retry cannot fix it: ``retryable =
    False`` on the class. Shown on an existing class (a new subclass here would join the
    documented exception tree)."""
    error = KirinConflictError("HTTP 409: taken", http_status=409)
    assert decide(error).action == "default"
    monkeypatch.setattr(KirinConflictError, "retryable", False)
    assert decide(error).action == "fail"


def test_a_failed_generation_fails_now_only_when_the_operator_says_so() -> None:
    error = KirinGenerationError("failed", code="002011095")
    assert decide(error, retry_failed_generations=True).action == "default"
    verdict = decide(error, retry_failed_generations=False)
    assert verdict.action == "fail"
    assert "would pay for a new generation" in (verdict.reason or "")


def test_retry_after_sets_the_delay_and_survives_a_trigger_event() -> None:
    verdict = decide(rate_limited(7.0))
    assert (verdict.action, verdict.delay) == ("retry", 7.0)
    rebuilt = error_from_event(rate_limited(7.0).to_dict())
    assert decide(rebuilt).delay == 7.0
    assert error_from_event({**rate_limited(None).to_dict(), "retry_after": "7"}).retry_after is None


def test_kirin_retry_policy_turns_the_decision_into_airflows() -> None:
    from airflow_provider_kirin.retry_policy import KirinRetryPolicy

    if not _compat.HAS_RETRY_POLICY:  # Airflow 3.0-3.2: there is nothing to build it on
        with pytest.raises(RuntimeError, match=r"needs Airflow 3\.3"):
            KirinRetryPolicy()
        return
    from airflow.sdk.definitions.retry_policy import RetryAction

    policy = KirinRetryPolicy()
    fail = policy.evaluate(KirinAuthError("HTTP 401", http_status=401), try_number=1, max_tries=4)
    assert fail.action is RetryAction.FAIL
    retry = policy.evaluate(rate_limited(7.0), try_number=1, max_tries=4)
    assert (retry.action, retry.retry_delay) == (RetryAction.RETRY, timedelta(seconds=7))
    default = policy.evaluate(KirinGenerationError("failed", code="002011095"), try_number=1, max_tries=4)
    assert default.action is RetryAction.DEFAULT
    strict = KirinRetryPolicy(retry_failed_generations=False)
    failed = strict.evaluate(KirinGenerationError("failed", code="002011095"), try_number=1, max_tries=4)
    assert failed.action is RetryAction.FAIL
    assert KirinRetryPolicy.deserialize(strict.serialize()) == strict


def test_every_operator_gets_the_policy_by_default_and_a_dag_can_replace_it() -> None:
    from airflow_provider_kirin.retry_policy import KirinRetryPolicy

    operators = [
        KirinTextToVideoOperator(task_id="a", prompt="p"),
        KirinBatchTextToVideoOperator(task_id="b", prompts=["p"]),
        KirinDownloadVideoOperator(task_id="c", kirin_task_id="kt", destination="/tmp"),
        KirinTaskSensor(task_id="d", kirin_task_id="kt"),
    ]
    if not _compat.HAS_RETRY_POLICY:  # Airflow 3.0-3.2: the operators fail now themselves
        assert all(getattr(op, "retry_policy", None) is None for op in operators)
        return
    assert all(op.retry_policy == KirinRetryPolicy() for op in operators)
    strict = KirinTextToVideoOperator(task_id="e", prompt="p", retry_failed_generations=False)
    assert strict.retry_policy == KirinRetryPolicy(retry_failed_generations=False)
    assert KirinTextToVideoOperator(task_id="f", prompt="p", retry_policy=None).retry_policy is None


def test_before_airflow_3_3_the_operators_raise_airflow_fail_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``kirin_errors`` does on 3.0-3.2, where no retry policy exists: an error a retry cannot
    fix becomes ``AirflowFailException`` (the Kirin error its cause); the rest is raised as is."""
    monkeypatch.setattr(common, "HAS_RETRY_POLICY", False)

    class Task:
        retry_failed_generations = True

        @common.kirin_errors
        def execute(self, error: Exception) -> None:
            raise error

    refused = KirinAuthError("HTTP 401: no", http_status=401)
    with pytest.raises(_compat.AirflowFailException, match="KirinAuthError") as info:
        Task().execute(refused)
    assert info.value.__cause__ is refused
    outage = KirinBadResponseError("HTTP 503")
    with pytest.raises(KirinBadResponseError):
        Task().execute(outage)
    task = Task()
    task.retry_failed_generations = False
    with pytest.raises(_compat.AirflowFailException, match="retry_failed_generations=False"):
        task.execute(KirinGenerationError("failed", code="002011095"))
    assert isinstance(task._kirin_error, KirinTaskFailedError)  # kept for the lineage FAIL event

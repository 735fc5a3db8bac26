"""The retry policy's pure parts and the polling schedule (bounds, jitter range, deadline), the
schedule also through the real wait loop in simulated time."""

from __future__ import annotations

import json
import random
from email.utils import formatdate
from types import SimpleNamespace

import pytest
from pydantic import SecretStr
from tenacity import Retrying

from airflow_provider_kirin.core.config import KirinConnectionConfig
from airflow_provider_kirin.core.retry import TransientKirinError, parse_retry_after, retry_kwargs
from airflow_provider_kirin.core.steps import Sleep
from airflow_provider_kirin.core.waiting import (
    POLL_JITTER,
    Check,
    Outcome,
    Wait,
    error_seconds_from_count,
    outcome_of,
)
from airflow_provider_kirin.exceptions import (
    KirinGenerationError,
    KirinRateLimitError,
    KirinResultParsingError,
    KirinTaskFailedError,
    KirinTaskTimeoutError,
)
from airflow_provider_kirin.hooks.kirin import KirinHook
from airflow_provider_kirin.models import KirinTask


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("2.5", 2.5),
        ("100000", 60.0),
        ("soon", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, cap=60.0) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 12, usegmt=True), cap=60.0, now=now) == pytest.approx(12.0)
    assert parse_retry_after(formatdate(now + 86400, usegmt=True), cap=60.0, now=now) == 60.0  # capped
    assert parse_retry_after(formatdate(now - 100, usegmt=True), cap=60.0, now=now) == 0.0


def config(**extra: object) -> KirinConnectionConfig:
    return KirinConnectionConfig.model_validate(
        {"base_url": "http://127.0.0.1:1", "api_key": SecretStr("k" * 8), **extra}
    )


def run_policy(cfg: KirinConnectionConfig, errors: list[Exception]) -> tuple[object, list[float]]:
    """Drive the real tenacity policy with a recorded sleep (no wall-clock waiting)."""
    slept: list[float] = []
    attempts = iter(errors)

    def call() -> str:
        error = next(attempts, None)
        if error is not None:
            raise error
        return "ok"

    retrying = Retrying(sleep=slept.append, **retry_kwargs(cfg, "test"))
    try:
        return retrying(call), slept
    except Exception as err:
        return err, slept


def transient(retry_after: float | None = None) -> TransientKirinError:
    return TransientKirinError(KirinRateLimitError("HTTP 429", http_status=429), retry_after=retry_after)


def test_retry_after_is_a_lower_bound_on_the_wait() -> None:
    outcome, slept = run_policy(config(max_retries=3), [transient(4.0), transient(4.0)])
    assert outcome == "ok"
    assert len(slept) == 2
    assert all(s >= 4.0 for s in slept)


def test_backoff_is_bounded_and_jittered() -> None:
    random.seed(7)
    outcome, slept = run_policy(config(max_retries=8, retry_max_wait=2.0), [transient()] * 8)
    assert outcome == "ok"
    assert all(0.0 <= s <= 2.0 for s in slept)
    assert len(set(slept)) > 1


def test_exhausted_retries_raise_the_final_typed_error() -> None:
    outcome, slept = run_policy(config(max_retries=2), [transient()] * 5)
    assert isinstance(outcome, KirinRateLimitError)
    assert len(slept) == 2  # 3 tries in all


def test_non_transient_errors_are_not_retried() -> None:
    outcome, slept = run_policy(config(), [KirinGenerationError("no")])
    assert isinstance(outcome, KirinGenerationError)
    assert slept == []


# -- waiting -------------------------------------------------------------------------------------
def task(status: str, **fields: object) -> KirinTask:
    return KirinTask.model_validate({"task_id": "kt_1", "status": status, **fields})


def test_outcomes() -> None:
    assert outcome_of(task("processing")) is None
    assert outcome_of(task("mystery")) is None
    done = task("completed", output=[{"content": [{"type": "video", "url": "http://x/v.mp4"}]}])
    ok = outcome_of(done)
    assert ok is not None
    assert ok.ok
    assert ok.result() is done
    no_video = outcome_of(task("completed", output=[]))
    assert no_video is not None
    with pytest.raises(KirinResultParsingError, match="no video URL"):
        no_video.result()
    failed = outcome_of(task("failed", error={"code": "002011095", "error_message": "gpu fell over"}))
    assert failed is not None
    with pytest.raises(KirinGenerationError) as info:
        failed.result()
    assert info.value.code == "002011095"
    assert info.value.task_id == "kt_1"
    unknown = outcome_of(task("failed"))
    assert unknown is not None
    assert type(unknown.error) is KirinTaskFailedError


def test_interval_is_a_hard_bound_and_the_first_check_is_phase_jittered() -> None:
    def first_sleep(first_check_at: float) -> float:
        step = Wait("kt", deadline=10_000.0, first_check_at=first_check_at, started=0.0).next(now=0.0)
        return step.seconds if isinstance(step, Sleep) else 0.0

    firsts = [first_sleep(20.0) for _ in range(500)]
    assert all(20.0 <= f <= 20.0 + 10.0 * POLL_JITTER for f in firsts)
    assert max(firsts) - min(firsts) > 0.5  # spread, not lock-step
    restarted = [first_sleep(-300.0) for _ in range(500)]  # first_poll_at long past
    assert all(0.0 <= f <= 1.0 for f in restarted)
    assert max(restarted) - min(restarted) > 0.5
    wait = Wait("kt", deadline=10_000.0, poll_interval=10.0, first_check_at=0.0, started=0.0)
    wait.next_check_at = 0.0
    for now in (0.0, 10.0, 20.0, 30.0):
        assert isinstance(wait.next(now=now), Check)
        wait.record(task("processing"), now=now)
        assert wait.next(now=now) == Sleep(10.0)  # every interval, never more


def test_delays_stop_at_the_deadline_and_stretch_to_retry_after() -> None:
    wait = Wait("kt", deadline=100.0, poll_interval=10.0, started=0.0)
    wait.next_check_at = 0.0
    wait.record(task("processing"), now=97.0)
    assert wait.next(now=97.0) == Sleep(pytest.approx(3.0))  # the last check at the deadline
    wait.record(task("processing"), now=100.0)
    outcome = wait.next(now=100.0)
    assert isinstance(outcome, Outcome)
    assert isinstance(outcome.error, KirinTaskTimeoutError)
    assert "last status processing" in outcome.error.message
    stretched = Wait("kt", deadline=1000.0, poll_interval=10.0, started=0.0)
    stretched.next_check_at = 0.0
    stretched.record_error(transient(25.0), now=0.0)
    assert stretched.next(now=0.0) == Sleep(25.0)  # the server's Retry-After
    assert Wait("kt", deadline=90.0, first_check_at=120.0).next(now=80.0) == Sleep(pytest.approx(10.0))


def test_a_check_never_outlasts_the_wait() -> None:
    wait = Wait("kt", deadline=100.0, poll_interval=10.0, started=0.0)
    wait.next_check_at = 0.0
    assert wait.next(now=0.0) == Check(100.0)  # the transport cuts it to request_timeout
    assert wait.next(now=97.0) == Check(pytest.approx(3.0))  # what is left of the wait
    assert wait.next(now=100.0) == Check(1.0)  # the last check at the deadline: 1 s
    endless = Wait("kt", first_check_at=0.0)
    endless.next_check_at = 0.0
    assert endless.next(now=5.0) == Check(None)  # no deadline


def test_failed_checks_end_a_wait_only_after_a_span_of_time() -> None:
    wait = Wait("kt", deadline=1e12, poll_interval=10.0, max_error_seconds=60.0, started=0.0)
    wait.next_check_at = 0.0
    for now in range(0, 60, 10):  # a minute of failures: "not yet" each time
        wait.record_error(transient(), now=float(now))
        assert isinstance(wait.next(now=float(now)), Sleep)
    wait.record(task("processing"), now=60.0)  # a good answer starts the span again
    for now in range(70, 130, 10):
        wait.record_error(transient(), now=float(now))
        assert isinstance(wait.next(now=float(now)), Sleep)
    wait.record_error(transient(), now=130.0)  # 60 s of failures since the first at 70 s
    outcome = wait.next(now=130.0)
    assert isinstance(outcome, Outcome)
    assert isinstance(outcome.error, KirinRateLimitError)  # the last check's own error
    assert "7 status checks in a row failed over 60 s" in outcome.error.message
    assert outcome.error.http_status == 429
    # a count of checks (the deprecated form) is the span those checks took
    assert error_seconds_from_count(5, 10.0) == 40.0
    assert error_seconds_from_count(1, 10.0) == 0.0


def test_paced_by_caller_checks_whenever_asked_after_the_first_check() -> None:
    wait = Wait("kt", deadline=1e12, first_check_at=20.0, started=0.0, paced_by_caller=True)
    assert wait.next(now=5.0) == Sleep(15.0)
    assert isinstance(wait.next(now=20.0), Check)
    wait.record(task("processing"), now=20.0)
    assert isinstance(wait.next(now=21.0), Check)  # Airflow's poke interval paces it, not the wait


class SimulatedWait:
    """Runs the real ``KirinHook.wait_for_task`` loop in simulated time: the clock (``time`` in the
    hook and waiting modules) and the transport (``_send_once``) are the only fakes. The task
    completes ``generation`` seconds after the wait starts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, generation: float) -> None:
        import airflow_provider_kirin.core.waiting as waiting_module
        import airflow_provider_kirin.hooks.kirin as hook_module

        self.now, self.generation, self.checks = 0.0, generation, 0
        clock = SimpleNamespace(time=self.time, monotonic=self.time, sleep=self.sleep)
        monkeypatch.setattr(hook_module, "time", clock)
        monkeypatch.setattr(waiting_module, "time", clock)
        monkeypatch.setenv(
            "AIRFLOW_CONN_KIRIN_DEFAULT",
            json.dumps({"conn_type": "kirin", "host": "http://127.0.0.1:9", "password": "k"}),
        )
        self.hook = KirinHook()
        monkeypatch.setattr(self.hook, "_send_once", self.send_once)

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def send_once(self, call: object, budget: float | None = None) -> KirinTask:
        self.checks += 1
        status = "completed" if self.now >= self.generation else "processing"
        output = [{"content": [{"type": "video", "url": "http://127.0.0.1:9/v.mp4"}]}]
        return KirinTask.model_validate(
            {"task_id": "kt", "status": status, **({"output": output} if status == "completed" else {})}
        )

    def run(self, *, expected: float | None, interval: float = 10.0) -> tuple[int, float]:
        """``(status checks, seconds from completion to notice)``."""
        self.hook.wait_for_task(
            "kt", poll_interval=interval, timeout=1e6, first_poll_delay=20.0, expected_seconds=expected
        )
        return self.checks, self.now - self.generation


def simulate(
    monkeypatch: pytest.MonkeyPatch, generation: float, *, expected: float | None
) -> tuple[int, float]:
    with monkeypatch.context() as patch:
        return SimulatedWait(patch, generation).run(expected=expected)


@pytest.mark.parametrize("generation", [25.0, 45.0, 60.0, 75.0, 90.0, 150.0, 300.0])
def test_due_schedule_keeps_the_request_budget(monkeypatch: pytest.MonkeyPatch, generation: float) -> None:
    random.seed(11)
    for _ in range(50):
        checks, lag = simulate(monkeypatch, generation, expected=60.0)
        # never more than one check per poll interval on average, counted from the submission
        assert checks <= max(1, (generation + lag) / 10.0) + 1e-9
        assert lag <= 10.0  # and completion is still noticed within one interval


def test_due_schedule_notices_sooner_around_the_expected_time(monkeypatch: pytest.MonkeyPatch) -> None:
    random.seed(3)
    plain = [simulate(monkeypatch, g, expected=None)[1] for g in range(50, 90) for _ in range(5)]
    due = [simulate(monkeypatch, g, expected=60.0)[1] for g in range(50, 90) for _ in range(5)]
    assert sum(due) / len(due) < sum(plain) / len(plain) * 0.95  # within the same request budget


def test_wait_for_task_uses_the_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        sim = SimulatedWait(patch, generation=0.0)
        sim.hook.wait_for_task("kt")
        assert 20.0 <= sim.now <= 21.0  # the first check after FIRST_POLL_DELAY (+ phase), not at 0 s


def test_due_only_within_the_window() -> None:
    wait = Wait("kt", deadline=1e9, poll_interval=10.0, started=0.0, expected_seconds=60.0)
    assert not wait.is_due(now=50.0)  # young
    assert wait.is_due(now=65.0)  # no checks yet: the budget allows it
    assert not wait.is_due(now=130.0)  # long overdue: back to the plain interval
    wait.checks = 7
    assert not wait.is_due(now=65.0)  # seven checks in 65 s: no budget left

"""Spend you can bound and see before you pay, against the emulator (which bills every completed
generation at its cost per mode and duration: ``stats()["billed_usd"]`` is the judge).

- A batch of 40 whose ``max_cost`` fits 25 creates exactly those 25, even ten at a time, writes the
  rest as ``over_budget``, and a retry with a larger ceiling creates only those.
- Without a price table, the batch learns the price from its first generation, which runs alone.
- A dry run creates nothing and predicts the real run's creates, reuses and cost exactly.
- The single operator refuses a generation over its ceiling before sending anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from kirin_fakes import FakeTaskInstance, batch_items

from airflow_provider_kirin.core.batch import BatchItem, ItemResult, pack_items
from airflow_provider_kirin.emulator import EmulatorServer
from airflow_provider_kirin.emulator.config import COSTS
from airflow_provider_kirin.exceptions import KirinBudgetExceededError
from airflow_provider_kirin.hooks.kirin import KirinHook
from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
from airflow_provider_kirin.triggers.batch import BatchEvent, KirinBatchTrigger

#: The emulator's own prices, as a connection's ``prices`` extra states them.
PRICES = {f"{mode}/{duration}": cost for (mode, duration), cost in COSTS.items()}
STD5 = Decimal(COSTS[("std", "5")])  # 0.35
FAST: dict[str, Any] = {"poll_interval": 0.05, "first_poll_delay": 0.0}


def run_batch(items: list[BatchItem], **kwargs: Any) -> list[ItemResult]:
    trigger = KirinBatchTrigger(items=pack_items(items), deadline=time.time() + 120, **{**FAST, **kwargs})

    async def first() -> dict[str, Any]:
        (event,) = [event.payload async for event in trigger.run()]
        return dict(event)

    return BatchEvent.decode(asyncio.run(first())).results


def billed(emulator: EmulatorServer) -> Decimal:
    return Decimal(emulator.stats()["billed_usd"])


def overshoot(emulator: EmulatorServer, ceiling: Decimal) -> Decimal:
    """How far past the ceiling the account was billed (0 when within it)."""
    return max(Decimal(0), billed(emulator) - ceiling)


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.3)
def test_a_ceiling_that_fits_25_of_40_creates_exactly_those_and_a_retry_only_the_rest(
    emulator: EmulatorServer, use_conn: Callable[..., None]
) -> None:
    use_conn(emulator, prices=PRICES)
    items = batch_items([f"spend clip {i}" for i in range(40)], run_id="spend")
    ceiling = STD5 * 25  # 8.75

    plan = KirinHook().estimate([item.request for item in items], max_cost=ceiling)
    assert (plan.creates, plan.reuses, len(plan.over_budget), plan.total) == (25, 0, 15, ceiling)
    assert emulator.stats()["creates"] == 0  # the dry run created nothing
    assert (
        plan.sentence()
        == "would create 25, reuse 0, estimated $8.75 of max_cost $8.75; 15 would not fit max_cost"
    )

    first = run_batch(items, max_in_flight=10, max_cost=str(ceiling))
    assert [r.status for r in first] == ["completed"] * 25 + ["over_budget"] * 15  # admitted in item order
    assert emulator.stats()["creates"] == 25 == plan.creates
    assert billed(emulator) == plan.total
    assert overshoot(emulator, ceiling) == 0
    assert "does not fit max_cost $8.75" in (first[-1].error_message or "")

    larger = STD5 * 40  # 14.00: the retry of the same task instance, with a larger ceiling
    replan = KirinHook().estimate([item.request for item in items], max_cost=larger)
    assert (replan.creates, replan.reuses, replan.over_budget, replan.total) == (15, 25, [], larger)
    second = run_batch(items, max_in_flight=10, max_cost=str(larger))
    assert [r.status for r in second] == ["completed"] * 40
    assert [r.reused for r in second] == [True] * 25 + [False] * 15
    assert emulator.stats()["creates"] == 40  # only the 15 over-budget items were created
    assert billed(emulator) == replan.total
    assert overshoot(emulator, larger) == 0


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.3)
def test_without_prices_the_first_generation_of_a_kind_runs_alone_and_sets_the_price(
    emulator: EmulatorServer,
) -> None:
    items = batch_items([f"learn clip {i}" for i in range(12)], run_id="learn")
    ceiling = Decimal("2.00")  # five at 0.35 fit (1.75), a sixth would not (2.10)

    plan = KirinHook().estimate([item.request for item in items], max_cost=ceiling)
    assert plan.unknown_price == {"std/5": 12}  # it says so rather than guessing
    assert "no price known for 12 of std/5" in plan.sentence()

    results = run_batch(items, max_in_flight=10, max_cost=str(ceiling))
    first_done = min(t.done_at for t in emulator.state.tasks.values())
    created_with_the_first = [t for t in emulator.state.tasks.values() if t.created_at < first_done]
    assert len(created_with_the_first) == 1  # the first of its kind ran alone
    assert [r.status for r in results] == ["completed"] * 5 + ["over_budget"] * 7
    assert emulator.stats()["creates"] == 5
    assert overshoot(emulator, ceiling) == 0


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.3)
def test_a_learned_price_may_overshoot_by_at_most_its_first_generation(emulator: EmulatorServer) -> None:
    items = batch_items([{"prompt": f"pro clip {i}", "mode": "pro", "duration": 10} for i in range(4)])
    ceiling = Decimal("1.00")  # below one pro/10 generation (1.20): unknown before the first one ends
    results = run_batch(items, max_in_flight=4, max_cost=str(ceiling))
    assert [r.status for r in results] == ["completed"] + ["over_budget"] * 3
    assert overshoot(emulator, ceiling) == Decimal(COSTS[("pro", "10")]) - ceiling  # that one generation


@pytest.mark.kirin_emulator(pending_seconds=0.0, processing_seconds=0.3)
def test_the_single_operator_refuses_an_over_ceiling_request_before_sending_anything(
    emulator: EmulatorServer, use_conn: Callable[..., None]
) -> None:
    use_conn(emulator, prices=PRICES)
    operator = KirinTextToVideoOperator(
        task_id="generate", prompt="a pro clip", mode="pro", duration=10, max_cost=1
    )
    ti = FakeTaskInstance(dag_id="spend", run_id="r1", task_id="generate", map_index=-1, pushed={})
    with pytest.raises(KirinBudgetExceededError, match=r"max_cost=1 is below the estimated cost .* \$1\.20"):
        operator.execute(context={"ti": ti})  # type: ignore[arg-type]
    stats = emulator.stats()
    assert (stats["create_requests"], stats["lookups"], stats["gets"]) == (0, 0, 0)
    assert ti.pushed == {}

    within = KirinTextToVideoOperator(
        task_id="generate",
        prompt="a std clip",
        max_cost="0.50",
        wait_for_completion=True,
        poll_interval=0.05,
        first_poll_delay=0,
    )
    within.execute(context={"ti": ti})  # type: ignore[arg-type]
    result = ti.pushed["kirin_result"]
    assert (result["cost"], result["reused"], result["max_cost"], result["over_max_cost"]) == (
        "0.35",
        False,
        "0.50",
        False,
    )
    assert KirinBudgetExceededError.retryable is False

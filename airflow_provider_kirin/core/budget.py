"""Spend control without I/O: what a generation is expected to cost, and whether one more fits a
ceiling.

- :class:`PriceTable` is the connection extra ``prices``: USD per generation by mode and duration,
  e.g. ``{"std/5": "0.35", "std/10": "0.70", "pro/5": "1.20", "pro/10": "2.40"}``.
- :class:`Budget` is the ledger of one batch against its ``max_cost``, across the tries of its task
  instance: what Kirin reported for every generation that ended (reused ones from earlier tries
  included), and an estimate for every generation still in flight. Before each create it answers
  :meth:`Budget.admit`: create now, wait for a generation in flight to end, or not at all
  (``over_budget``). Without a price for a kind it learns one: the first generation of that kind
  runs alone (no other of its kind in flight), and the highest cost seen for the kind is its
  estimate from then on. So the ceiling is never passed while prices are known, and while a price
  is being learned by at most the cost of that one first generation.

Items are admitted in their order in the batch (the trigger gives each its turn), so the same
inputs, prices and ceiling always admit the same items, and a dry run (:func:`plan_spend`)
predicts the real run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_kirin.exceptions import KirinValidationError

if TYPE_CHECKING:
    from airflow_provider_kirin.models import KirinTask, KirinVideoRequest

#: A kind of generation: what its price depends on.
Kind = tuple[str, str]  # (mode, duration)
Decision = Literal["create", "wait", "over_budget"]

_USD = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")
_KIND = re.compile(r"(std|pro)/(5|10)")
USD_ALLOWED = "a non-negative amount in USD, a decimal string or number such as '25' or 12.5"


def parse_usd(name: str, value: object) -> Decimal:
    """A USD amount a DAG author or a connection gives: a plain, non-negative decimal."""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _USD.fullmatch(value.strip()):
        raise KirinValidationError(f"{name}={value!r} is invalid; allowed: {USD_ALLOWED}")
    return Decimal(value.strip())


def kind_of(request: KirinVideoRequest) -> Kind:
    return (request.mode, request.duration)


def kind_name(kind: Kind) -> str:
    return f"{kind[0]}/{kind[1]}"


@dataclass(frozen=True)
class PriceTable:
    """USD per generation by kind (the connection extra ``prices``)."""

    prices: Mapping[Kind, Decimal] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: object) -> PriceTable:
        """From the extra: a dict (or its JSON) of ``"<mode>/<duration>"`` to a USD amount; a
        ``ValueError`` names a bad entry (the connection's reader says which connection)."""
        try:
            return cls._parse(value)
        except KirinValidationError as err:
            raise ValueError(err.message) from None

    @classmethod
    def _parse(cls, value: object) -> PriceTable:
        if value is None or value == "":
            return cls()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if not isinstance(value, dict):
            raise KirinValidationError(
                'prices is invalid; allowed: a JSON object such as {"std/5": "0.35", "pro/10": "2.40"}'
            )
        prices: dict[Kind, Decimal] = {}
        for name, amount in value.items():
            match = _KIND.fullmatch(str(name))
            if match is None:
                raise KirinValidationError(
                    f"prices: {name!r} is invalid; allowed: 'std/5', 'std/10', 'pro/5' or 'pro/10'"
                )
            prices[(match.group(1), match.group(2))] = parse_usd(f"prices[{name!r}]", amount)
        return cls(prices)

    def price(self, kind: Kind) -> Decimal | None:
        return self.prices.get(kind)


def parse_cost(cost: str | None) -> Decimal:
    """A cost Kirin reported as a Decimal (0 for a missing or unreadable one: the server is not trusted)."""
    if not cost:
        return Decimal(0)
    try:
        value = Decimal(cost)
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return value if value.is_finite() and value >= 0 else Decimal(0)


@dataclass
class Budget:
    """The ledger of one batch against ``max_cost`` (``None``: no ceiling, only bookkeeping).

    :meth:`admit` before a create; :meth:`started` when a generation (created or reused) is in
    flight; :meth:`ended` with what Kirin reported when it ends.
    """

    max_cost: Decimal | None = None
    prices: PriceTable = field(default_factory=PriceTable)
    #: What Kirin reported for every generation that ended (reused ones included).
    spent: Decimal = Decimal(0)
    #: What this try paid for: generations it created, once ended.
    spent_this_try: Decimal = Decimal(0)
    #: The estimate of every generation in flight, by item index.
    reserved: dict[int, Decimal] = field(default_factory=dict)
    #: The highest cost seen per kind without a price, and the kinds whose first one is in flight.
    learned: dict[Kind, Decimal] = field(default_factory=dict)
    learning: dict[Kind, int] = field(default_factory=dict)

    def estimate(self, kind: Kind) -> Decimal | None:
        """The price of a kind, else the highest cost seen for it, else ``None`` (unknown)."""
        price = self.prices.price(kind)
        return price if price is not None else self.learned.get(kind)

    @property
    def committed(self) -> Decimal:
        return self.spent + sum(self.reserved.values(), Decimal(0))

    def admit(self, kind: Kind) -> Decision:
        """Whether one more generation of ``kind`` may be created now (then call :meth:`started`),
        or only once a generation in flight has ended (``"wait"``), or not at all."""
        estimate, ceiling = self.estimate(kind), self.max_cost
        if ceiling is None:
            return "create"
        if estimate is None:  # the price is learned from the first generation of the kind, alone
            if kind in self.learning:
                return "wait"
            if self.committed < ceiling:
                return "create"  # may pass the ceiling by this one generation's cost, no more
            return "wait" if self.reserved else "over_budget"
        if self.committed + estimate <= ceiling:
            return "create"
        if self.reserved and self.spent + estimate <= ceiling:
            return "wait"  # fits once the generations in flight have ended, if they cost less
        return "over_budget"

    def started(self, index: int, kind: Kind) -> None:
        """A generation of ``kind`` is in flight for item ``index`` (created now, or reused): its
        estimate is reserved; a kind without one is being learned, by this generation."""
        estimate = self.estimate(kind)
        if estimate is None and self.max_cost is not None:
            self.learning.setdefault(kind, index)
        self.reserved[index] = estimate if estimate is not None else Decimal(0)

    def ended(self, index: int, kind: Kind, cost: str | None, *, created: bool) -> None:
        """Item ``index``'s generation ended; Kirin reported ``cost`` (a failed one may cost too)."""
        self.reserved.pop(index, None)
        if self.learning.get(kind) == index:
            del self.learning[kind]
        value = parse_cost(cost)
        self.spent += value
        if created:
            self.spent_this_try += value
        if self.prices.price(kind) is None and cost is not None:
            self.learned[kind] = max(self.learned.get(kind, Decimal(0)), value)

    def usd(self, amount: Decimal) -> str:
        return f"{amount:.2f}"


def over_budget_reason(budget: Budget, kind: Kind) -> str:
    estimate = budget.estimate(kind)
    shown = f"${estimate}" if estimate is not None else "unknown"
    return (
        f"not submitted: its estimate ({kind_name(kind)}: {shown}) does not fit max_cost "
        f"${budget.max_cost} after ${budget.usd(budget.committed)} spent or committed"
    )


def ceiling_error_message(request: KirinVideoRequest, estimate: Decimal, max_cost: Decimal) -> str:
    return (
        f"max_cost={max_cost} is below the estimated cost of this generation "
        f"({kind_name(kind_of(request))}: ${estimate}); nothing was sent. Raise max_cost or ask for "
        "a cheaper mode or duration."
    )


@dataclass
class SpendPlan:
    """What a batch would do, without doing it (the dry run): how many generations it would create
    and reuse, their estimated cost by kind, and the items that would not fit ``max_cost``."""

    creates: int = 0
    reuses: int = 0
    over_budget: list[int] = field(default_factory=list)
    #: Estimated cost of the generations it would create, by kind ("std/5": 1.75).
    new_cost: dict[str, Decimal] = field(default_factory=dict)
    #: What the generations it would reuse cost (reported, or estimated while in flight).
    reused_cost: Decimal = Decimal(0)
    #: Generations it would create of a kind with no price known, by kind: not in the estimate.
    unknown_price: dict[str, int] = field(default_factory=dict)
    max_cost: Decimal | None = None

    @property
    def total(self) -> Decimal:
        return self.reused_cost + sum(self.new_cost.values(), Decimal(0))

    def sentence(self) -> str:
        """``would create 412, reuse 88, estimated $86.52 of max_cost $100``: one line for a reviewer."""
        ceiling = f" of max_cost ${self.max_cost}" if self.max_cost is not None else ""
        text = f"would create {self.creates}, reuse {self.reuses}, estimated ${self.total:.2f}{ceiling}"
        if self.over_budget:
            text += f"; {len(self.over_budget)} would not fit max_cost"
        if self.unknown_price:
            kinds = ", ".join(f"{n} of {kind}" for kind, n in sorted(self.unknown_price.items()))
            text += f"; no price known for {kinds} (not in the estimate: set the connection's prices)"
        return text

    def to_xcom(self) -> dict[str, Any]:
        """Small, whatever the batch's size: counts, amounts, and the first over-budget items."""
        return {
            "dry_run": True,
            "would_create": self.creates,
            "would_reuse": self.reuses,
            "estimated_cost": f"{self.total:.2f}",
            "estimated_new_cost_by_kind": {
                kind: f"{cost:.2f}" for kind, cost in sorted(self.new_cost.items())
            },
            "reused_cost": f"{self.reused_cost:.2f}",
            "max_cost": str(self.max_cost) if self.max_cost is not None else None,
            "over_budget": len(self.over_budget),
            "over_budget_items": self.over_budget[:20],
            "unknown_price": dict(sorted(self.unknown_price.items())),
            "summary": self.sentence(),
        }


def plan_spend(entries: Sequence[tuple[int, Kind, KirinTask | None]], budget: Budget) -> SpendPlan:
    """Simulate a batch's admissions in item order, as the trigger makes them, every generation
    costing its estimate. ``entries`` is ``(index, kind, reusable task or None)`` per item."""
    from airflow_provider_kirin.core.waiting import outcome_of

    plan = SpendPlan(max_cost=budget.max_cost)
    for index, kind, task in entries:
        estimate = budget.estimate(kind)
        if task is not None:  # reused: what Kirin reported once it ended, else its estimate
            plan.reuses += 1
            ended = outcome_of(task) is not None
            spent = parse_cost(task.cost) if ended else (estimate or Decimal(0))
            plan.reused_cost += spent
            budget.spent += spent
            continue
        if budget.admit(kind) == "over_budget":  # no "wait" here: nothing is in flight
            plan.over_budget.append(index)
            continue
        plan.creates += 1
        if estimate is None:
            plan.unknown_price[kind_name(kind)] = plan.unknown_price.get(kind_name(kind), 0) + 1
            continue
        plan.new_cost[kind_name(kind)] = plan.new_cost.get(kind_name(kind), Decimal(0)) + estimate
        budget.spent += estimate
    return plan

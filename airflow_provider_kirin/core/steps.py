"""The vocabulary between the I/O-free core and the transports: a *plan* asks for steps, a
transport carries them out.

A plan is a generator. It yields :class:`Send` (send one request, answer with what it meant) or
:class:`Sleep` (wait this long), and returns its result. The core's plans (``waiting.wait_plan``,
``idempotency.submit_plan``, ``retry.retried``) decide everything: what to send, how to read the
answer, when to retry, look up, sleep or give up. A transport (``KirinHook.run`` over
``requests``, ``KirinAsyncHook.run`` over ``aiohttp``) only sends and sleeps, so the sync and
async paths cannot disagree, and a plan can be tested by sending it answers, with no server::

    plan = submit_plan(protocol, request)
    step = next(plan)  # Send(call=<lookup ...>)
    step = plan.send(None)  # the lookup found nothing -> Send(call=<create ...>)

The answer to a :class:`Send` is what ``KirinProtocol.interpret`` made of the response: a
``KirinTask``, ``None`` (a lookup that found nothing), or an exception thrown into the plan
(``TransientKirinError`` worth another try, or a typed ``KirinError``). :class:`PlanRunner`
holds that hand-over protocol once, for both transports.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from airflow_provider_kirin.models import KirinTask
    from airflow_provider_kirin.protocol import ApiCall

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Send:
    """Step: send ``call`` once, in all within ``budget`` seconds (``None``: the connection's
    ``request_timeout``); answer with the task, ``None``, or throw the error."""

    call: ApiCall
    budget: float | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Step: wait ``seconds`` (never negative), then answer ``None``. ``retry``: the wait before
    another try of a failed request (``retry.retried``), not a wait's pause between status checks;
    the transports count these (the ``kirin.http_retries`` metric)."""

    seconds: float
    retry: bool = False


Step = Send | Sleep
#: A plan: yields steps, is answered with ``KirinTask | None`` (or has an error thrown in), returns T.
Plan = Generator[Step, "KirinTask | None", T]


class PlanRunner(Generic[T]):
    """Steps a plan along for a transport: the transport asks :meth:`next_step`, carries it out and
    hands back :meth:`answer` or :meth:`fail`; when ``next_step`` is ``None`` the plan's result is
    :attr:`result`. Holds the generator protocol (send, throw, ``StopIteration``) in one place::

        runner = PlanRunner(plan)
        while (step := runner.next_step()) is not None:
            ...  # carry out the step, then runner.answer(value) or runner.fail(error)
        return runner.result
    """

    __slots__ = ("_answer", "_error", "_plan", "_result")

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self._answer: KirinTask | None = None
        self._error: BaseException | None = None
        self._result: Any = None

    def next_step(self) -> Step | None:
        answer, error = self._answer, self._error
        self._answer = self._error = None
        try:
            return self._plan.throw(error) if error is not None else self._plan.send(answer)
        except StopIteration as stop:
            self._result = stop.value
            return None

    def answer(self, value: KirinTask | None) -> None:
        self._answer = value

    def fail(self, error: BaseException) -> None:
        self._error = error

    @property
    def result(self) -> T:
        return self._result


def send(call: ApiCall, budget: float | None = None) -> Generator[Step, Any, KirinTask | None]:
    """A one-step plan: send ``call`` once, return the answer (``yield from send(call)``)."""
    answer: KirinTask | None = yield Send(call, budget)
    return answer

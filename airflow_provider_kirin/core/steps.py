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
holds that hand-over protocol once, for both transports, and tells a :class:`PlanObserver` (the
hook's ``metrics.KirinMetrics``) what happened, so neither transport repeats that either.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

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


class PlanObserver(Protocol):
    """What a :class:`PlanRunner` reports as a plan runs (``metrics.KirinMetrics`` is one)."""

    def sent(self, call: ApiCall) -> None: ...
    def answered(self, call: ApiCall, task: KirinTask | None) -> None: ...
    def failed(self, call: ApiCall) -> None: ...
    def slept(self, step: Sleep) -> None: ...
    def finished(self, result: Any) -> None: ...


class PlanRunner(Generic[T]):
    """Steps a plan along for a transport: the transport asks :meth:`next_step`, carries it out and
    hands back :meth:`answer` or :meth:`fail`; when ``next_step`` is ``None`` the plan's result is
    :attr:`result`. Holds the generator protocol (send, throw, ``StopIteration``) in one place, and
    reports each step to ``observer`` (sent, answered or failed, slept, finished)::

        runner = PlanRunner(plan, observer)
        while (step := runner.next_step()) is not None:
            ...  # carry out the step, then runner.answer(value) or runner.fail(error)
        return runner.result
    """

    __slots__ = ("_answer", "_error", "_observer", "_plan", "_result", "_step")

    def __init__(self, plan: Plan[T], observer: PlanObserver | None = None) -> None:
        self._plan = plan
        self._observer = observer
        self._step: Step | None = None
        self._answer: KirinTask | None = None
        self._error: BaseException | None = None
        self._result: Any = None

    def next_step(self) -> Step | None:
        answer, error, done, observer = self._answer, self._error, self._step, self._observer
        self._answer = self._error = self._step = None
        if observer is not None and isinstance(done, Sleep):
            observer.slept(done)
        try:
            step = self._plan.throw(error) if error is not None else self._plan.send(answer)
        except StopIteration as stop:
            self._result = stop.value
            if observer is not None:
                observer.finished(stop.value)
            return None
        if observer is not None and isinstance(step, Send):
            observer.sent(step.call)
        self._step = step
        return step

    def answer(self, value: KirinTask | None) -> None:
        self._answer = value
        if self._observer is not None and isinstance(self._step, Send):
            self._observer.answered(self._step.call, value)

    def fail(self, error: BaseException) -> None:
        self._error = error
        if self._observer is not None and isinstance(self._step, Send):
            self._observer.failed(self._step.call)

    @property
    def result(self) -> T:
        return self._result


def send(call: ApiCall, budget: float | None = None) -> Generator[Step, Any, KirinTask | None]:
    """A one-step plan: send ``call`` once, return the answer (``yield from send(call)``)."""
    answer: KirinTask | None = yield Send(call, budget)
    return answer

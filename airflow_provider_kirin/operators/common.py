"""What every Kirin operator (and the sensor) shares once it runs: retry decisions that fit the
error, and what it tells OpenLineage.

- :func:`default_retry_policy`: from Airflow 3.3 the operators' default ``retry_policy`` is
  :class:`~airflow_provider_kirin.retry_policy.KirinRetryPolicy` (a ``retry_policy`` you pass, or
  set in ``default_args``, wins; ``None`` turns it off).
- :func:`kirin_errors`: wraps ``execute``/``execute_complete``. It keeps the Kirin error for the
  lineage FAIL event, and on Airflow 3.0-3.2 (no retry policies) raises ``AirflowFailException``
  from an error a retry cannot fix, so the task fails at once there too.
- :class:`KirinLineageMixin`: ``get_openlineage_facets_on_complete``/``_on_failure`` from what the
  operator recorded (:meth:`KirinLineageMixin.record_lineage`): the locations it wrote and the
  facts of its run. The OpenLineage provider is optional: ``airflow_provider_kirin.lineage``
  (which imports its classes through common-compat) is imported only when it asks.

Imports nothing heavy at DAG parse time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_kirin._compat import HAS_RETRY_POLICY

if TYPE_CHECKING:
    from airflow_provider_kirin.exceptions import KirinError

F = TypeVar("F", bound=Callable[..., Any])


def default_retry_policy(kwargs: dict[str, Any], retry_failed_generations: bool) -> None:
    """Give the operator's keyword arguments the default ``retry_policy`` (Airflow 3.3+), unless
    the DAG author set one (directly or through ``default_args``)."""
    if HAS_RETRY_POLICY and "retry_policy" not in kwargs:
        from airflow_provider_kirin.retry_policy import KirinRetryPolicy

        kwargs["retry_policy"] = KirinRetryPolicy(retry_failed_generations=retry_failed_generations)


def kirin_errors(method: F) -> F:
    """Wrap an operator's ``execute``/``execute_complete`` (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as err:
            from airflow_provider_kirin.exceptions import KirinError

            if not isinstance(err, KirinError):
                raise
            self._kirin_error = err
            final = fail_now(err, getattr(self, "retry_failed_generations", True))
            if final is None:
                raise
            raise final from err

    return wrapper  # type: ignore[return-value]


def fail_now(error: KirinError, retry_failed_generations: bool) -> BaseException | None:
    """On Airflow 3.0-3.2: the ``AirflowFailException`` that fails the task at once when a retry
    cannot fix ``error`` (``core/task_retry.decide``); ``None`` otherwise, and always from 3.3,
    where the retry policy decides (and sets the delay a ``Retry-After`` asks for)."""
    if HAS_RETRY_POLICY:
        return None
    from airflow_provider_kirin._compat import AirflowFailException
    from airflow_provider_kirin.core.task_retry import decide

    verdict = decide(error, retry_failed_generations=retry_failed_generations)
    if verdict.action != "fail":
        return None
    return AirflowFailException(f"{type(error).__name__}: {error} Not retried: {verdict.reason}.")


class KirinLineageMixin:
    """OpenLineage methods for a Kirin operator (mixed into a ``BaseOperator``)."""

    _kirin_error: KirinError | None = None
    #: What this run did, for lineage: the facet's fields (plain JSON) and the locations written.
    _kirin_facts: dict[str, Any] | None = None
    _kirin_outputs: list[str] | None = None
    #: The ``operation`` of the run facet: ``generate``, ``batch`` or ``download``.
    lineage_operation: str = "generate"

    def record_lineage(self, facts: dict[str, Any] | None = None, outputs: list[str] | None = None) -> None:
        """Add ``facts`` (run facet fields) and ``outputs`` (locations written, as URLs)."""
        self._kirin_facts = {**(self._kirin_facts or {}), **(facts or {})}
        if outputs:
            self._kirin_outputs = [*(self._kirin_outputs or []), *outputs]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the locations written as output datasets, and the ``kirin`` run facet."""
        from airflow_provider_kirin.lineage import operator_lineage

        return operator_lineage(self.lineage_operation, self._kirin_facts, self._kirin_outputs, None)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """OpenLineage on failure: as on completion, plus the error's code and class."""
        from airflow_provider_kirin.lineage import operator_lineage

        return operator_lineage(
            self.lineage_operation, self._kirin_facts, self._kirin_outputs, self._kirin_error
        )

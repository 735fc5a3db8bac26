"""The one module that knows how the supported Airflow lines (3.0, 3.1, 3.2, 3.3) differ.

Every other module imports Airflow's moving parts from here, never from their version-specific
homes, so a new Airflow line is supported (or a difference dropped) by editing this file alone::

    from airflow_provider_kirin._compat import AirflowException, BaseHook, conf

Where ``apache-airflow-providers-common-compat`` already bridges a difference, it is used as is:

* ``BaseHook`` (``airflow.sdk`` from 3.1, ``airflow.hooks.base`` on 3.0), ``AirflowException`` and
  ``AirflowSensorTimeout`` (``airflow.sdk.exceptions`` from 3.2, ``airflow.exceptions`` before) and
  ``conf`` (``airflow.sdk.configuration`` from 3.2, ``airflow.configuration`` before).
* :func:`aget_connection`: a connection lookup that never blocks the triggerer's event loop.
  ``BaseHook.aget_connection`` only exists from 3.1, and before 3.3.2 it masks secrets with a
  synchronous call to the supervisor; common-compat's ``get_async_connection`` then runs the
  synchronous lookup in a worker thread instead. :func:`aextra_dejson` does the same for the
  connection's extra (``Connection.aextra_dejson``, Airflow 3.3.2).

The remaining gates are this module's own, each naming the Airflow version that added the feature:

* :func:`amask_secret` (``airflow.sdk.log.amask_secret``, Airflow 3.3).
* The declarative connection form ``conn-fields``/``ui-field-behaviour`` in the provider info is
  read from Airflow 3.2; 3.0 and 3.1 call the hook's ``get_ui_field_behaviour`` and
  ``get_connection_form_widgets`` instead, which :func:`legacy_ui_field_behaviour` and
  :func:`legacy_connection_form_widgets` derive from the same provider info: the form is declared once.
* ``BaseTrigger.on_kill`` is called by the triggerer from Airflow 3.3; before, a killed task's
  trigger is only cancelled and cleaned up (the same as when it moves to another triggerer), so
  the "generation continues and is billed" warning is not logged there.
* Retry policies (``airflow.sdk.definitions.retry_policy``, Airflow 3.3): :data:`HAS_RETRY_POLICY`,
  :class:`RetryPolicy`, :class:`RetryDecision`, :class:`RetryAction`. Before 3.3 the operators
  raise :class:`AirflowFailException` (common-compat ``sdk``) for an error a retry cannot fix.
* Metrics from task and trigger code (:func:`stats`): ``airflow.stats.Stats`` on 3.0 and 3.1
  (configured from ``[metrics]`` on first use), the Task SDK's ``Stats`` from 3.2 (configured by
  the task runner and the triggerer); common-compat's ``sdk.Stats`` where it has it.
  :func:`warm_stats` builds the metrics client (a StatsD client resolves its host) off the event
  loop.
* Hook lineage (:func:`get_hook_lineage_collector`): common-compat's collector, with the
  ``add_extra`` polyfill before 3.2; a no-op where common-compat predates it.

``docs/compatibility.md`` has the feature x Airflow line table.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from airflow import __version__ as AIRFLOW_VERSION
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    BaseHook,
    conf,
)

# ``airflow.sdk.log`` exposes ``mask_secret`` on every 3.x line (3.0 resolves it lazily).
from airflow.sdk.log import mask_secret
from packaging.version import Version

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_3_PLUS",
    "HAS_RETRY_POLICY",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "BaseHook",
    "RetryAction",
    "RetryDecision",
    "RetryPolicy",
    "aextra_dejson",
    "aget_connection",
    "amask_secret",
    "conf",
    "get_hook_lineage_collector",
    "legacy_connection_form_widgets",
    "legacy_ui_field_behaviour",
    "mask_secret",
    "stats",
    "warm_stats",
]

#: Airflow 3.3 added ``amask_secret`` and the triggerer's call of ``BaseTrigger.on_kill``.
AIRFLOW_V_3_3_PLUS = Version(AIRFLOW_VERSION).release >= (3, 3)

try:  # Airflow 3.3: a task's ``retry_policy`` decides after each failed try (in the worker).
    from airflow.sdk.definitions.retry_policy import RetryAction, RetryDecision, RetryPolicy

    HAS_RETRY_POLICY = True
except ImportError:  # 3.0-3.2: only AirflowFailException fails a task at once
    HAS_RETRY_POLICY = False
    RetryAction = RetryDecision = None  # type: ignore[assignment,misc]
    RetryPolicy = object  # type: ignore[assignment,misc]


class _NoStats:
    """Metrics off: where no metrics facility can be found (never expected on a supported line)."""

    def incr(self, *args: Any, **kwargs: Any) -> None:
        return None

    def timing(self, *args: Any, **kwargs: Any) -> None:
        return None


@functools.lru_cache(maxsize=1)
def stats() -> Any:
    """Airflow's own metrics facility as task and trigger code reaches it (``incr``, ``timing``);
    resolved once per process (each metric then costs a method call).

    common-compat's ``sdk.Stats`` resolves it on every line it knows; older common-compat releases
    (Python 3.10's floor) do not export it, so the homes are tried directly: the Task SDK's
    (``airflow.sdk.observability.stats``, 3.2+) before core's (``airflow.stats``, 3.0/3.1).
    """
    try:
        from airflow.providers.common.compat.sdk import Stats

        return Stats
    except ImportError:
        pass
    try:
        from airflow.sdk.observability.stats import Stats

        return Stats
    except ImportError:
        pass
    try:
        from airflow.stats import Stats

        return Stats
    except ImportError:
        return _NoStats()


def warm_stats() -> None:
    """Create the metrics client now, so the first metric sent from a trigger does not build it
    (and resolve the StatsD host) on the triggerer's event loop. Call it in a worker thread.

    3.0-3.2 build the client on the first attribute read of ``Stats``; 3.3 on the first metric, in
    ``_get_backend`` of the SDK's stats module.
    """
    facility = stats()
    try:
        from airflow.sdk._shared.observability.metrics import stats as sdk_stats

        getter = getattr(sdk_stats, "_get_backend", None)
        if callable(getter) and getattr(facility, "incr", None) is getattr(sdk_stats, "incr", None):
            getter()
            return
    except ImportError:
        pass
    getattr(facility, "incr", None)


def get_hook_lineage_collector() -> Any:
    """The hook lineage collector (``add_output_asset``...): common-compat's, with its polyfills;
    a collector that records nothing where common-compat predates it."""
    try:
        from airflow.providers.common.compat.lineage.hook import (
            get_hook_lineage_collector as compat_collector,
        )
    except ImportError:
        return None
    return compat_collector()


async def aget_connection(conn_id: str) -> Connection:
    """The Airflow connection ``conn_id``, looked up without blocking the running event loop."""
    return await get_async_connection(conn_id)


async def aextra_dejson(conn: Connection) -> dict[str, Any]:
    """The connection's extra as a dict, its secrets masked, without blocking the event loop.

    ``Connection.extra_dejson`` masks with a synchronous call to the supervisor; Airflow 3.3.2 added
    ``Connection.aextra_dejson``. common-compat's ``get_async_extra_dejson`` (1.21+) picks the right
    one; with an older common-compat (Python 3.10) the sync property runs in a worker thread.
    """
    try:
        from airflow.providers.common.compat.connection import get_async_extra_dejson
    except ImportError:
        from asgiref.sync import sync_to_async

        return dict(await sync_to_async(lambda: conn.extra_dejson)())
    return dict(await get_async_extra_dejson(conn))


async def amask_secret(secret: str, name: str | None = None) -> None:
    """Register ``secret`` with the secrets masker from async code (a trigger), without blocking.

    Airflow 3.3 added ``airflow.sdk.log.amask_secret``; before it, the synchronous ``mask_secret``
    (which may block on the supervisor) runs in a worker thread, as common-compat does for the
    connection lookup.
    """
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.log import amask_secret as sdk_amask_secret

        await sdk_amask_secret(secret, name)
        return
    from asgiref.sync import sync_to_async

    await sync_to_async(mask_secret)(secret, name)


def legacy_ui_field_behaviour(connection_type: dict[str, Any]) -> dict[str, Any]:
    """A provider-info ``connection-types`` entry's ``ui-field-behaviour`` in the spelling of
    ``get_ui_field_behaviour``.

    For Airflow 3.0 and 3.1, which build the connection form from the hook's methods; Airflow 3.2
    reads ``conn-fields``/``ui-field-behaviour`` from the provider info and then skips them.
    """
    behaviour = connection_type.get("ui-field-behaviour", {})
    return {key.replace("-", "_"): value for key, value in behaviour.items()}


def legacy_connection_form_widgets(connection_type: dict[str, Any]) -> dict[str, Any]:
    """One optional form field per ``conn-fields`` entry of a provider-info ``connection-types``
    entry (saved in the extra).

    For Airflow 3.0 and 3.1 (see :func:`legacy_ui_field_behaviour`). Their API server substitutes
    stand-ins for wtforms/flask_appbuilder when it builds the form. Airflow 3.0 builds any hook's
    form only where wtforms is installed (the FAB provider brings it); without it this returns no
    fields rather than failing.
    """
    try:
        from wtforms import BooleanField, IntegerField, StringField
        from wtforms.validators import Optional
    except ImportError:
        return {}
    try:  # only the fields' look: Bootstrap text boxes where the FAB provider is installed
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    except ImportError:
        BS3TextFieldWidget = None

    kinds = {"integer": IntegerField, "boolean": BooleanField}
    widgets: dict[str, Any] = {}
    for name, field in connection_type.get("conn-fields", {}).items():
        schema = field.get("schema", {})
        types = schema.get("type", "string")
        kind = next((t for t in ([types] if isinstance(types, str) else types) if t != "null"), "string")
        field_class = kinds.get(kind, StringField)
        kwargs: dict[str, Any] = {"description": field.get("description", "")}
        if field_class is not BooleanField:
            kwargs["validators"] = [Optional()]
            if BS3TextFieldWidget is not None:
                kwargs["widget"] = BS3TextFieldWidget()
        if schema.get("default") is not None:
            default = schema["default"]
            kwargs["default"] = str(default) if field_class is StringField else default
        widgets[name] = field_class(field.get("label", name), **kwargs)
    return widgets

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

``docs/compatibility.md`` has the feature x Airflow line table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow import __version__ as AIRFLOW_VERSION
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import (
    AirflowException,
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
    "AirflowException",
    "AirflowSensorTimeout",
    "BaseHook",
    "aextra_dejson",
    "aget_connection",
    "amask_secret",
    "conf",
    "legacy_connection_form_widgets",
    "legacy_ui_field_behaviour",
    "mask_secret",
]

#: Airflow 3.3 added ``amask_secret`` and the triggerer's call of ``BaseTrigger.on_kill``.
AIRFLOW_V_3_3_PLUS = Version(AIRFLOW_VERSION).release >= (3, 3)


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

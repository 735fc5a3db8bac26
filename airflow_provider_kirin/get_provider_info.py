"""Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point.

Validated in the tests against ``airflow/provider_info.schema.json`` from airflow-core. The
connection form is declared here (``conn-fields``/``ui-field-behaviour``), so Airflow builds it
without importing the hook; its extra fields come from ``KirinConnectionConfig``
(:func:`~airflow_provider_kirin.core.config.connection_form_fields`), the one declaration of the
connection's settings.
"""

from __future__ import annotations

from typing import Any

INTEGRATION = "Kirin"


def get_provider_info() -> dict[str, Any]:
    from airflow_provider_kirin import __version__
    from airflow_provider_kirin.core.config import connection_type_info

    return {
        "package-name": "airflow-provider-kirin",
        "name": "Kirin",
        "description": "Text-to-video generation with the Kirin V2.5 Turbo API (model kirin_v2_5_turbo_t2v).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "tags": ["ai", "video"],
            }
        ],
        "hooks": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_kirin.hooks.kirin"]}
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_provider_kirin.operators.kirin",
                    "airflow_provider_kirin.operators.download",
                    "airflow_provider_kirin.operators.batch",
                ],
            }
        ],
        "sensors": [
            {"integration-name": INTEGRATION, "python-modules": ["airflow_provider_kirin.sensors.kirin"]}
        ],
        "triggers": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_provider_kirin.triggers.kirin",
                    "airflow_provider_kirin.triggers.batch",
                ],
            }
        ],
        "extra-links": ["airflow_provider_kirin.links.kirin.KirinVideoLink"],
        "connection-types": [
            connection_type_info(),
        ],
    }

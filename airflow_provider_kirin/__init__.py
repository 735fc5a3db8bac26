"""Apache Airflow provider for the Kirin V2.5 Turbo text-to-video API.

Import the pieces you need from their modules, for example::

    from airflow_provider_kirin.operators.kirin import KirinTextToVideoOperator
    from airflow_provider_kirin.sensors.kirin import KirinTaskSensor

This package module stays import-light on purpose: DAG files import it at parse time.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

"""OpenLineage for the Kirin operators: output datasets named by OpenLineage's naming conventions,
and a ``kirin`` run facet.

Imported only when the OpenLineage provider asks an operator for its facets
(``operators/common.KirinLineageMixin``), never at DAG parse time; the OpenLineage classes come
through ``apache-airflow-providers-common-compat`` (``common.compat.openlineage.facet``), so a
deployment without the OpenLineage provider imports nothing of it.

Dataset names (:func:`dataset_name`), from where a file landed (a URL, ``io/storage.location``):

=====================================  ==============================  ==========================
location                               namespace                       name
=====================================  ==============================  ==========================
``file:///data/v/kt_1.mp4``            ``file``                        ``/data/v/kt_1.mp4``
``s3://bucket/v/kt_1.mp4``             ``s3://bucket``                 ``v/kt_1.mp4``
``gs://bucket/v/kt_1.mp4``             ``gs://bucket``                 ``v/kt_1.mp4``
``abfss://c@acct.dfs.core.windows...``  ``abfss://c@acct.dfs.core...``  ``v/kt_1.mp4``
``https://files.example/v/1.mp4?sig``  ``https://files.example``        ``/v/1.mp4`` (no query)
=====================================  ==============================  ==========================

A URL's query (a signed URL's signature) and user info never reach a dataset name.

The run facet ``kirin`` (:func:`run_facet_fields`) holds no prompt, key or URL: for one generation
the model, mode, duration, aspect ratio, external and Kirin task ids, whether the generation was
reused and its cost (USD string); for a batch the item counts by status, how many failed and the
total cost; for a download the Kirin task id and cost; on failure also the error's class and code.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

#: Object stores whose dataset names have no leading slash (OpenLineage naming conventions).
_BUCKET_SCHEMES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs"}
#: Schemes whose authority names a container, not a user: kept whole.
_CONTAINER_SCHEMES = frozenset({"abfs", "abfss", "wasb", "wasbs", "az", "adl"})

#: The facet's fields, each a plain JSON value; anything else is never copied into it.
FACET_FIELDS = (
    "operation",
    "model",
    "mode",
    "duration",
    "aspect_ratio",
    "external_task_id",
    "kirin_task_id",
    "reused",
    "cost",
    "items",
    "counts",
    "failed",
    "total_cost",
    "manifest",
    "stored",
    "error_class",
    "error_code",
)


def dataset_name(location: str) -> tuple[str, str]:
    """``(namespace, name)`` of the dataset at ``location`` (see the module docstring)."""
    parts = urlsplit(str(location))
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        host = parts.hostname or ""
        return (f"file://{host}" if host and host != "localhost" else "file"), parts.path
    path = parts.path
    if scheme in _BUCKET_SCHEMES:
        return f"{_BUCKET_SCHEMES[scheme]}://{parts.hostname or ''}", path.lstrip("/")
    if scheme in _CONTAINER_SCHEMES:
        return f"{scheme}://{parts.netloc}", path.lstrip("/")
    host = parts.hostname or ""
    authority = f"{host}:{parts.port}" if parts.port else host
    return f"{scheme}://{authority}", path or "/"


def run_facet_fields(
    operation: str, facts: dict[str, Any] | None, error: BaseException | None
) -> dict[str, Any]:
    """The ``kirin`` run facet's fields: ``facts`` (only :data:`FACET_FIELDS`, redacted), plus the
    error's class and code."""
    from airflow_provider_kirin.core.redaction import redact_json

    fields: dict[str, Any] = {"operation": operation}
    for name, value in (facts or {}).items():
        if name in FACET_FIELDS and value is not None:
            fields[name] = value
    if isinstance(fields.get("duration"), str) and fields["duration"].isdigit():
        fields["duration"] = int(fields["duration"])  # the wire's "5" is a number of seconds
    if error is not None:
        fields["error_class"] = type(error).__name__
        code = getattr(error, "code", None)
        if code:
            fields["error_code"] = str(code)
    return dict(redact_json(fields))


def operator_lineage(
    operation: str,
    facts: dict[str, Any] | None,
    outputs: list[str] | None,
    error: BaseException | None,
) -> Any:
    """The ``OperatorLineage`` of a Kirin operator's run; ``None`` without the OpenLineage client."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    facet_class = _facet_class()
    if facet_class is None:
        return None
    from airflow.providers.common.compat.openlineage.facet import OutputDataset

    datasets = []
    for location in dict.fromkeys(outputs or []):  # each location once, in order
        namespace, name = dataset_name(location)
        datasets.append(OutputDataset(namespace=namespace, name=name))
    facet = facet_class(**run_facet_fields(operation, facts, error))
    return OperatorLineage(outputs=datasets, run_facets={"kirin": facet})


@lru_cache(maxsize=1)
def _facet_class() -> Any:
    """The ``kirin`` run facet class, built on the OpenLineage client's ``RunFacet`` (through
    common-compat); ``None`` when the client is not installed."""
    import attrs
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    if not isinstance(RunFacet, type):  # common-compat's stand-in when the client is missing
        return None

    @attrs.define
    class KirinRunFacet(RunFacet):
        """What a Kirin operator did: see ``airflow_provider_kirin.lineage``."""

        operation: str
        model: str | None = None
        mode: str | None = None
        duration: int | None = None
        aspect_ratio: str | None = None
        external_task_id: str | None = None
        kirin_task_id: str | None = None
        reused: bool | None = None
        cost: str | None = None
        items: int | None = None
        counts: dict[str, int] | None = None
        failed: int | None = None
        total_cost: str | None = None
        manifest: str | None = None
        stored: int | None = None
        error_class: str | None = None
        error_code: str | None = None

    return KirinRunFacet

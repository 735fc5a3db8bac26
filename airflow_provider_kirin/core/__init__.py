"""The I/O-free core: every decision the provider makes, with no sockets, files or sleeps.

- ``defaults.py``: the defaults and why; ``config.py``: the connection's settings.
- ``steps.py``: the vocabulary between plans and transports (``Send``, ``Sleep``, ``PlanRunner``).
- ``retry.py``: the retry policy (tenacity), run as a plan.
- ``waiting.py``: the one verdict on a task (``outcome_of``) and the one wait engine (``Wait``).
- ``idempotency.py``: derived ``external_task_id`` values and the submit plan (never pay twice).
- ``batch.py``: batch items, their results and tallies.
- ``redaction.py``: the registry of secrets and redaction where server values enter.

The wire format sits beside this package (``models.py``, ``protocol.py``, ``exceptions.py``);
the code that does I/O is in ``io/`` and ``hooks/``; Airflow's surface in ``operators/``,
``sensors/``, ``triggers/``, ``links/``, ``_compat.py`` and ``get_provider_info.py``.
"""

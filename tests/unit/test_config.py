"""A ``kirin`` connection in each form Airflow users write it becomes the same settings."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from airflow_provider_kirin.core.config import KirinConnectionConfig
from airflow_provider_kirin.exceptions import KirinValidationError
from airflow_provider_kirin.hooks.kirin import KirinHook

KEY = "kirin-config-test-key"


@pytest.mark.parametrize(
    ("env_value", "base_url"),
    [
        (f"kirin://:{KEY}@127.0.0.1:8765/?__extra__=%7B%7D", "https://127.0.0.1:8765"),
        (f"kirin://http://:{KEY}@127.0.0.1:8765", "http://127.0.0.1:8765"),
        (f"kirin://:{KEY}@http%3A%2F%2F127.0.0.1%3A8765%2F", "http://127.0.0.1:8765"),
        (
            json.dumps({"conn_type": "kirin", "host": "http://127.0.0.1:8765/", "password": KEY}),
            "http://127.0.0.1:8765",
        ),
        (
            json.dumps({"conn_type": "kirin", "host": "api.example.com", "schema": "http", "password": KEY}),
            "http://api.example.com",
        ),
        (
            json.dumps({"conn_type": "kirin", "host": "api.example.com", "port": 9000, "password": KEY}),
            "https://api.example.com:9000",
        ),
    ],
)
def test_uri_and_json_forms(monkeypatch: pytest.MonkeyPatch, env_value: str, base_url: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", env_value)
    config = KirinHook().config
    assert config.base_url == base_url
    assert config.api_key.get_secret_value() == KEY
    assert config.create_path == "/v1/videos/generations"


def test_extras_from_a_uri_query(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_KIRIN_CUSTOM",
        f"kirin://http://:{KEY}@127.0.0.1:1/?create_path=%2Fgw%2Fgen&task_path=%2Fgw%2Ft%2F%7Btask_id%7D"
        "&lookup_path=gw%2Ffind&timeout=12&connect_timeout=3&verify_ssl=false&max_retries=2",
    )
    config = KirinHook("kirin_custom").config
    assert config.create_path == "/gw/gen"
    assert config.task_path == "/gw/t/{task_id}"
    assert config.lookup_path == "/gw/find"
    assert (config.timeout, config.connect_timeout, config.verify_ssl, config.max_retries) == (
        12.0,
        3.0,
        False,
        2,
    )


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"host": None}, "no host"),
        ({"password": None}, "no API key"),
        ({"extra": json.dumps({"task_path": "/tasks"})}, "task_path"),
        ({"extra": json.dumps({"timeout": -1})}, "extra timeout"),
        ({"extra": json.dumps({"verify_ssl": "perhaps"})}, "extra verify_ssl"),
    ],
)
def test_invalid_connections_name_the_field_and_never_the_key(fields: dict, fragment: str) -> None:
    data = {"conn_id": "k", "conn_type": "kirin", "host": "http://127.0.0.1:1", "password": KEY, **fields}
    with pytest.raises(KirinValidationError) as info:
        KirinConnectionConfig.from_connection(Connection(**data))
    assert fragment in str(info.value)
    assert KEY not in str(info.value)


def test_origin_is_scheme_host_and_port() -> None:
    conn = Connection(conn_id="k", conn_type="kirin", host="HTTPS://Api.Example.com:8443/base", password=KEY)
    assert KirinConnectionConfig.from_connection(conn).origin == "https://api.example.com:8443"


def test_reprs_hide_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", f"kirin://http://:{KEY}@127.0.0.1:1")
    hook = KirinHook()
    assert KEY not in repr(hook.config)
    assert KEY not in repr(hook)
    assert KEY not in repr(hook.protocol)


def test_the_form_shows_every_extra_the_hook_reads_without_prefilled_defaults() -> None:
    from airflow_provider_kirin.get_provider_info import get_provider_info

    (connection_type,) = get_provider_info()["connection-types"]
    fields = connection_type["conn-fields"]
    # the form hides nothing the hook reads but the legacy verify_ssl (its switch was a trap)
    extras = set(KirinConnectionConfig.model_fields) - {"base_url", "api_key", "legacy_verify_ssl"}
    assert set(fields) == extras
    for name, field in fields.items():
        assert "default" not in field["schema"], name  # nothing frozen into saved connections
        assert "Empty: the default, " in field["description"], field
    assert fields["timeout"]["description"].endswith("Empty: the default, 30.")
    assert fields["skip_tls_verification"]["description"].endswith("Empty: the default, off.")
    assert fields["task_path"]["description"].endswith("Empty: the default, /v1/tasks/{task_id}.")
    assert fields["timeout"]["schema"]["type"] == ["number", "null"]
    assert fields["skip_tls_verification"]["schema"]["type"] == ["boolean", "null"]
    assert "verify_ssl" not in fields


def test_empty_form_fields_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "kirin", "host": "http://127.0.0.1:8765", "password": KEY}
    conn["extra"] = {"timeout": None, "create_path": "", "max_retries": 2}  # as a form may save them
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
    config = KirinHook().config
    assert (config.timeout, config.create_path, config.max_retries) == (30.0, "/v1/videos/generations", 2)


def test_a_misspelt_extra_is_named_in_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    conn = {"conn_type": "kirin", "host": "http://127.0.0.1:8765", "password": KEY, "extra": {"timout": 5}}
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", json.dumps(conn))
    with caplog.at_level("WARNING", logger="airflow_provider_kirin.core.config"):
        config = KirinHook().config
    assert config.timeout == 30.0  # not applied...
    (record,) = [r for r in caplog.records if r.name == "airflow_provider_kirin.core.config"]
    assert "'timout'" in record.getMessage()  # ...but never dropped silently
    assert "did you mean 'timeout'?" in record.getMessage()


def test_a_port_of_zero_is_no_port() -> None:
    """Airflow's UI sends ``port: 0`` for an empty port: the base URL gets no ``:0``."""
    conn = Connection(conn_id="k", conn_type="kirin", host="https://api.example.com", port=0, password=KEY)
    assert KirinConnectionConfig.from_connection(conn).base_url == "https://api.example.com"


def test_a_form_saved_connection_stores_nulls_that_mean_the_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Airflow's form stores every field it shows, an empty one as ``null`` (3.2+) or ``""``: each
    reads as "the provider's default", with no warning, so the connection follows later defaults."""
    from airflow_provider_kirin.core.config import connection_form_fields

    stored = dict.fromkeys(connection_form_fields(), None) | {"timeout": "", "max_retries": 2}
    conn = Connection(
        conn_id="k", conn_type="kirin", host="https://api.example.com", password=KEY, extra=json.dumps(stored)
    )
    with caplog.at_level("WARNING"):
        config = KirinConnectionConfig.from_connection(conn)
    defaults = KirinConnectionConfig(base_url="https://x", api_key=KEY)
    assert config.max_retries == 2
    assert config.timeout == defaults.timeout
    assert config.create_path == defaults.create_path
    assert "does not read" not in caplog.text


def _documented_uris() -> dict[str, set[str]]:
    """Every ``AIRFLOW_CONN_KIRIN_DEFAULT='kirin://...'`` URI the README and docs show."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found: dict[str, set[str]] = {}
    for doc in ("README.md", "docs/connection.md"):
        text = (root / doc).read_text()
        found[doc] = set(re.findall(r"AIRFLOW_CONN_KIRIN_DEFAULT='(kirin://[^']+)'", text))
    return found


def test_the_docs_show_one_uri_form_and_it_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.parse import quote

    documented = _documented_uris()
    forms = set().union(*documented.values())
    assert all(documented.values()), documented
    assert len(forms) == 1, forms
    key = "k3y/with+odd=chars"
    uri = forms.pop().replace("<url-encoded key>", quote(key, safe=""))
    monkeypatch.setenv("AIRFLOW_CONN_KIRIN_DEFAULT", uri)
    config = KirinHook().config
    assert config.base_url == "https://api.example.com"
    assert config.api_key.get_secret_value() == key

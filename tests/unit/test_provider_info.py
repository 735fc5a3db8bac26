"""Airflow discovers the provider, and its metadata is valid against Airflow's own schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest
from airflow_helpers import EXAMPLE_DAGS, AirflowHome

from airflow_provider_kirin import __version__
from airflow_provider_kirin.get_provider_info import get_provider_info


def test_valid_against_airflow_core_schema() -> None:
    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_every_declared_class_and_module_imports() -> None:
    from airflow.sdk._shared.module_loading import import_string

    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-kirin"
    assert info["versions"] == [__version__]
    integrations = {i["integration-name"] for i in info["integrations"]}
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            assert entry["integration-name"] in integrations
            for module in entry["python-modules"]:
                __import__(module)
    for link in info["extra-links"]:
        assert import_string(link)().name == "Kirin video"
    (conn,) = info["connection-types"]
    hook_cls = import_string(conn["hook-class-name"])
    assert hook_cls.conn_type == conn["connection-type"] == "kirin"
    assert hook_cls.default_conn_name == "kirin_default"


def test_entry_point_points_at_get_provider_info() -> None:
    (ep,) = [
        ep
        for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("airflow_provider_kirin")
    ]
    assert ep.load() is get_provider_info


def test_providers_manager_loads_connection_form() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-kirin" in manager.providers
    behaviour = manager.field_behaviours["kirin"]
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert "login" in behaviour["hidden_fields"]
    assert "placeholders" in behaviour
    widgets = manager.connection_form_widgets
    names = {"extra__kirin__create_path", "extra__kirin__skip_tls_verification", "extra__kirin__timeout"}
    assert names <= set(widgets)
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hook_info = ProvidersManagerTaskRuntime().hooks["kirin"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_kirin.hooks.kirin.KirinHook"


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowHome]:
    """A bare AIRFLOW_HOME (no metadata DB: the ``providers`` commands read none) whose commands run
    in one warm CLI process."""
    home = AirflowHome.create(tmp_path_factory.mktemp("airflow-providers"), None, dags_folder=EXAMPLE_DAGS)
    yield home
    home.close()


@pytest.mark.airflow
@pytest.mark.parametrize("command", [["providers", "list"], ["providers", "hooks"], ["providers", "links"]])
def test_airflow_cli_shows_the_provider(cli_home: AirflowHome, command: list[str]) -> None:
    result = cli_home.cli(*command, "--output", "json", warm=True)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    expected = {
        "list": "airflow-provider-kirin",
        "hooks": "airflow_provider_kirin.hooks.kirin.KirinHook",
        "links": "airflow_provider_kirin.links.kirin.KirinVideoLink",
    }[command[1]]
    assert expected in out

"""The package's layout keeps its promises: the I/O-free core does no I/O and knows nothing of
Airflow's surface, module-level imports form no cycle, and each registry is read off its source."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import airflow_provider_kirin
from airflow_provider_kirin import exceptions

PACKAGE = Path(airflow_provider_kirin.__file__).parent
NAME = "airflow_provider_kirin"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return set()


def top_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is imported (not under ``if TYPE_CHECKING`` or in a
    function body)."""
    return {name for node in ast.parse(path.read_text()).body for name in _names(node)}


def all_imports(path: Path) -> set[str]:
    """Every module ``path`` may import at run time, also lazily in a function body (not under
    ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    return {name for node in ast.walk(tree) if id(node) not in typing_only for name in _names(node)}


MODULES = {
    module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "emulator" not in path.relative_to(PACKAGE).parts
}
GRAPH = {
    name: {target for target in all_imports(path) if target in MODULES and target != name}
    for name, path in MODULES.items()
}


def test_imports_form_no_cycle_not_even_lazily() -> None:
    def cycle_from(start: str, node: str, trail: list[str]) -> list[str] | None:
        for target in GRAPH[node]:
            if target == start:
                return [*trail, target]
            if target not in trail:
                found = cycle_from(start, target, [*trail, target])
                if found:
                    return found
        return None

    cycles = [cycle for name in GRAPH if (cycle := cycle_from(name, name, [name]))]
    assert not cycles, cycles[0]


@pytest.mark.parametrize("name", sorted(name for name in MODULES if name.startswith(f"{NAME}.core")))
def test_the_core_does_no_io_and_knows_no_airflow_surface(name: str) -> None:
    forbidden = (
        "requests",
        "aiohttp",
        "socket",
        "asyncio",
        f"{NAME}.hooks",
        f"{NAME}.operators",
        f"{NAME}.sensors",
        f"{NAME}.triggers",
        f"{NAME}.io",
        "airflow.sdk",
        "airflow.triggers",
    )
    found = {target for target in top_level_imports(MODULES[name]) if target.startswith(forbidden)}
    assert not found, f"{name} imports {sorted(found)}"


def test_the_exception_tree_in_the_docs_names_every_class() -> None:
    documented = exceptions.__doc__ or ""
    classes = {cls.__name__ for cls in exceptions._family()}
    assert {name for name in classes if name not in documented} == set()
    assert {"KirinTaskTimeoutError", "KirinUnreachableError", "KirinStatusCheckError"} <= classes


def test_seed_codes_and_statuses_are_read_off_the_classes() -> None:
    assert set(exceptions.SEED_ERROR_CODES) == {f"00201109{d}" for d in range(5, 10)}
    for code, cls in exceptions.SEED_ERROR_CODES.items():
        assert issubclass(cls, exceptions.KirinTaskFailedError)
        assert exceptions.exception_class_for(code, 503) is cls  # a seed code wins over the status
    assert exceptions.exception_class_for(None, 422) is exceptions.KirinRequestRejectedError
    assert exceptions.exception_class_for(None, 403) is exceptions.KirinAuthError
    assert exceptions.exception_class_for(None, 418) is exceptions.KirinBadResponseError


def test_mypy_reads_every_package_the_code_imports() -> None:
    # pyproject.toml has mypy skip what Airflow imports in turn (a cold run in half the time); a
    # package our own code imports must stay read, or its types silently become Any.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest itself requires tomli before 3.11
        import tomli as tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["follow_imports"] == "skip"
    (read,) = [o["module"] for o in config["overrides"] if o.get("follow_imports") == "normal"]
    read_roots = {pattern.removesuffix(".*") for pattern in read}
    imported = {
        name.split(".")[0]
        for path in PACKAGE.rglob("*.py")
        for name in all_imports(path)
        if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith(NAME)
    }
    assert {"airflow", "aiohttp", "requests"} <= imported
    assert imported - read_roots == set()

"""The layering of DESIGN.md, checked on the source: api -> engine -> warehouse, never back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dbx_backend"
# Wiring and the command line may know every layer.
WIRING = {"dbx_backend.app", "dbx_backend.cli"}
# What the API layer may take from the transport: its exception family, for the status table.
API_MAY_IMPORT_FROM_WAREHOUSE = {"dbx_backend.warehouse.errors"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every dbx_backend module `path` imports (`from x import y` counts as x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("dbx_backend")}


MODULES = {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_sees_the_layers() -> None:
    """The checks below are about real modules: each layer is found, with its imports."""
    layers = ("dbx_backend.api", "dbx_backend.engine", "dbx_backend.warehouse")
    assert all(any(_in(module, layer) for module in MODULES) for layer in layers)
    assert "dbx_backend.engine" in MODULES["dbx_backend.api.routes"]
    assert "dbx_backend.warehouse.wire" in MODULES["dbx_backend.engine.query_service"]


BELOW_API = sorted(m for m in MODULES if not _in(m, "dbx_backend.api") and m not in WIRING)


@pytest.mark.parametrize("module", BELOW_API)
def test_nothing_below_the_api_imports_from_it(module: str) -> None:
    assert sorted(m for m in MODULES[module] if _in(m, "dbx_backend.api")) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, "dbx_backend.api")))
def test_the_api_takes_from_the_transport_only_its_errors(module: str) -> None:
    """No wire models, no retry policy, no client: the engine is the way to the warehouse."""
    reached = {
        m
        for m in MODULES[module]
        if _in(m, "dbx_backend.warehouse") and m != "dbx_backend.warehouse"
    }
    allowed = {m for m in reached if any(_in(m, ok) for ok in API_MAY_IMPORT_FROM_WAREHOUSE)}
    assert sorted(reached - allowed) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, "dbx_backend.api")))
def test_the_api_takes_the_engines_public_names_only(module: str) -> None:
    """`from dbx_backend.engine import ...`: the package's names, not its modules' insides."""
    inside = sorted(
        m
        for m in MODULES[module]
        if _in(m, "dbx_backend.engine")
        and m != "dbx_backend.engine"
        and m.removeprefix("dbx_backend.engine.") not in _engine_public_names()
    )
    assert inside == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, "dbx_backend.warehouse")))
def test_the_transport_imports_no_layer_above_it(module: str) -> None:
    above = ("dbx_backend.engine", "dbx_backend.api", "dbx_backend.keys", "dbx_backend.app")
    assert sorted(m for m in MODULES[module] if any(_in(m, a) for a in above)) == []


def _engine_public_names() -> set[str]:
    import dbx_backend.engine as engine

    return set(engine.__all__)


def test_the_service_loads_no_redis_client_until_one_is_configured() -> None:
    """Several MiB of every replica's memory: only a `CACHE_URL` loads the Redis client."""
    import subprocess
    import sys

    code = (
        "import sys, dbx_backend.cli, dbx_backend.app; "
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]"

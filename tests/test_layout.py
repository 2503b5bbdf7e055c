"""The package's shape: the hot path never imports the API, and importing does no work."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gateway

PACKAGE = Path(gateway.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


# Each package may import only the ones below it; the two planes (proxy, api) never import each other.
#   paths, errors, settings...  <  db  <  policy  <  identity  <  access  <  manage, tracing  <  proxy | api
FORBIDDEN = {
    "db": ("policy", "identity", "access", "manage", "proxy", "api"),
    "policy": ("identity", "access", "manage", "proxy", "api"),
    "identity": ("access", "manage", "proxy", "api"),
    "access": ("manage", "proxy", "api"),
    "manage": ("proxy", "api"),
    "tracing": ("manage", "proxy", "api"),
    "proxy": ("manage", "api"),
    "api": ("proxy",),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package: str) -> None:
    """What both planes need (credentials, decisions, the client-address rule, canonical paths, audit, request
    ids) lives below both; no package imports one above it (so there is no cycle)."""
    for module in (PACKAGE / package).rglob("*.py"):
        if "migrations" in module.parts:
            continue
        above = [
            name
            for name in _imports(module)
            if name.split(".")[:2][-1] in FORBIDDEN[package] and name.startswith("gateway.")
        ]
        assert not above, (str(module.relative_to(PACKAGE)), above)


LEAVES = ("asgitypes", "counters", "errors", "hosts", "namespace", "paths", "settings")


@pytest.mark.parametrize("leaf", LEAVES)
def test_the_leaf_modules_import_no_package(leaf: str) -> None:
    """The modules at the bottom (paths, hosts, errors, settings, counters and what they need) import no gateway
    package, only one another, so every package may use them."""
    imported = {name for name in _imports(PACKAGE / f"{leaf}.py") if name.startswith("gateway.")}
    assert imported <= {f"gateway.{other}" for other in LEAVES}, (leaf, imported)


def test_the_data_plane_imports_no_framework() -> None:
    """The front door and gateway.proxy import nothing from Litestar (tests/test_asgi.py also checks that no
    Litestar code runs for a proxied request); only gateway.app and gateway.api build the control plane."""
    data_plane = [PACKAGE / "asgi.py", PACKAGE / "namespace.py", PACKAGE / "asgitypes.py", PACKAGE / "errors.py"]
    for module in [*data_plane, *(PACKAGE / "proxy").glob("*.py")]:
        imported = {name for name in _imports(module) if name.split(".")[0] == "litestar"}
        assert not imported, (module.name, imported)


def test_only_the_policy_package_imports_casbin() -> None:
    """Casbin stays behind gateway.policy; no casbin type leaks out."""
    for module in PACKAGE.rglob("*.py"):
        if module.parent.name != "policy":
            assert not any(name.split(".")[0] == "casbin" for name in _imports(module)), module


def test_public_namespace() -> None:
    """`gateway` exports create_gateway, create_app and __version__ and imports no framework until asked."""
    assert sorted(gateway.__all__) == ["__version__", "create_app", "create_gateway"]
    code = "import sys, gateway; print('litestar' in sys.modules, 'casbin' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.split() == ["False", "False"]
    assert callable(gateway.create_app)

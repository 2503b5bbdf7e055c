"""The package's shape: the hot path never imports the API, and importing does no work."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


def test_proxy_never_imports_the_api() -> None:
    """gateway.proxy modules import nothing from gateway.api."""
    for module in (PACKAGE / "proxy").glob("*.py"):
        assert not any(name.startswith("gateway.api") for name in _imports(module)), module.name


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

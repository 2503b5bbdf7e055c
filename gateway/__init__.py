"""An authorization gateway for HTTP APIs: JWT authentication, Casbin RBAC per organization, forwarding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_app", "create_gateway"]

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.asgi import create_gateway


def __getattr__(name: str) -> Any:
    # Imported lazily so `import gateway` (and the CLI's --help) do no work and import no framework.
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    if name == "create_gateway":
        from gateway.asgi import create_gateway

        return create_gateway
    raise AttributeError(name)

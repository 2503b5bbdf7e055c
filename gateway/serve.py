"""Run the app under uvicorn (uvloop + httptools), with uvicorn's own proxy-header trust switched off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.app import create_app
from gateway.settings import Settings

FRAGMENT_MARK = "gateway.fragment"


class StrictHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, except that a request target carrying a `#` fragment is marked in the
    scope (the parser would silently drop the fragment), so the pipeline can refuse it instead of
    authorizing a shorter path than the client wrote (Envoy CVE-2021-32779)."""

    def on_headers_complete(self) -> None:
        if b"#" in self.url:
            self.scope[FRAGMENT_MARK] = True  # type: ignore[literal-required]
        super().on_headers_complete()


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    # pycasbin logs the whole model at INFO on every enforcer build.
    logging.getLogger("casbin").setLevel(logging.WARNING)


def server(settings: Settings, *, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http=StrictHttpToolsProtocol,
        lifespan="on",
        # X-Forwarded-* are the gateway's business (trusted only from configured proxies), not uvicorn's.
        proxy_headers=False,
        server_header=False,
        access_log=False,  # the audit event is the access log
        log_config=None,
    )
    return uvicorn.Server(config)


def run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        asyncio.run(main())


def serve(settings: Settings, *, host: str, port: int) -> None:
    configure_logging(settings.log_level)

    async def main() -> None:
        await server(settings, host=host, port=port).serve()

    run_loop(main)

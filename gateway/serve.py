"""`gateway serve`: check what can fail, bind the listeners, then run one process or N workers under uvicorn.

Everything that can stop a start is checked before the first socket is shared (`preflight`), so it ends as one
line naming the cause and a non-zero exit, never a traceback. Workers are uvicorn's supervisor: N processes on
the same listening sockets, a worker that dies is replaced, SIGTERM or SIGINT drains every worker (the listening
sockets close at once, requests in flight finish within `shutdown_grace_seconds`) and the parent exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Generator
from http import HTTPStatus
from typing import Any, Literal

import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess

from gateway.asgi import FRAGMENT_MARK, create_gateway
from gateway.errors import PROBLEM_CONTENT_TYPE, GatewayError, RequestTimeout, ServiceUnavailable, render
from gateway.identity.passwords import shared_by
from gateway.preflight import StartupError, preflight
from gateway.settings import Clients, Settings, split_listen

log = logging.getLogger("gateway")


class _OneWrite:
    """The transport one response is written to: its head (status line and headers) is held until the first
    body bytes, and both leave in one write, one system call instead of two. Anything else (a `100 Continue`,
    a close) goes straight through."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 100 "):
            self._held = data
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


def _refusal(error: GatewayError) -> bytes:
    """A complete problem response that closes the connection, for answers written before any request."""
    body = render(error)
    extra = "".join(f"{name}: {value}\r\n" for name, value in error.headers.items())
    return (
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"content-length: {len(body)}\r\ncache-control: no-store\r\n{extra}connection: close\r\n\r\n"
    ).encode() + body


_TIMED_OUT = _refusal(RequestTimeout("the request's headers did not arrive in time"))
_TOO_MANY = _refusal(ServiceUnavailable("too many open connections; try again shortly", headers={"retry-after": "1"}))


def _file_descriptor_limit() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 1024
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


async def _sweep(connections: set[Any], header_timeout: float) -> None:
    """Once a second: close connections whose request headers have been arriving for too long (slowloris)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(min(1.0, header_timeout / 2))
        now = loop.time()
        for connection in list(connections):
            since = getattr(connection, "awaiting_since", None)
            if since is not None and now - since > header_timeout:
                connection.time_out()


class StrictHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with what a gateway facing the internet needs:

    - a request target carrying a `#` fragment is marked in the scope (the parser would silently drop it), so
      the front door refuses it instead of authorizing a shorter path than the client wrote (Envoy
      CVE-2021-32779);
    - a response's head and first body bytes are written together (`_OneWrite`), except for HEAD;
    - a request line and headers must arrive within `clients.header_timeout` of the connection's start or the
      request's first byte, else 408 and close (one sweeper task per server checks once a second: nothing is
      scheduled per request); idle keep-alive connections close after `clients.keep_alive_timeout` (uvicorn);
    - beyond `clients.max_connections` open connections, a new one gets 503 and is closed at once.
    """

    awaiting_since: float | None = None
    """loop.time() since when this connection waits for a request's headers; None while none is due."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        clients: Clients = getattr(self.config, "clients", None) or Clients()
        limit = clients.max_connections or _file_descriptor_limit() // 2
        if len(self.connections) > limit:
            transport.write(_TOO_MANY)
            transport.close()
            return
        self.awaiting_since = self.loop.time()
        state = self.server_state
        if getattr(state, "gateway_sweeper", None) is None:
            state.gateway_sweeper = self.loop.create_task(  # type: ignore[attr-defined]
                _sweep(self.connections, clients.header_timeout), name="gateway-header-timeouts"
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.awaiting_since = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        if self.awaiting_since is None:
            self.awaiting_since = self.loop.time()
        super().on_message_begin()

    def time_out(self) -> None:
        """The headers took too long: 408, then close."""
        self.awaiting_since = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_TIMED_OUT)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self.awaiting_since = None
        if b"#" in self.url:
            self.scope[FRAGMENT_MARK] = True  # type: ignore[literal-required]
        super().on_headers_complete()
        cycle = self.cycle
        # Not for an upgrade (the WebSocket protocol takes the connection over; no cycle was made for it).
        if cycle is not None and cycle.scope is self.scope and self.scope["method"] != "HEAD":
            cycle.transport = _OneWrite(self.transport)  # type: ignore[assignment]


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    # pycasbin logs the whole model at INFO on every enforcer build.
    logging.getLogger("casbin").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # it logs its plugin set-up at INFO


class GatewayConfig(uvicorn.Config):
    """uvicorn's configuration, carrying the gateway's settings so that every worker (a spawned process that
    receives this object) builds the same gateway and configures the same logging."""

    def __init__(self, settings: Settings, *, management_ports: frozenset[int], workers: int = 1) -> None:
        self.settings = settings
        self.management_ports = management_ports
        self.clients = settings.clients
        super().__init__(
            "gateway.asgi:create_gateway",  # documentation only: load_app builds it from `settings`
            factory=True,
            workers=workers,
            loop="uvloop",
            http=StrictHttpToolsProtocol,
            lifespan="on",
            # X-Forwarded-* are the gateway's business (trusted only from configured proxies), not uvicorn's.
            proxy_headers=False,
            server_header=False,
            access_log=False,  # the audit event is the access log
            log_config=None,
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,
            timeout_keep_alive=settings.clients.keep_alive_timeout,
        )

    def load_app(self) -> Any:
        return functools.partial(create_gateway, self.settings, management_ports=self.management_ports)

    def configure_logging(self) -> None:
        super().configure_logging()  # with access_log off, this silences uvicorn's access logger
        configure_logging(self.settings.log_level)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, except that a process stopped by SIGTERM or SIGINT exits 0 once it has drained,
    instead of re-raising the signal (an orchestrator reads a signal death as a crash)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class Workers(Multiprocess):
    """uvicorn's supervisor, except that on SIGTERM/SIGINT the parent closes its copy of the listening sockets
    first: once the workers close theirs, new connections are refused instead of queueing unanswered."""

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def handle_term(self) -> None:
        self._close_sockets()
        super().handle_term()

    def handle_int(self) -> None:
        self._close_sockets()
        super().handle_int()


def listen(host: str, port: int, *, what: str) -> socket.socket:
    """A bound, listening TCP socket, or a StartupError naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port} ({what}): {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def worker_count(settings: Settings, override: int | Literal["auto"] | None) -> int:
    workers = override if override is not None else settings.workers
    if workers == "auto":
        return os.cpu_count() or 1
    return int(workers)


def serve(settings: Settings, *, host: str, port: int, workers: int | Literal["auto"] | None = None) -> None:
    """Run the gateway until SIGTERM or SIGINT; raises StartupError (one line) when it cannot start."""
    configure_logging(settings.log_level)
    preflight(settings)
    count = worker_count(settings, workers)
    sockets = [listen(host, port, what="the public listener")]
    management: frozenset[int] = frozenset()
    if settings.admin_listen is not None:
        admin_host, admin_port = split_listen(settings.admin_listen)
        if admin_port == sockets[0].getsockname()[1]:
            raise StartupError("admin_listen: must use another port than the public listener")
        sockets.append(listen(admin_host, admin_port, what="admin_listen"))
        management = frozenset({sockets[1].getsockname()[1]})
    # Hashing's defaults are shares of the machine: with N workers, each takes 1/N of them.
    settings = msgspec.structs.replace(settings, passwords=shared_by(settings.passwords, count))
    config = GatewayConfig(settings, management_ports=management, workers=count)
    public = sockets[0].getsockname()
    log.info(
        "serving on %s:%d%s with %d worker%s",
        public[0],
        public[1],
        f", management on {settings.admin_listen}" if management else "",
        count,
        "" if count == 1 else "s",
    )
    if count > 1 and settings.rate_limits.redis_url is None:
        log.warning(
            "%d workers and no rate_limits.redis_url: rate limits and login throttling are counted per worker "
            "(a client may get up to %d times each budget)",
            count,
            count,
        )
    if count == 1:
        GatewayServer(config).run(sockets=sockets)
    else:
        Workers(config, sockets=sockets).run()


def run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        asyncio.run(main())

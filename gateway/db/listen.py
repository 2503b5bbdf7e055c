"""PostgreSQL LISTEN: hear of committed changes at once instead of at the next poll.

One dedicated asyncpg connection listens on the state channel and wakes the runtime's watcher. If the
connection drops, notifications sent meanwhile are lost, so after every (re)connection the watcher is told to
resynchronise fully; reconnection backs off from 0.5 s to 10 s. Polling stays on as the safety net.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from gateway.db.engine import CHANNEL

log = logging.getLogger("gateway.listen")
APPLICATION_NAME = "gateway-listener"


def asyncpg_dsn(database_url: str) -> dict[str, Any]:
    url = make_url(database_url)
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username,
        "password": url.password,
        "database": url.database,
        "server_settings": {"application_name": APPLICATION_NAME},
    }


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _connection: event.set()


class Listener:
    """Calls `changed(resync)` on every notification (resync=False) and after every (re)connection
    (resync=True: notifications may have been missed)."""

    def __init__(self, database_url: str, changed: Callable[[bool], None]) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._changed = changed
        self.connected = False

    async def run(self) -> None:
        delay = 0.5
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(timeout=5, **self._dsn)
                lost = asyncio.Event()
                connection.add_termination_listener(_setter(lost))
                await connection.add_listener(CHANNEL, lambda *_: self._changed(False))
                self.connected, delay = True, 0.5
                self._changed(True)
                await lost.wait()
                log.warning("lost the LISTEN connection; reconnecting and resynchronising")
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("cannot LISTEN for changes (%s); retrying in %.1f s, polling meanwhile", exc, delay)
            finally:
                self.connected = False
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

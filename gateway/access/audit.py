"""The audit event (stage 6, and admin denials): one JSON line per request, fixed keys, never a credential.

Events are encoded on the request path and written in batches by a background task (every 0.2 s, or at once
when 10,000 are waiting), so an audit line costs the request about a microsecond instead of a logging record.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from typing import IO

import msgspec

from gateway.db.chain import GENESIS, link

FLUSH_SECONDS = 0.2
MAX_BUFFERED = 10_000


class AuditEvent(msgspec.Struct, kw_only=True):
    """Filled in as the request moves through the stages; emitted once at the end."""

    method: str
    path: str
    request_id: str = ""
    route: str | None = None
    subject: str | None = None
    org: str | None = None
    granted: bool | None = None
    reason: str = ""
    decision_id: str | None = None
    status: int = 0
    upstream_status: int | None = None
    duration_ms: float = 0.0
    upstream_ms: float | None = None
    client_ip: str | None = None


def milliseconds(since: float) -> float:
    """Milliseconds since the `perf_counter` reading `since`, to the microsecond (integer arithmetic: rounding
    a float to 3 digits costs more than the rest of a request's bookkeeping)."""
    return int((time.perf_counter() - since) * 1_000_000) / 1000


class AuditSink:
    """Where audit lines go: `stderr`, `stdout`, a file path (appended), or `off`."""

    def __init__(self, destination: str, *, chained: bool = False) -> None:
        self.stream_id = secrets.token_hex(8)
        """This process's decision stream, when chained (each line then ends with stream, seq, prev, hash)."""
        self.head: tuple[int, str] = (0, GENESIS)
        """The chain's last (seq, hash) written."""
        self.chained = chained
        self.checkpointed = 0
        """The last seq of this stream the runtime checkpointed."""
        self._owned: IO[bytes] | None = None
        self._stream: IO[bytes] | None
        if destination == "off":
            self._stream = None
        elif destination == "stderr":
            self._stream = sys.stderr.buffer
        elif destination == "stdout":
            self._stream = sys.stdout.buffer
        else:
            self._stream = self._owned = open(destination, "ab")  # noqa: SIM115 - closed in close()
        self._buffer: list[bytes] = []
        self._encoder = msgspec.json.Encoder()
        self._task: asyncio.Task[None] | None = None

    def emit(self, event: AuditEvent) -> None:
        if self._stream is None:
            return
        self._buffer.append(self._encoder.encode(event))
        if len(self._buffer) >= MAX_BUFFERED:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self._stream is None:
            return
        lines, self._buffer = self._buffer, []
        if self.chained:
            lines = self._chain(lines)
        lines.append(b"")
        self._stream.write(b"\n".join(lines))
        self._stream.flush()

    def _chain(self, lines: list[bytes]) -> list[bytes]:
        """Each line gets `"stream","seq","prev","hash"` appended; the hash covers the line as encoded before
        them (`{...}`), after the previous line's hash. Done here, in the batch write, not per request."""
        seq, prev = self.head
        stream = self.stream_id.encode()
        chained = []
        for line in lines:
            seq += 1
            digest = link(prev, line)
            tail = b',"stream":"%s","seq":%d,"prev":"%s","hash":"%s"}' % (stream, seq, prev.encode(), digest.encode())
            chained.append(line[:-1] + tail)
            prev = digest
        self.head = (seq, prev)
        return chained

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-audit-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()
        if self._owned is not None:
            self._owned.close()

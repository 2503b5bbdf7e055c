"""Request ids, one rule for both planes: a client's well-formed X-Request-Id is kept, else a new one is made."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable

_WELL_FORMED = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def well_formed(value: bytes) -> bool:
    """1-128 of A-Z a-z 0-9 . _ - (anything else could break a log line or a header)."""
    return _WELL_FORMED.fullmatch(value) is not None


class _RequestIds:
    """This process's random 64-bit prefix and a counter: unique across processes and restarts, without a
    system call per request (a request id correlates; it needs no secrecy, and a client may send its own).
    Drawn on first use, and again in a forked child."""

    prefix = ""
    counter = itertools.count(1)

    @classmethod
    def reset(cls) -> None:
        cls.prefix, cls.counter = "", itertools.count(1)


os.register_at_fork(after_in_child=_RequestIds.reset)


def new_request_id() -> str:
    """32 hex digits (see `_RequestIds`)."""
    if not _RequestIds.prefix:
        _RequestIds.prefix = os.urandom(8).hex()
    return f"{_RequestIds.prefix}{next(_RequestIds.counter):016x}"


def request_id_of(raw: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it is a plain token (1-128 of A-Z a-z 0-9 . _ -), else a new one."""
    for name, value in raw:
        if name == b"x-request-id" and well_formed(value):
            return value.decode("ascii")
    return new_request_id()

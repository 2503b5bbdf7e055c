"""What one bump of the state version changed, as operations a replica can apply to its snapshot.

Each `bump_version(session, ops)` writes one row of `state_changes` (the new version, its operations) in the
change's own transaction. Operations are lists of strings, encoded as JSON:

    ["line+", ptype, v0, ...]       a stored policy line was added        ["line-", ...] removed
    ["member", user_id, org, old, new]  a membership: old role -> new role ("" for none)
    ["key", key_id, key_hash, user_id, org, scopes, expires_at, allowed_ips]   a live key, new or changed
    ["key-", key_id]                a key stopped (revoked)
    ["session-", session_id]        a session was revoked

`ops=None` (the default) means "rebuild everything": the safe answer for any change not described here. An empty
list means the bump changed nothing the hot path holds (a lock taken through the version row).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

Op = tuple[str, ...]
FULL: None = None
"""The change cannot be applied as a delta: replicas rebuild their snapshot."""
NOTHING: tuple[Op, ...] = ()
"""The bump changed nothing the hot path holds."""


def line_added(ptype: str, values: Sequence[str]) -> Op:
    return ("line+", ptype, *values)


def line_removed(ptype: str, values: Sequence[str]) -> Op:
    return ("line-", ptype, *values)


def membership(user_id: str, org: str, *, old: str | None, new: str | None) -> Op:
    """The membership of `user_id` in `org` went from role `old` to role `new` (None: not a member)."""
    return ("member", user_id, org, old or "", new or "")


def key_live(
    key_id: str,
    *,
    key_hash: str,
    user_id: str,
    org: str,
    scopes: str,
    expires_at: dt.datetime | None,
    allowed_ips: str,
) -> Op:
    """A key that works (new, or changed): its columns as stored (`scopes` and `allowed_ips` JSON text)."""
    expiry = expires_at.isoformat() if expires_at is not None else ""
    return ("key", key_id, key_hash, user_id, org, scopes, expiry, allowed_ips)


def key_stopped(key_id: str) -> Op:
    return ("key-", key_id)


def session_revoked(session_id: str) -> Op:
    return ("session-", session_id)


def encode(ops: Sequence[Op] | None) -> str | None:
    return None if ops is None else json.dumps([list(op) for op in ops], separators=(",", ":"))


def decode(raw: str | None) -> list[Op] | None:
    return None if raw is None else [tuple(str(value) for value in op) for op in json.loads(raw)]

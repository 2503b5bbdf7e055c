"""Proof that the audit records were not edited: signed checkpoints of chain heads, and the verification of a
chain (the trail of changes, from the database or an export; a request decision log, per process stream).

A checkpoint is a chain head (stream, seq, hash) signed with the gateway's signing key (Ed25519, the key that
signs tokens) and stored in `audit_checkpoints`. Checkpoints are written periodically, when a process stops, and
for the trail just before retention deletes its oldest events, so that a removed head or tail is detected too:

- every event must link to the one before (`prev_hash`), have the next `seq`, and hash to its `hash`;
- the first event must be seq 1 (prev = genesis), or follow a signed checkpoint (a retention cut);
- every signed checkpoint inside the range must match the event at its seq, and none may lie beyond the last
  event (the tail was removed).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.chain import (
    ADMIN_STREAM,
    GENESIS,
    b64,
    canonical,
    checkpoint_message,
    link,
    split_detail,
    unb64,
)
from gateway.db.models import AuditChain, AuditCheckpoint, AuditRecord, utcnow
from gateway.identity.tokens import KeyRing

VERIFY_BATCH = 1_000


def write_checkpoint(
    session: AsyncSession, ring: KeyRing, stream: str, seq: int, hash_: str, *, kind: str = "head"
) -> None:
    """Sign (kind, stream, seq, hash, now) with the active signing key and store it, in the caller's transaction.
    `cut` marks the last record retention deletes: the only place a chain may start after seq 1."""
    now = utcnow()
    signature = ring.private_keys[ring.active_kid].sign(checkpoint_message(stream, seq, hash_, now, kind))
    kid = ring.active_kid
    session.add(
        AuditCheckpoint(
            stream=stream, seq=seq, hash=hash_, kind=kind, created_at=now, kid=kid, signature=b64(signature)
        )
    )


async def checkpoint_trail(sessions: async_sessionmaker[AsyncSession], ring: KeyRing) -> int | None:
    """Checkpoint the trail's head if it moved since the last checkpoint; the seq checkpointed, or None."""
    async with sessions() as session:
        head = await session.get(AuditChain, 1)
        if head is None or head.seq == 0:
            return None
        last = await session.scalar(
            select(AuditCheckpoint.seq)
            .where(AuditCheckpoint.stream == ADMIN_STREAM)
            .order_by(AuditCheckpoint.seq.desc())
            .limit(1)
        )
        if last is not None and last >= head.seq:
            return None
        write_checkpoint(session, ring, ADMIN_STREAM, head.seq, head.hash)
        await session.commit()
        return head.seq


@dataclass(frozen=True, slots=True)
class Checkpoint:
    stream: str
    seq: int
    hash: str
    kind: str
    created_at: dt.datetime
    signed: bool | None
    """True: a known key's valid signature; False: a bad signature; None: signed by a key not known here."""


async def checkpoints(
    session: AsyncSession, keys: dict[str, Ed25519PublicKey], stream: str, *, pinned: bool = False
) -> list[Checkpoint]:
    """The stream's checkpoints with their signatures checked against `keys` (by kid). With `pinned` keys (given
    by the operator, not read from the database), a checkpoint by any other key counts as a bad signature."""
    rows = await session.scalars(
        select(AuditCheckpoint).where(AuditCheckpoint.stream == stream).order_by(AuditCheckpoint.seq)
    )
    found = []
    for row in rows:
        public = keys.get(row.kid)
        signed: bool | None = False if pinned else None
        if public is not None:
            message = checkpoint_message(row.stream, row.seq, row.hash, row.created_at, row.kind)
            try:
                public.verify(unb64(row.signature), message)
                signed = True
            except (InvalidSignature, ValueError):
                signed = False
        found.append(Checkpoint(row.stream, row.seq, row.hash, row.kind, row.created_at, signed))
    return found


async def checkpointed_streams(session: AsyncSession) -> set[str]:
    return set(await session.scalars(select(AuditCheckpoint.stream).distinct()))


def pinned_keys(jwks: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    """Ed25519 public keys by kid from a JWK Set (what /.well-known/jwks.json served), for `verify
    --public-keys`: signatures are then checked against keys kept outside the database."""
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk and "x" in jwk:
            keys[str(jwk["kid"])] = Ed25519PublicKey.from_public_bytes(unb64(str(jwk["x"])))
    return keys


@dataclass(slots=True)
class Verdict:
    """The result of checking one chain: `broken_at` names the first record that fails, and `problem` why."""

    stream: str
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    unchained: int = 0
    """Records from before the chain existed (no seq), which nothing vouches for."""
    broken_at: int | None = None
    """The seq (or, for a record without one, the line number) of the first bad record."""
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, at: int | None, problem: str) -> Verdict:
        if self.problem is None:
            self.broken_at, self.problem = at, problem
        return self


@dataclass(frozen=True, slots=True)
class Linked:
    """One record as a chain sees it."""

    seq: int | None
    prev_hash: str | None
    hash: str | None
    content: bytes
    line: int


def verify(stream: str, records: Iterable[Linked], known: list[Checkpoint]) -> Verdict:
    """Check a chain read oldest first against its signed checkpoints (see the module docstring)."""
    verdict = Verdict(stream)
    for checkpoint in known:
        if checkpoint.signed is False:
            return verdict.fail(checkpoint.seq, f"checkpoint at seq {checkpoint.seq} has a bad or unknown signature")
    by_seq = {checkpoint.seq: checkpoint for checkpoint in known if checkpoint.signed}
    cuts = {checkpoint.seq: checkpoint for checkpoint in known if checkpoint.signed and checkpoint.kind == "cut"}
    prev: str | None = None
    expected: int | None = None
    for record in records:
        if record.seq is None or record.hash is None or record.prev_hash is None:
            if expected is not None:
                return verdict.fail(record.line, f"record on line {record.line} has no place in the chain")
            verdict.unchained += 1
            continue
        if expected is None:
            verdict.first_seq = record.seq
            if record.seq == 1:
                if record.prev_hash != GENESIS:
                    return verdict.fail(record.seq, "seq 1 does not start from the genesis hash")
            else:
                if verdict.unchained:
                    return verdict.fail(
                        record.seq,
                        f"records without chain fields come before seq {record.seq}, which is not the chain's start",
                    )
                anchor = cuts.get(record.seq - 1)
                if anchor is None or anchor.hash != record.prev_hash:
                    return verdict.fail(
                        record.seq,
                        f"the chain starts at seq {record.seq}: records 1 to {record.seq - 1} are missing and no "
                        "signed checkpoint vouches for the cut",
                    )
                verdict.notes.append(f"starts after a signed checkpoint at seq {record.seq - 1} (a retention cut)")
        elif record.seq != expected:
            what = "missing" if record.seq > expected else "repeated or out of order"
            return verdict.fail(record.seq, f"expected seq {expected}, found {record.seq}: records {what}")
        elif record.prev_hash != prev:
            return verdict.fail(record.seq, f"seq {record.seq} does not link to seq {expected - 1}")
        if link(record.prev_hash, record.content) != record.hash:
            return verdict.fail(record.seq, f"seq {record.seq} was changed: its content does not match its hash")
        signed = by_seq.get(record.seq)
        if signed is not None and signed.hash != record.hash:
            return verdict.fail(record.seq, f"seq {record.seq} differs from the signed checkpoint at that seq")
        prev, expected = record.hash, record.seq + 1
        verdict.checked += 1
        verdict.last_seq, verdict.last_hash = record.seq, record.hash
    beyond = [seq for seq in by_seq if verdict.last_seq is None or seq > verdict.last_seq]
    if beyond:
        last = verdict.last_seq or 0
        return verdict.fail(
            last + 1, f"a signed checkpoint is at seq {max(beyond)} but the chain ends at {last}: its tail was removed"
        )
    if known and verdict.checked:
        covered = max((seq for seq in by_seq if seq <= (verdict.last_seq or 0)), default=None)
        if covered is not None and covered < (verdict.last_seq or 0):
            verdict.notes.append(f"records after seq {covered} are not covered by a checkpoint yet")
    if any(checkpoint.signed is None for checkpoint in known):
        verdict.notes.append("some checkpoints are signed by keys no longer kept and were not checked")
    if not by_seq and verdict.checked:
        verdict.notes.append(
            "no signed checkpoint covers this chain: the links prove order, but the newest records could have been "
            "removed, or the whole chain rewritten, without a trace (gateway audit checkpoint)"
        )
    return verdict


# -- the trail of changes --------------------------------------------------------------------------------------


def trail_record(event: dict[str, Any], line: int) -> Linked:
    """An event of an NDJSON export (or a row turned into the same shape)."""
    created = dt.datetime.fromisoformat(str(event["created_at"]).replace("Z", "+00:00"))
    content = canonical(
        int(event["seq"]) if event.get("seq") is not None else 0,
        created,
        event["actor"],
        event["action"],
        event.get("org"),
        event.get("target", ""),
        event.get("before"),
        event.get("after"),
        event.get("request_id"),
    )
    seq = event.get("seq")
    return Linked(int(seq) if seq is not None else None, event.get("prev_hash"), event.get("hash"), content, line)


def row_record(row: AuditRecord) -> Linked:
    before, after = split_detail(row.detail)
    content = canonical(
        row.seq or 0, row.created_at, row.actor, row.action, row.org, row.target, before, after, row.request_id
    )
    return Linked(row.seq, row.prev_hash, row.hash, content, row.id)


async def stored_trail(sessions: async_sessionmaker[AsyncSession]) -> list[Linked]:
    """Every stored event, unchained ones first, then by seq (read in batches)."""
    records: list[Linked] = []
    async with sessions() as session:
        legacy = await session.scalars(select(AuditRecord).where(AuditRecord.seq.is_(None)).order_by(AuditRecord.id))
        records.extend(row_record(row) for row in legacy)
    after = 0
    while True:
        async with sessions() as session:
            rows = list(
                await session.scalars(
                    select(AuditRecord).where(AuditRecord.seq > after).order_by(AuditRecord.seq).limit(VERIFY_BATCH)
                )
            )
        records.extend(row_record(row) for row in rows)
        if len(rows) < VERIFY_BATCH:
            return records
        after = rows[-1].seq or after


# -- request decision logs -------------------------------------------------------------------------------------


CHAIN_SUFFIX = b',"stream":"'


def decision_records(lines: Iterable[bytes]) -> Iterator[tuple[str, Linked]]:
    """(stream, record) for each chained line of a decision log; the hash covers the line as it was before the
    chain fields were appended."""
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\n")
        if not line:
            continue
        cut = line.rfind(CHAIN_SUFFIX)
        try:
            fields = json.loads(line)
        except ValueError:
            yield "", Linked(None, None, None, b"", number)
            continue
        if cut < 0 or "stream" not in fields:
            yield "", Linked(None, None, None, b"", number)
            continue
        body = line[:cut] + b"}"
        yield str(fields["stream"]), Linked(int(fields["seq"]), fields["prev"], fields["hash"], body, number)

"""Email: messages are written to the `outbox` table in the transaction that causes them, then delivered by
SMTP when `[mail] smtp_host` is set. Without SMTP the outbox is the delivery: `gateway outbox` prints it.

Links in messages are built from `[mail] public_base_url`, never from a request's Host header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from email.message import EmailMessage

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import OutboxMessage, utcnow
from gateway.settings import Mail

log = logging.getLogger("gateway.identity.mail")
MAX_ATTEMPTS = 5
RETRY_SECONDS = 5.0


MAIL_QUEUED = "gateway.mail_queued"


def enqueue(db: AsyncSession, *, to: str, subject: str, body: str) -> None:
    """Queue a message in the caller's transaction: it is sent only if the change commits (`MAIL_QUEUED` in
    `db.info` tells the committer to wake the mailer)."""
    db.info[MAIL_QUEUED] = True
    line = "".join(ch if ch.isprintable() else " " for ch in subject)  # a header: never a line break
    db.add(OutboxMessage(created_at=utcnow(), recipient=to, subject=line[:200], body=body, attempts=0))


def link(settings: Mail, path: str, token: str) -> str:
    """A link for an email, on the configured public origin (never the request's Host)."""
    return f"{settings.public_base_url.rstrip('/')}{path}?token={token}"


class Mailer:
    """Delivers queued messages by SMTP (aiosmtplib) in the background; a no-op without `smtp_host`."""

    def __init__(self, settings: Mail, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self._sessions = sessions
        self._wake = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self.settings.smtp_host is not None

    def kick(self) -> None:
        """Deliver soon (called after a transaction that may have queued mail commits)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=RETRY_SECONDS)
            self._wake.clear()
            try:
                await self.deliver_pending()
            except Exception:
                log.exception("mail delivery failed; it will be retried")

    async def deliver_pending(self) -> int:
        """Send every unsent message (up to MAX_ATTEMPTS tries each); return how many were sent."""
        if not self.enabled:
            return 0
        async with self._sessions() as db:
            pending = list(
                await db.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.sent_at.is_(None), OutboxMessage.attempts < MAX_ATTEMPTS)
                    .order_by(OutboxMessage.id)
                    .limit(100)
                )
            )
        sent = 0
        for message in pending:
            ok = await self._send(message)
            async with self._sessions() as db:
                values = {"sent_at": utcnow()} if ok else {"attempts": OutboxMessage.attempts + 1}
                await db.execute(update(OutboxMessage).where(OutboxMessage.id == message.id).values(**values))
                await db.commit()
            sent += ok
        return sent

    async def _send(self, message: OutboxMessage) -> bool:
        import aiosmtplib

        email = EmailMessage()
        try:
            email["From"] = self.settings.sender
            email["To"] = message.recipient
            email["Subject"] = message.subject
            email.set_content(message.body)
        except (ValueError, TypeError) as exc:  # a message that cannot be written: one failed attempt, not the loop
            log.warning("mail %d cannot be composed: %s", message.id, type(exc).__name__)
            return False
        tls = self.settings.smtp_tls
        try:
            await aiosmtplib.send(
                email,
                hostname=self.settings.smtp_host,
                port=self.settings.smtp_port,
                username=self.settings.smtp_username,
                password=self.settings.smtp_password,
                use_tls=tls == "tls",
                start_tls=tls == "starttls",
                timeout=10,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("sending mail %d failed: %s", message.id, exc)  # never the body: it holds links
            return False
        return True

"""A real SMTP server for the tests (aiosmtpd), and a gateway that sends its mail there."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import Gateway, Upstream, closed_port, gateway_settings, serving
from tests.waiting import eventually

LINK_RE = re.compile(r"https://app\.example/[a-z-]+\?token=(\S+)")


@dataclass
class Mail:
    to: str
    subject: str
    body: str

    @property
    def token(self) -> str:
        match = LINK_RE.search(self.body)
        assert match, self.body
        return match.group(1)


@dataclass
class Mailbox:
    messages: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        self.messages.append(Mail(str(parsed["To"]), str(parsed["Subject"]), body.get_content() if body else ""))
        return "250 OK"

    async def wait_for(self, to: str, subject_part: str, count: int = 1) -> Mail:
        """The newest message to `to` whose subject contains `subject_part`, once `count` such messages have been
        delivered (waits for delivery)."""

        def delivered() -> list[Mail]:
            found = self.about(to, subject_part)
            return found if len(found) >= count else []

        try:
            return (await eventually(delivered))[-1]
        except AssertionError:
            got = [(m.to, m.subject) for m in self.messages]
            raise AssertionError(f"not {count} mail(s) to {to} about {subject_part!r}: {got}") from None

    def about(self, to: str, subject_part: str) -> list[Mail]:
        return [m for m in self.messages if m.to == to and subject_part in m.subject]

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.messages if m.to == address]


@asynccontextmanager
async def mailing_gateway(
    db_url: str, upstream: Upstream, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[Gateway, Mailbox]]:
    """A gateway with the system policy whose mail goes to a real SMTP server started here."""
    mailbox = Mailbox()
    port = closed_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mail = {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_tls": "none",
            "public_base_url": "https://app.example",
        }
        settings = gateway_settings(
            db_url, upstream.url, audit_log=str(tmp_path / "audit.jsonl"), mail=mail, **overrides
        )
        async with serving(settings, upstream) as gateway:
            yield gateway, mailbox
    finally:
        controller.stop()

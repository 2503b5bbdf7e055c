"""Who a provider says signed in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Person:
    """Who a provider says signed in. `subject` is the stable key (never an email or a renamable login);
    `email` is set only when the provider verified it."""

    provider: str
    subject: str
    email: str | None
    name: str = ""
    reported_email: str | None = None
    """The address the provider sent, verified or not (shown in the identity list only)."""
    claims: Mapping[str, Any] = field(default_factory=dict)
    """What membership rules read: the ID token's claims, or GitHub's `orgs` and `teams`."""

"""Request and response bodies of /admin. Requests refuse unknown fields, so a typo is a 4xx, not a no-op."""

from __future__ import annotations

import datetime as dt

import msgspec

# The views the management services return are the API's answers too: one type per shape.
from gateway.manage.audit import AuditView as AuditView
from gateway.manage.invitations import InvitationDetails as InvitationDetails
from gateway.manage.invitations import InvitationView as InvitationView
from gateway.manage.keys import KeyView as KeyView
from gateway.manage.members import MemberView as MemberView
from gateway.manage.policies import LineView as LineView
from gateway.manage.preview import Preview as Preview
from gateway.manage.roles import RoleView as RoleView
from gateway.manage.shadow import ShadowReport as ShadowReport
from gateway.manage.versions import VersionDetail as VersionDetail
from gateway.manage.versions import VersionDiff as VersionDiff
from gateway.manage.versions import VersionView as VersionView


class Body(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every request body."""


# -- organizations ----------------------------------------------------------------------------------------


class OrgCreate(Body):
    slug: str
    name: str


class OrgUpdate(Body):
    """Only the fields given change: an empty text clears it, a limit of 0 removes it."""

    name: str | None = None
    description: str | None = None
    billing_email: str | None = None
    max_members: int | None = None
    """Most members (people and service accounts); adding one more is 409."""
    max_keys: int | None = None
    """Most live API keys; creating one more is 409."""
    max_key_days: int | None = None
    """Longest life of a new key in days; a key must then name one (422 otherwise)."""
    direct_add: bool | None = None
    """False: people join only by accepting an invitation (POST /members is 409)."""


class OrgView(msgspec.Struct):
    id: str
    slug: str
    name: str
    created_at: dt.datetime
    archived: bool
    version: int
    description: str
    billing_email: str | None
    max_members: int | None
    max_keys: int | None
    max_key_days: int | None
    direct_add: bool


class OrgPage(msgspec.Struct):
    items: list[OrgView]
    next_cursor: str | None


# -- users ----------------------------------------------------------------------------------------------


class UserView(msgspec.Struct):
    id: str
    email: str | None
    name: str
    kind: str
    disabled: bool
    created_at: dt.datetime


class UserPage(msgspec.Struct):
    items: list[UserView]
    next_cursor: str | None


# -- members and service accounts -------------------------------------------------------------------------


class MemberAdd(Body):
    role: str
    email: str | None = None
    user_id: str | None = None


class MemberUpdate(Body):
    role: str


class MemberPage(msgspec.Struct):
    items: list[MemberView]
    next_cursor: str | None


class InvitationCreate(Body):
    email: str
    role: str
    expires_in_days: int = 7
    """How long the link works: 1 to 30 days."""


class InvitationPage(msgspec.Struct):
    items: list[InvitationView]
    next_cursor: str | None


class OwnershipTransfer(Body):
    to: str
    """The member (user id or email) who becomes owner."""
    keep_as: str = "admin"
    """The role the caller keeps (when the caller is a member)."""


class OwnershipTransferred(msgspec.Struct):
    owner: MemberView
    previous: MemberView | None
    """The caller's membership after the transfer (null when the caller held no owner role here)."""


class ServiceAccountCreate(Body):
    name: str
    role: str


# -- roles ------------------------------------------------------------------------------------------------


class PermissionBody(Body):
    path: str
    methods: list[str]
    effect: str = "allow"


class RoleCreate(Body):
    name: str
    description: str = ""
    permissions: list[PermissionBody] = msgspec.field(default_factory=list)
    inherits: list[str] = msgspec.field(default_factory=list)


class RoleReplace(Body):
    description: str = ""
    permissions: list[PermissionBody] = msgspec.field(default_factory=list)
    inherits: list[str] = msgspec.field(default_factory=list)


class RolePage(msgspec.Struct):
    items: list[RoleView]
    next_cursor: str | None


# -- policy lines and decisions ---------------------------------------------------------------------------


class LinesAdd(Body):
    lines: list[str | list[str]]
    """Each a CSV line (`"p, viewer, acme, /x, GET"`) or its values (`["p", "viewer", "acme", "/x", "GET"]`)."""


class LinesPreview(Body):
    """A change to preview: lines to add (as for POST /policies) and line ids to remove."""

    add: list[str | list[str]] = msgspec.field(default_factory=list)
    remove: list[int] = msgspec.field(default_factory=list)


class ShadowAttach(Body):
    name: str
    add: list[str] = msgspec.field(default_factory=list)
    remove: list[str] = msgspec.field(default_factory=list)
    files: list[str] | None = None
    """Instead of add/remove: every line the policy files would hold (CSV lines; comments and blanks allowed)."""


class VersionPage(msgspec.Struct):
    items: list[VersionView]
    next_cursor: str | None


class LinePage(msgspec.Struct):
    items: list[LineView]
    next_cursor: str | None


class CheckRequest(Body):
    subject: str
    """`user:<id>`, a user id, an email, or a role name."""
    path: str
    """A proxied path (`/api/orders`) or a management object (`admin:/orgs/acme/members`)."""
    method: str


class CheckResult(msgspec.Struct):
    allowed: bool
    subject: str


MAX_BATCH = 100


class CheckBatch(Body):
    checks: list[CheckRequest]
    """1 to 100 questions, answered in order."""


class CheckBatchResult(msgspec.Struct):
    results: list[CheckResult]


class AccessQuery(Body):
    path: str
    """A proxied path (`/api/orders`) or a management object of this org (`admin:/orgs/acme/members`)."""
    method: str


class AllowedMember(msgspec.Struct):
    subject: str
    email: str | None
    name: str
    kind: str
    role: str
    """The membership's role."""
    rule: list[str]
    """The line that allows it."""


class AllowedRole(msgspec.Struct):
    role: str
    rule: list[str]


class WhoCanResult(msgspec.Struct):
    members: list[AllowedMember]
    """Members and service accounts allowed, by email (then id)."""
    roles: list[AllowedRole]
    """The org's roles (system and custom) that allow it to whoever holds them."""


class SubjectLines(msgspec.Struct):
    subject: str
    roles: list[str]
    lines: list[list[str]]
    """Every line that can decide for the subject here (`p, sub, org, path, method, effect`), in evaluation
    order: the first matching deny decides, else the last matching allow."""


class ExplainResult(msgspec.Struct):
    allowed: bool
    subject: str
    roles: list[str]
    rule: list[str] | None
    """The policy line that decided (`p, sub, org, path, method, effect`), or null: deny by default."""
    reason: str


# -- API keys ---------------------------------------------------------------------------------------------


class KeyCreate(Body):
    name: str
    expires_in_days: int | None = None
    scopes: list[str] = msgspec.field(default_factory=list)
    allowed_ips: list[str] = msgspec.field(default_factory=list)
    """Addresses or networks (IPv4, IPv6; at most 100) the key is accepted from; empty: from anywhere."""


class KeyUpdate(Body):
    allowed_ips: list[str]
    """The key's new allow-list, replacing the old one; empty: from anywhere."""


class KeyRotate(Body):
    grace_seconds: int = 3600
    """How long the old secret keeps working (0 to 604800; 0 revokes it now)."""


class KeyRotated(msgspec.Struct):
    key: str
    """The new secret, shown once."""
    details: KeyView
    previous: KeyView
    """The old key, now expiring at the end of the grace period (or revoked)."""


class KeyCreated(msgspec.Struct):
    key: str
    """Shown once; only a hash is stored."""
    details: KeyView


class KeyPage(msgspec.Struct):
    items: list[KeyView]
    next_cursor: str | None


# -- audit ------------------------------------------------------------------------------------------------


class AuditPage(msgspec.Struct):
    items: list[AuditView]
    next_cursor: str | None

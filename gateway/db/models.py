"""The tables: users, organizations, memberships, policy rules, signing keys, refresh tokens, state version."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        stamp: dt.datetime = value
        return stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str | None] = mapped_column(String(320), unique=True, nullable=True)
    """Stored lower-cased; compared lower-cased. NULL for service accounts, which never log in."""
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """Argon2id PHC string; NULL for service accounts."""
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16), default="human")
    """`human`, or `service`: a non-human member of one org that authenticates only with API keys."""
    name: Mapped[str] = mapped_column(String(200), default="")
    org_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True, index=True
    )
    """The org a service account belongs to (NULL for humans)."""
    email_verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """NULL until the owner of the address follows the verification link (self-registered users)."""
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Reset links issued before this are void."""


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    """The Casbin domain: lower-case letters, digits and single hyphens."""
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Set while archived: the org leaves every snapshot, so its members and keys are denied everywhere."""
    version: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped on every update of this row; the admin API's ETag (If-Match refuses a stale write)."""
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    billing_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    max_members: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Most memberships (people and service accounts); None: no limit."""
    max_keys: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Most live (not revoked, not expired) API keys; None: no limit."""
    max_key_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Longest lifetime of a new API key, in days (keys must then have one); None: the platform's maximum."""
    direct_add: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """Whether admins may add an existing user directly (POST /members); when false, only an accepted invitation
    makes someone a member."""


class Role(Base):
    """A custom role of one org; its permissions are `p` lines and its parents `g` lines in that org's domain."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
    """Bumped on every change of the role or its lines; the admin API's ETag."""


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(64))
    """Becomes `g, user:<user_id>, <role>, <org slug>` in the enforcer."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_by: Mapped[str | None] = mapped_column(String(80), nullable=True)
    """`provider:<name>` while the membership is the work of that provider's claims mapping, which may change or
    remove it at a later sign-in; NULL when an admin, an invitation or the CLI made it (a mapping never touches
    it), and cleared when an admin changes the role."""


class PolicyRule(Base):
    """One Casbin line, stored column by column so no value is ever re-parsed from CSV."""

    __tablename__ = "policy_rules"
    __table_args__ = (UniqueConstraint("ptype", "v0", "v1", "v2", "v3", "v4", "v5"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ptype: Mapped[str] = mapped_column(String(8))
    # Empty string, never NULL, for unused columns: NULLs would defeat the unique constraint.
    v0: Mapped[str] = mapped_column(String(255), default="")
    v1: Mapped[str] = mapped_column(String(255), default="")
    v2: Mapped[str] = mapped_column(String(255), default="")
    v3: Mapped[str] = mapped_column(String(255), default="")
    v4: Mapped[str] = mapped_column(String(255), default="")
    v5: Mapped[str] = mapped_column(String(255), default="")
    origin: Mapped[str] = mapped_column(String(8), default="file")
    """`file` (policy files: `policy sync` owns them) or `api` (the admin API; sync never removes them)."""


class SigningKey(Base):
    """A JWT signing key, generated on first start; kept so restarts and replicas accept each other's tokens."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key: Mapped[str] = mapped_column(Text)
    """PKCS#8 PEM. Never logged, never served: only the public half leaves the process."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Session(Base):
    """One login: its refresh tokens form a family with this id, and its access tokens carry it as `sid`."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """Absolute end: refreshing never extends it."""
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    """When the user last proved a factor in this session (login, re-authentication)."""
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class RefreshToken(Base):
    """An opaque refresh token, stored as its SHA-256; rotation keeps the family to detect reuse."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """Absolute end of the family: rotation never extends it."""
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StateVersion(Base):
    """A single row counting changes to what the hot path caches (orgs, memberships, rules, keys)."""

    __tablename__ = "state_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StateChange(Base):
    """What one bump of the state version changed, written in the change's own transaction: a replica at version
    v applies the entries v+1.. to its snapshot instead of re-reading everything (`gateway.db.changes`)."""

    __tablename__ = "state_changes"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """The state version this change produced."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ops: Mapped[str | None] = mapped_column(Text, nullable=True)
    """A JSON list of operations (empty: nothing the hot path holds); NULL: rebuild everything."""


class AuditRecord(Base):
    """A change to configuration (admin API, CLI, policy sync), written in the change's own transaction."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_org_id", "org", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    """Who: `user:<id>`, or `cli:<os user>` for the command line."""
    action: Mapped[str] = mapped_column(String(64))
    org: Mapped[str | None] = mapped_column(String(63), nullable=True)
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="{}")
    """JSON: what changed (before/after, lines added and removed)."""
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True, unique=True)
    """Place in the chain (1, 2, ...), given at flush under the chain's lock (see `gateway.db.chain`); None only
    for events written before the chain existed."""
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 of the previous event's hash and this event's fields: editing, removing or reordering any event
    breaks every link after it."""


class AuditChain(Base):
    """A single row: the chain's head (the last event's sequence number and hash), locked by every transaction
    that adds events, so events are chained one transaction after another."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A chain head signed with the gateway's signing key, so that a removed tail is detected too: of this
    trail (`stream` "admin") or of one process's request decision log (`stream` its id)."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index("ix_audit_checkpoints_stream", "stream", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="head", server_default="head")
    """`head` (the newest record then), or `cut` (the last record retention deleted: the chain may start after
    it)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    kid: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(200))
    """Base64url Ed25519 signature of `checkpoint_message(stream, seq, hash, created_at, kind)`."""


class ApiKey(Base):
    """An API key acting as its owner in one organization; only a hash of the key is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    """The public key id embedded in the key."""
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64))
    last4: Mapped[str] = mapped_column(String(4))
    scopes: Mapped[str] = mapped_column(Text, default="[]")
    """JSON list of "METHOD /pattern" strings that narrow (never widen) what the owner's roles allow."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    allowed_ips: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    """JSON list of addresses or networks (`203.0.113.0/24`, `2001:db8::/32`) the key is accepted from; empty:
    from anywhere. Compared with the client address as resolved through `trusted_proxies`."""


class EmailToken(Base):
    """A single-use secret sent by email (verify an address, reset a password, confirm a new address); only
    its SHA-256 is stored."""

    __tablename__ = "email_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    """`verify`, `reset` or `email-change`."""
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    new_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OutboxMessage(Base):
    """An email, written in the transaction that caused it, then delivered by SMTP (or read by a developer
    with `gateway outbox` when no SMTP server is configured)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class TotpFactor(Base):
    """A user's TOTP secret (RFC 6238, SHA-1, 6 digits, 30 s), active once confirmed."""

    __tablename__ = "totp_factors"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(255))
    """Base32, 160 bits; sealed with `encryption_key` when one is configured. Never returned after enrolment."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)
    """The last accepted time step: a code is accepted at most once (no replay)."""


class BackupCode(Base):
    """One single-use recovery code (50 random bits), stored as Argon2id."""

    __tablename__ = "backup_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MfaChallenge(Base):
    """A login that passed the password and waits for a second factor; dies after 5 wrong codes or 5 minutes."""

    __tablename__ = "mfa_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")


class BootstrapToken(Base):
    """A one-time secret (`gateway bootstrap-token`) that creates the first superadmin over HTTP, then dies."""

    __tablename__ = "bootstrap_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Invitation(Base):
    """An invitation to join an org with a role, sent by email; the link's secret is stored as its SHA-256 and
    works once, until `expires_at`, unless revoked or declined first."""

    __tablename__ = "invitations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    accepted_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    declined_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PolicyVersion(Base):
    """One numbered version of an org's own lines (its `p` lines and role `g` lines, not memberships): written
    in the transaction of every change to them, with the whole set, so any two compare and any one restores."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("org_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    lines: Mapped[str] = mapped_column(Text)
    """JSON list of lines, each a list of values (`["p", "viewer", "acme", "/x", "GET", "allow"]`), sorted."""
    digest: Mapped[str] = mapped_column(String(64))
    """SHA-256 of `lines`: a change that leaves the set as it was makes no version."""


class AuditDelivery(Base):
    """A single row: how far the audit webhook has delivered, and which replica holds the delivery lease."""

    __tablename__ = "audit_delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ShadowPolicy(Base):
    """A candidate policy decided beside the live one on every proxied request (which it never decides): a set
    of line changes, or a whole set of policy-file lines. At most one is `active`."""

    __tablename__ = "shadow_policies"
    __table_args__ = (
        Index(
            "uq_shadow_policies_active",
            "status",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    add_lines: Mapped[str] = mapped_column(Text)
    """JSON list of lines (each a list of values) the candidate adds to the live policy."""
    remove_lines: Mapped[str] = mapped_column(Text)
    """JSON list of lines the candidate takes away."""
    files: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Instead of add/remove: JSON list of every policy-file line the candidate holds (the live file lines are
    replaced by these; API lines stay)."""
    status: Mapped[str] = mapped_column(String(16))
    """`active`, `promoted` or `dropped`."""
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    compared: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Proxied requests decided by both policies (summed over every process)."""


class ShadowDifference(Base):
    """Requests the candidate would decide otherwise, counted by route, org and the two deciding lines, with
    one sample request."""

    __tablename__ = "shadow_differences"
    __table_args__ = (UniqueConstraint("shadow_id", "key_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    shadow_id: Mapped[int] = mapped_column(ForeignKey("shadow_policies.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of (route, org, both answers, both deciding lines): one row each."""
    route: Mapped[str] = mapped_column(String(255))
    org: Mapped[str] = mapped_column(String(63))
    live_allowed: Mapped[bool] = mapped_column(Boolean)
    shadow_allowed: Mapped[bool] = mapped_column(Boolean)
    live_rule: Mapped[str] = mapped_column(Text)
    shadow_rule: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger)
    sample_subject: Mapped[str] = mapped_column(String(200))
    sample_path: Mapped[str] = mapped_column(Text)
    sample_method: Mapped[str] = mapped_column(String(16))
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ExternalIdentity(Base):
    """An identity at an outside provider (OpenID Connect, GitHub) linked to one of our users.

    `provider` is the configured name (`[[identity_providers]] name`, or a trusted issuer's `link_provider`), and
    `subject` the provider's stable key for the person: the ID token's `sub` (Entra: `tid:oid`), GitHub's numeric
    user id; never an email or a renamable login.
    """

    __tablename__ = "external_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    """The address the provider reported at the last sign-in (shown in the list; never used to look up)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoginState(Base):
    """A sign-in through an outside provider between its start and its callback: single-use, short-lived, bound
    to the browser that started it (a cookie whose SHA-256 is `browser_hash`)."""

    __tablename__ = "login_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 (hex) of the `state` parameter (256 random bits); the state itself is never stored."""
    browser_hash: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    """The PKCE verifier (RFC 7636, S256), sent only with the code."""
    link_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True)
    """Set when a signed-in user links this provider to their account."""
    return_to: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Opaque to the callback: where the portal sends the browser afterwards (checked by the portal)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

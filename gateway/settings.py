"""Typed, frozen configuration: a TOML file decoded with msgspec, then `GATEWAY_*` environment overrides.

Precedence, highest first: environment (`GATEWAY_DATABASE_URL`, `GATEWAY_TOKENS__ACCESS_TTL_SECONDS`, ...),
then the TOML file (`--config PATH`, else `GATEWAY_CONFIG`, else `./gateway.toml` when it exists), then the
defaults below. Every error names the offending key, and nothing is read at import time.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from gateway.hosts import configured_host, host_template, label_in
from gateway.namespace import RESERVED_PREFIXES

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./gateway.db"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_ACCESS_TTL = 900
DEFAULT_REFRESH_TTL = 14 * 24 * 3600
DEFAULT_REFRESH_IDLE = 3 * 24 * 3600
DEFAULT_ISSUER = "casbin-gateway"
DEFAULT_AUDIENCE = "casbin-gateway"
ENV_PREFIX = "GATEWAY_"
DEFAULT_TRACES_ENDPOINT = "http://127.0.0.1:4318/v1/traces"
OTEL_EXTRA = "pip install 'casbin-gateway[otel]'"
"""What installs the OpenTelemetry SDK and exporter that `[tracing]` needs."""

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
SHIPPED_MODEL = PACKAGE_DATA / "model.conf"
"""The model shipped with the package: RBAC with domains, keyMatch2 paths, deny overrides allow."""
SHIPPED_POLICY = PACKAGE_DATA / "system.csv"
"""The system roles (viewer, member, admin, owner, superadmin) and their admin grants; `gateway migrate` stores them."""
# Keys holding a file or folder: relative values in the config file are relative to that file's folder.
_PATH_KEYS = ("model_path", "policy_dir", "audit_log")
_LISTEN_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")

ORG_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
"""policy/rules.py's ORG_SLUG_RE (importing gateway.policy here would load casbin; a test keeps them equal)."""
_SEGMENT_RE = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._~-]+")
_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$|^/$")


CredentialKind = Literal["bearer", "api_key", "cookie"]
"""What a caller may authenticate with: an access token, an API key, the browser session cookie."""
DEFAULT_AUTH: tuple[CredentialKind, ...] = ("bearer", "api_key")
IdentityHeader = Literal["user", "email", "name", "org", "roles"]
"""What the gateway tells an upstream about the caller: X-Gateway-User, -Email, -Name, -Org, -Roles."""
DEFAULT_IDENTITY_HEADERS: tuple[IdentityHeader, ...] = ("user", "org", "roles")


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


class Cors(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[routes.cors]`: the gateway answers preflights and sets Access-Control-* for this route."""

    allow_origins: tuple[str, ...]
    """Exact origins (`https://app.example`), or `*` for any (never with credentials)."""
    allow_methods: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    allow_headers: tuple[str, ...] = ("authorization", "content-type", "x-org", "x-request-id")
    expose_headers: tuple[str, ...] = ("x-request-id",)
    allow_credentials: bool = False
    max_age: int = 600
    """Seconds a browser may cache a preflight answer."""


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One `[[routes]]` table: requests under `prefix` go to `upstream`."""

    prefix: str
    """Path prefix, matched on whole segments (`/api` matches `/api` and `/api/x`, never `/apix`)."""
    upstream: str
    """Base URL of the upstream service, `http://` or `https://`; its path (if any) is prepended."""
    strip_prefix: bool = False
    """Forward the path without `prefix` (`/api/orders` -> `/orders`). Casbin still sees the full path."""
    public: bool = False
    """Skip authentication and authorization entirely. Identity headers are still stripped."""
    hosts: tuple[str, ...] = ()
    """Match only requests for these hosts: exact names (`api.example.com`) or one leading wildcard label
    (`*.apps.example.com`: one label, never several), compared case-insensitively without port or trailing dot,
    IDNA names as punycode. The host is the Host header, or X-Forwarded-Host from `trusted_proxies`. Among the
    routes a request matches, an exact host beats a wildcard, a wildcard beats a route without `hosts`; then the
    longest prefix wins. Empty: any host, as before."""
    org_from: Literal["header", "path", "host", "default"] = "header"
    """Where the organization slug comes from: the `X-Org` header; the path (`org_path`); the host
    (`org_host`); or the fixed `org`. With path, host or default, an `X-Org` naming another org is refused
    (403), and the upstream's X-Org is always the org decided on."""
    org_path: str | None = None
    """With org_from = "path": where the slug sits in the path after `prefix`, as a template whose one
    `{org}` segment is the slug and whose other segments must match literally: `/orgs/{org}` reads `acme` from
    `<prefix>/orgs/acme/...`. Default `/{org}`: the first segment after the prefix."""
    org_host: str | None = None
    """With org_from = "host": a host pattern whose one `{org}` label is the slug (`{org}.apps.example.com`);
    a host that does not fit it exactly names no org (403)."""
    org: str | None = None
    """With org_from = "default": the organization slug every request on this route is decided in."""
    connect_timeout: float | None = None
    """Seconds to establish the upstream connection (default: `[upstream].connect_timeout`)."""
    read_timeout: float | None = None
    """Seconds to wait for upstream data (default: `[upstream].read_timeout`)."""
    max_body_bytes: int | None = None
    """Largest request body forwarded, in bytes (default: `[upstream].max_body_bytes`); more is 413."""
    retries: int = 1
    """Extra attempts after a connect failure, for GET/HEAD/OPTIONS/PUT/DELETE without a body."""
    pool_size: int | None = None
    """Give this route its own connection pool of this size (default: the shared `[upstream].pool_size`)."""
    cors: Cors | None = None
    """CORS for this route; absent means OPTIONS is authenticated and authorized like any method."""
    identity_token: bool = False
    """Also send `X-Gateway-Identity`: a 60-second EdDSA JWT (sub, org, roles, aud = the upstream's origin)
    that the upstream verifies with `/.well-known/jwks.json`."""
    auth: tuple[CredentialKind, ...] = DEFAULT_AUTH
    """What this route accepts: `bearer` (access tokens), `api_key`, `cookie` (the browser session; needs
    `[browser] enabled`). Any other credential is treated as missing (401). A browser navigation without a valid
    credential on a route accepting `cookie` is sent to the sign-in portal."""
    identity_headers: tuple[IdentityHeader, ...] | None = None
    """Which identity headers this route's upstream gets (default: the top-level `identity_headers`)."""
    strict_paths: bool = True
    """Refuse (400) paths that an upstream decoding once more, or normalising Unicode (NFKC), would read with
    a dot segment or separator the gateway never saw: `%252e`, `%252f`, `%255c`, full-width U+FF0E, U+2025... Set
    false only for an upstream that does neither and needs such paths."""


class Tokens(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Access and refresh token settings."""

    issuer: str = DEFAULT_ISSUER
    """The `iss` claim written into and required from access tokens."""
    audience: str = DEFAULT_AUDIENCE
    """The `aud` claim written into and required from access tokens."""
    access_ttl_seconds: int = DEFAULT_ACCESS_TTL
    """Lifetime of an access JWT (1..3600 s)."""
    refresh_ttl_seconds: int = DEFAULT_REFRESH_TTL
    """Absolute lifetime of a session (a login): refreshing never extends it."""
    refresh_idle_seconds: int = DEFAULT_REFRESH_IDLE
    """A session ends when its refresh token has not been used for this long."""


class Upstream(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Defaults for the shared upstream connection pool."""

    connect_timeout: float = 5.0
    """Seconds to connect to an upstream; exceeding it is 504."""
    read_timeout: float = 30.0
    """Seconds to wait for each chunk from an upstream; exceeding it is 504."""
    pool_size: int = 256
    """Maximum open upstream connections for the whole process."""
    max_body_bytes: int = 100 * 1024 * 1024
    """Largest request body forwarded, in bytes, unless a route says otherwise; more is 413."""
    max_header_bytes: int = 32 * 1024
    """Largest total size of a request's header names and values; more is 431."""


class Passwords(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Argon2id cost; defaults are OWASP's minimum (m=19 MiB, t=2, p=1)."""

    memory_kib: int = 19456
    """Argon2 memory cost in KiB."""
    time_cost: int = 2
    """Argon2 iterations."""
    parallelism: int = 1
    """Argon2 lanes."""
    max_concurrent: int | None = None
    """Argon2 runs at once in this process (each in its own thread). Default: half the CPUs it may use, at least
    one, so that a login storm leaves the rest to proxied traffic. With several workers the bound is per
    worker: size it as (CPUs for hashing) / workers."""
    queue: int | None = None
    """Callers that may wait for a hashing slot; one more gets 503 with Retry-After at once, before any lookup
    (the same answer for every email). Default: 8 per slot."""
    cpu_budget: float | None = None
    """CPUs' worth of time hashing may use on average in this process while its event loop (the data plane) is
    fully busy (0.5: half a CPU); as the loop gets idler, the allowance rises in proportion, up to
    `max_concurrent` CPUs when it is idle. A run waits in the queue while hashing has used more. Default: 1 % of
    the CPUs this process may use."""
    niceness: int = 10
    """Nice value of the hashing threads (Linux: per thread; 0 to keep the process's): proxied traffic gets
    the CPU first and hashing what is left."""


class Mail(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[mail]`: how verification, reset and notice emails leave. Without `smtp_host` they stay in the outbox
    (`gateway outbox` prints it)."""

    public_base_url: str = "http://127.0.0.1:8080"
    """The origin links in emails point to (your front end or this gateway); never taken from a request."""
    sender: str = "gateway@localhost"
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    """`starttls`, `tls` (implicit, port 465) or `none` (local relays only)."""
    smtp_username: str | None = None
    smtp_password: str | None = None
    """Never logged. Prefer GATEWAY_MAIL__SMTP_PASSWORD in the environment."""


class Orgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[orgs]`: who may create organizations, and when an archived one may be deleted."""

    self_service: bool = False
    """When true, any signed-in person (not an API key) creates organizations and owns them; otherwise only a
    platform-wide grant (superadmin) may."""
    per_user: int = 3
    """With self-service: how many organizations one person may own (a platform-wide grant has no limit)."""
    delete_after_days: int = 30
    """An archived organization may be deleted for good (DELETE /admin/orgs/{org}) this many days after it was
    archived, not before: the grace period in which a restore brings everything back."""


MIN_WEBHOOK_SECRET = 32
"""Characters an audit webhook's signing secret has at least (`secrets.token_hex(32)` makes 64)."""
MAX_WEBHOOK_TIMEOUT = 20.0
"""Seconds; below the 30-second delivery lease, so a delivery ends before another replica may take over."""


class Audit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[audit]`: how long the trail of configuration changes is kept, and a webhook it is delivered to."""

    retention_days: int | None = None
    """Events older than this many days are deleted (at start, then hourly; `gateway audit prune`). Unset keeps
    every event. With a webhook, an event is never deleted before the webhook has it."""
    webhook_url: str | None = None
    """Where every event is POSTed as JSON, oldest first, at least once (`http://` or `https://`)."""
    webhook_secret: str | None = None
    """The HMAC-SHA256 key of `X-Gateway-Signature`, at least 32 characters; required with `webhook_url` unless
    `webhook_secret_file` is set. Never logged. Prefer GATEWAY_AUDIT__WEBHOOK_SECRET in the environment."""
    webhook_secret_file: str | None = None
    """A file holding the secret (surrounding whitespace ignored), instead of `webhook_secret`."""
    webhook_timeout: float = 10.0
    """Seconds a delivery may take (connect, send, answer); more is a failure and is retried. At most 20."""
    otlp_logs_endpoint: str | None = None
    """Also send every event to this OTLP/HTTP logs endpoint (`http://collector:4318/v1/logs`), at least once, as
    log records; needs the otel extra. Retention then keeps events until both it and the webhook have them."""
    otlp_headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Headers of every OTLP logs export (collector credentials); never logged."""
    chain_decisions: bool = False
    """Chain the request decision log (`audit_log`) too: each line gets its process's stream id, a sequence
    number, the previous line's hash and its own (`gateway audit verify --file`). The trail of changes is always
    chained."""
    checkpoint_seconds: float = 300.0
    """How often the chains' heads are signed and stored (checkpoints; also when a process stops, and before
    retention cuts the trail), so that removing the newest records is detected too."""

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={'<hidden>' if name in ('webhook_secret', 'otlp_headers') and value else repr(value)}"
            for name, value in ((name, getattr(self, name)) for name in self.__struct_fields__)
        )
        return f"Audit({shown})"

    def webhook_key(self) -> bytes:
        """The signing secret, from `webhook_secret` or read from `webhook_secret_file`; ConfigError naming the
        key when it is missing, unreadable or short (the message never holds the secret)."""
        if self.webhook_secret is not None and self.webhook_secret_file is not None:
            raise ConfigError("audit.webhook_secret_file: set webhook_secret or webhook_secret_file, not both")
        if self.webhook_secret_file is not None:
            try:
                secret = Path(self.webhook_secret_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(f"audit.webhook_secret_file: cannot be read: {reason or exc}") from exc
            key = "audit.webhook_secret_file"
        elif self.webhook_secret is not None:
            secret, key = self.webhook_secret, "audit.webhook_secret"
        else:
            raise ConfigError(
                "audit.webhook_secret: required with audit.webhook_url; set GATEWAY_AUDIT__WEBHOOK_SECRET or "
                "audit.webhook_secret_file"
            )
        if len(secret) < MIN_WEBHOOK_SECRET:
            raise ConfigError(
                f"{key}: the secret is too short ({len(secret)} characters, at least {MIN_WEBHOOK_SECRET}); make "
                "one with: python3 -c 'import secrets; print(secrets.token_hex(32))'"
            )
        return secret.encode()


class Login(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[login]`: throttling of failed logins, per account (known or not) and per client IP."""

    free_failures: int = 5
    """Failures allowed for one email within an hour, with no success since, before it is locked."""
    base_lock_seconds: int = 30
    """First lock; each further failure doubles it."""
    max_lock_seconds: int = 900
    """The longest lock (15 minutes)."""
    ip_failures_per_window: int = 100
    """Failures from one client IP within 15 minutes (a moving window) before that IP is refused."""
    superadmins_need_mfa: bool = False
    """When true, a superadmin without confirmed TOTP gets 403 `mfa-enrollment-required` on /admin (their own
    /auth endpoints, where they enrol, stay open). Recommended in production."""


class RateLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[rate_limits]`: requests per minute (sliding windows) on authenticated proxied routes; unset means
    unlimited."""

    per_user_per_minute: int | None = None
    per_org_per_minute: int | None = None
    per_key_per_minute: int | None = None
    """Per API key, on top of its owner's user budget."""
    redis_url: str | None = None
    """`redis://host:6379/0` to share the budget between replicas; otherwise counted in each process."""


class Clients(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[clients]`: how long and how many client connections may hold the gateway (defaults like nginx's)."""

    header_timeout: float = 60.0
    """Seconds a request's line and headers may take to arrive (from the connection's start or the request's
    first byte); then 408 and the connection closes (nginx `client_header_timeout`)."""
    keep_alive_timeout: int = 75
    """Seconds an idle keep-alive connection stays open between requests (nginx `keepalive_timeout`)."""
    max_connections: int | None = None
    """Open client connections per process; one more is answered 503 and closed at once. Default: half the
    process's file-descriptor limit (the rest serves upstream pools, the database and files)."""


class Tracing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[tracing]`: OpenTelemetry traces sent over OTLP/HTTP to a collector. Needs the `otel` extra
    (`pip install 'casbin-gateway[otel]'`). Off by default, and then no tracer is called on any request."""

    enabled: bool = False
    """Trace every proxied request and forward-auth decision (a span per stage) and every /auth and /admin
    request."""
    endpoint: str = DEFAULT_TRACES_ENDPOINT
    """The collector's OTLP/HTTP traces URL, path included (`http://collector:4318/v1/traces`)."""
    service_name: str = "casbin-gateway"
    """The traces' `service.name` (OTEL_RESOURCE_ATTRIBUTES may add more resource attributes)."""
    sample_ratio: float = 1.0
    """Share of new traces recorded, 0 to 1. A continued trace follows its caller's sampled flag (parent-based),
    so one trace is kept or dropped as a whole."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Sent with every export: a collector's or vendor's credentials. Never logged; prefer
    GATEWAY_TRACING__HEADERS__<NAME> (or OTEL_EXPORTER_OTLP_TRACES_HEADERS, used when this is empty)."""
    trust_incoming: Literal["trusted_proxies", "all", "none"] = "trusted_proxies"
    """Whose W3C `traceparent`/`tracestate` the gateway continues: callers connecting from `trusted_proxies`
    (default), anyone (`all`), or no one (`none`). Any other caller's are ignored: its request starts a new
    trace, and the upstream gets the gateway's traceparent instead of the caller's."""
    batch_delay_seconds: float = 5.0
    """Finished spans wait up to this long to leave in one batch (or until 512 are waiting)."""


class Browser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Browsers at the front door: the sign-in portal and its session cookie (`[browser]`)."""

    enabled: bool = False
    """Serve the portal (`/portal/...`) and accept the session cookie on routes whose `auth` lists `cookie`."""
    public_url: str | None = None
    """The portal's external origin, such as `https://auth.example.com`: where browsers are sent to sign in.
    Defaults to `mail.public_base_url`."""
    cookie_name: str = "__Host-gateway_session"
    """`__Host-` (no Domain, Path=/, Secure) unless `cookie_domain` is set; then use a `__Secure-` name."""
    cookie_domain: str | None = None
    """A parent domain (`example.com`) to share the session across its subdomains; None: the portal's host only."""
    cookie_secure: bool = True
    """Set false only for local plain-HTTP trials; `__Host-`/`__Secure-` names then cannot be used."""
    idle_seconds: int = 3600
    """A browser session ends after this long without a request."""
    absolute_seconds: int = 12 * 3600
    """A browser session ends this long after sign-in, however active."""
    allowed_hosts: tuple[str, ...] = ()
    """Hosts a return URL may point at after sign-in: exact names (`app.example.com`, with `:port` if not the
    default) or `.example.com` for any subdomain. The portal's own host is always allowed."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (`https://app.example.com`) whose cookie-authenticated unsafe requests are accepted besides the
    request's own origin."""
    post_logout_urls: tuple[str, ...] = ()
    """Exact URLs sign-out may send the browser to; anything else goes to the sign-in page."""
    product_name: str = "Gateway"
    """Shown on the portal pages."""
    logo_url: str | None = None
    """An image shown on the portal pages."""


class ForwardAuth(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[forward_auth]`: what `/authz/forward` accepts and answers with."""

    auth: tuple[CredentialKind, ...] = DEFAULT_AUTH
    """Credentials accepted, as a route's `auth`; with `cookie`, a browser without a session is sent to the
    portal (302/303, or 401 with Location for nginx)."""
    identity_headers: tuple[IdentityHeader, ...] | None = None
    """Identity headers in an allowing answer (default: the top-level `identity_headers`)."""
    identity_token: bool = False
    """Also answer with `X-Gateway-Identity`, the signed identity JWT, for `audience`."""
    audience: str | None = None
    """The `aud` of that JWT (the upstream's origin); required with `identity_token`."""


PROVIDER_KINDS = ("oidc", "google", "entra", "github")
GOOGLE_ISSUER = "https://accounts.google.com"
ENTRA_AUTHORITY = "https://login.microsoftonline.com"
ENTRA_MULTI_TENANT = ("common", "organizations", "consumers")
ENTRA_PERSONAL_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
"""The `tid` of personal Microsoft accounts (outlook.com, ...)."""
GITHUB_URL = "https://github.com"
GITHUB_API_URL = "https://api.github.com"
DEFAULT_ID_TOKEN_ALGORITHMS = ("RS256", "ES256", "PS256", "EdDSA")
_PROVIDER_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


class ProviderMembership(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One `[[identity_providers.memberships]]` entry: a person whose `claim` holds `value` (equals it, or lists
    it) is made `role` in `org` at each sign-in. GitHub has no claims: use `claim = "orgs"` (value: an org login)
    or `claim = "teams"` (value: `org/team-slug`)."""

    claim: str
    value: str
    org: str
    role: str


class IdentityProvider(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One `[[identity_providers]]` table: an outside provider people sign in with (`/auth/providers/{name}`)."""

    name: str
    """Lower-case letters, digits and hyphens; part of the redirect URI, and what linked identities are filed
    under (renaming a provider unlinks everyone)."""
    client_id: str
    kind: Literal["oidc", "google", "entra", "github"] = "oidc"
    """`oidc`: any OpenID Connect provider by its `issuer`; `google` and `entra`: presets; `github`: GitHub's
    OAuth apps (not OpenID Connect: the person is GitHub's numeric user id and their primary verified email)."""
    display_name: str = ""
    """Shown in the provider list (default: the name)."""
    issuer: str | None = None
    """`oidc`: required, the exact issuer (its discovery document is `{issuer}/.well-known/openid-configuration`).
    `google`: `https://accounts.google.com` by default. Not used by `entra` (see `tenant`) nor `github`."""
    tenant: str | None = None
    """`entra`: a tenant id (GUID) for one organisation, or `organizations`/`common` with `allowed_tenants`."""
    allowed_tenants: tuple[str, ...] = ()
    """`entra` with a multi-tenant `tenant`: the tenant ids (`tid`) whose people may sign in (required)."""
    authority: str = ENTRA_AUTHORITY
    """`entra`: the Microsoft identity platform's origin (a sovereign cloud's, or a stand-in's in tests)."""
    github_url: str = GITHUB_URL
    """`github`: where people authorise (`/login/oauth/authorize`) and codes are redeemed; GitHub Enterprise
    Server: your server's origin."""
    github_api_url: str = GITHUB_API_URL
    """`github`: the REST API (`https://ghe.example.com/api/v3` for GitHub Enterprise Server)."""
    client_secret: str | None = None
    """Discouraged (the secret would sit in the config file): prefer `client_secret_env` or
    `client_secret_file`. Never logged."""
    client_secret_env: str | None = None
    """The environment variable holding the client secret."""
    client_secret_file: str | None = None
    """A file holding the client secret (surrounding whitespace ignored)."""
    scopes: tuple[str, ...] = ()
    """Requested scopes. Default: `openid email profile` (OpenID Connect), `read:user user:email` (GitHub, plus
    `read:org` when a rule reads orgs or teams)."""
    email_claim: str = "email"
    email_verified_claim: str = "email_verified"
    """The claim that says the provider verified `email`; an address without it set to true never links to or
    creates an account by itself."""
    name_claim: str = "name"
    algorithms: tuple[str, ...] = DEFAULT_ID_TOKEN_ALGORITHMS
    """JWS algorithms an ID token may use (asymmetric only: `none` and HS* are refused here)."""
    extra_audiences: tuple[str, ...] = ()
    """Audiences an ID token may carry besides `client_id` (some providers always add one); others are refused."""
    hosted_domains: tuple[str, ...] = ()
    """`google`: only Workspace accounts whose ID token's `hd` claim is one of these may sign in."""
    email_domains: tuple[str, ...] = ()
    """Only people whose verified email is at one of these domains may sign in (any provider)."""
    required_orgs: tuple[str, ...] = ()
    """`github`: only members of one of these organisations may sign in; a failed lookup refuses."""
    allow_signup: bool = False
    """Create a new user for a person the gateway does not know (their verified email belongs to no user);
    otherwise such a sign-in is refused (403 `signup-disabled`)."""
    memberships: tuple[ProviderMembership, ...] = ()
    """Claims to memberships, applied at every sign-in (see the README: a mapping adds and removes only the
    memberships it made)."""

    def __repr__(self) -> str:
        secret = "<hidden>" if self.client_secret else None
        return f"IdentityProvider(name={self.name!r}, kind={self.kind!r}, client_secret={secret})"

    @property
    def label(self) -> str:
        return self.display_name or self.name

    def secret(self, environ: Mapping[str, str] | None = None) -> str:
        """The client secret from `client_secret_env`, `client_secret_file` or `client_secret`; ConfigError naming
        the key when it is missing or unreadable (the message never holds the secret)."""
        key = f"identity_providers.{self.name}"
        given = [self.client_secret, self.client_secret_env, self.client_secret_file]
        if sum(value is not None for value in given) != 1:
            raise ConfigError(
                f"{key}.client_secret_env: set exactly one of client_secret_env, client_secret_file, client_secret"
            )
        if self.client_secret_env is not None:
            value = (os.environ if environ is None else environ).get(self.client_secret_env, "").strip()
            if not value:
                raise ConfigError(f"{key}.client_secret_env: {self.client_secret_env} is not set")
            return value
        if self.client_secret_file is not None:
            try:
                value = Path(self.client_secret_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(f"{key}.client_secret_file: cannot be read: {reason or exc}") from exc
            if not value:
                raise ConfigError(f"{key}.client_secret_file: the file is empty")
            return value
        assert self.client_secret is not None
        return self.client_secret


ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""Algorithms an outside issuer's tokens may be configured for: asymmetric only (never `none` or HMAC)."""
MAX_ISSUER_LEEWAY = 60
_ISSUER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_LOOPBACK_HOSTS = frozenset({"localhost"})


def fetchable_url(url: str) -> bool:
    """An absolute `https` URL, or `http` to a loopback host (tests, a sidecar); no credentials, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TrustedIssuer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One `[[trusted_issuers]]` table: access tokens (JWTs) this outside identity provider issues are accepted
    as bearer tokens, verified against its published keys (RFC 8725; REQ-B20)."""

    name: str
    """A short name (`corp`: lowercase letters, digits, `-`, `_`): callers without a linked user are the Casbin
    subject `ext:<name>:<sub>`."""
    issuer: str
    """The `iss` the tokens carry, compared exactly (no trailing-slash folding). Without `jwks_url` it is also
    where discovery is read: `{issuer}/.well-known/openid-configuration` (https, or http to a loopback host)."""
    audiences: tuple[str, ...]
    """The token's `aud` must contain one of these (required: a token minted for another API is refused)."""
    algorithms: tuple[str, ...]
    """The `alg` values accepted (required): RS256/384/512, PS256/384/512, ES256/384/512, EdDSA. Never `none` or
    HS*: a key from a public key set must not be usable as an HMAC secret."""
    jwks_url: str | None = None
    """The issuer's JWK Set URL; None: the `jwks_uri` of its discovery document."""
    subject_claim: str = "sub"
    """The claim naming the caller (a string, printable ASCII without spaces, at most 255 characters). Several
    claims joined by `:` make the subject of their values joined by `:`: `tid:oid` for Microsoft Entra, whose
    sign-in (`kind = "entra"`) links people under that key."""
    org_claim: str | None = None
    """A claim naming the caller's organization (a slug): the token is then bound to it, like an API key, and a
    request naming another org is refused. None: the org comes from the request (`X-Org` or the path)."""
    link_provider: str | None = None
    """An `ExternalIdentity.provider` name: a caller whose subject is linked to one of our users under this
    provider acts as that user (`user:<id>`; refused while the user is disabled). None: never linked."""
    leeway_seconds: int = 30
    """Clock skew allowed on `exp`, `nbf` and `iat`, at most 60 seconds."""
    min_refetch_seconds: float = 30.0
    """A token with an unknown `kid` fetches the key set again at most this often (1 to 3600 seconds)."""


def _validate_issuers(issuers: tuple[TrustedIssuer, ...], own_issuer: str) -> None:
    names: set[str] = set()
    seen: set[str] = set()
    for index, trusted in enumerate(issuers):
        key = f"trusted_issuers[{index}]"
        if not _ISSUER_NAME_RE.fullmatch(trusted.name):
            raise ConfigError(f"{key}.name: 1-32 of a-z, 0-9, '-' and '_', starting with a letter or digit")
        if trusted.name in names:
            raise ConfigError(f"{key}.name: {trusted.name!r} is configured twice")
        names.add(trusted.name)
        if not trusted.issuer or trusted.issuer != trusted.issuer.strip():
            raise ConfigError(f"{key}.issuer: the exact `iss` value, without surrounding spaces")
        if trusted.issuer in seen:
            raise ConfigError(f"{key}.issuer: {trusted.issuer!r} is configured twice")
        if trusted.issuer == own_issuer:
            raise ConfigError(f"{key}.issuer: the gateway's own tokens.issuer")
        seen.add(trusted.issuer)
        if trusted.jwks_url is None and not fetchable_url(trusted.issuer):
            raise ConfigError(f"{key}.issuer: discovery needs an https URL (or set jwks_url)")
        if trusted.jwks_url is not None and not fetchable_url(trusted.jwks_url):
            raise ConfigError(f"{key}.jwks_url: an https URL (http only to a loopback host)")
        if not trusted.audiences or not all(audience.strip() for audience in trusted.audiences):
            raise ConfigError(f"{key}.audiences: at least one, none empty")
        if not trusted.algorithms:
            raise ConfigError(f"{key}.algorithms: at least one of {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}")
        for algorithm in trusted.algorithms:
            if algorithm not in ASYMMETRIC_ALGORITHMS:
                raise ConfigError(
                    f"{key}.algorithms: {algorithm!r} is refused; use {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}"
                )
        if not all(trusted.subject_claim.split(":")) or (trusted.org_claim is not None and not trusted.org_claim):
            raise ConfigError(f"{key}.subject_claim: a claim name")
        if trusted.link_provider is not None and not 1 <= len(trusted.link_provider) <= 64:
            raise ConfigError(f"{key}.link_provider: a provider name of 1-64 characters")
        if not 0 <= trusted.leeway_seconds <= MAX_ISSUER_LEEWAY:
            raise ConfigError(f"{key}.leeway_seconds: between 0 and {MAX_ISSUER_LEEWAY}")
        if not 1 <= trusted.min_refetch_seconds <= 3600:
            raise ConfigError(f"{key}.min_refetch_seconds: between 1 and 3600")


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the gateway needs to start."""

    database_url: str = DEFAULT_DATABASE_URL
    """SQLAlchemy async URL: `sqlite+aiosqlite:///path` (default) or `postgresql+asyncpg://...`."""
    host: str = DEFAULT_HOST
    """Address `gateway serve` binds."""
    port: int = DEFAULT_PORT
    """Port `gateway serve` binds."""
    model_path: str = str(SHIPPED_MODEL)
    """The Casbin model file (default: the one shipped with the package). A relative path in the config file is
    relative to the file's folder."""
    policy_poll_seconds: float = 1.0
    """How often the gateway checks the database (and watched files) for changes made elsewhere."""
    watch_files: bool = False
    """Also serve the lines of `policy_dir/*.csv` and reload them, and `model_path`, when they change.
    A reload lints first: an edit with an error is refused, logged, and the previous policy keeps serving."""
    policy_dir: str = "policies"
    """The directory of policy CSV files (for `watch_files` and the `gateway policy` commands)."""
    log_level: str = "INFO"
    """Root log level."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or networks (`10.0.0.0/8`) of proxies in front of the gateway. Only from these are
    X-Forwarded-For/-Proto/-Host and Forwarded believed; the client address is the right-most untrusted one."""
    allow_underscore_headers: bool = False
    """Accept request header names containing `_` on proxied routes (refused with 400 by default: servers
    disagree on whether `X_User` means `X-User`). Even when accepted, `x_gateway_*` spellings are stripped."""
    audit_log: str = "stderr"
    """Where the per-request audit lines (JSON) go: `stderr`, `stdout`, a file path (appended) or `off`."""
    workers: int | Literal["auto"] = 1
    """Processes `gateway serve` runs on the same listening sockets (`auto`: one per CPU). Each holds its own
    policy snapshot; without `rate_limits.redis_url`, rate limits and login throttling count per worker."""
    admin_listen: str | None = None
    """`host:port` of a separate management listener: when set, /admin and /metrics are served there only (404 on
    the public port); /healthz and /readyz answer on both."""
    shutdown_grace_seconds: int = 30
    """On SIGTERM, how long requests in flight may take to finish before they are cut."""
    tokens: Tokens = msgspec.field(default_factory=Tokens)
    upstream: Upstream = msgspec.field(default_factory=Upstream)
    passwords: Passwords = msgspec.field(default_factory=Passwords)
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)
    login: Login = msgspec.field(default_factory=Login)
    orgs: Orgs = msgspec.field(default_factory=Orgs)
    mail: Mail = msgspec.field(default_factory=Mail)
    clients: Clients = msgspec.field(default_factory=Clients)
    audit: Audit = msgspec.field(default_factory=Audit)
    tracing: Tracing = msgspec.field(default_factory=Tracing)
    browser: Browser = msgspec.field(default_factory=Browser)
    forward_auth: ForwardAuth = msgspec.field(default_factory=ForwardAuth)
    identity_headers: tuple[IdentityHeader, ...] = DEFAULT_IDENTITY_HEADERS
    """Which of X-Gateway-User, -Email, -Name, -Org, -Roles upstreams get (routes and forward-auth may say
    otherwise). Email and name are percent-encoded UTF-8."""
    identity_providers: tuple[IdentityProvider, ...] = ()
    """Outside providers people sign in with (`[[identity_providers]]`); see `IdentityProvider`."""
    encryption_key: str | None = None
    """A Fernet key (`gateway encryption-key` makes one) sealing TOTP secrets at rest. Keep it out of the
    database and its backups; prefer GATEWAY_ENCRYPTION_KEY. Without it, TOTP secrets are stored as they are."""
    routes: tuple[Route, ...] = ()
    """The route table; see `Route`."""
    trusted_issuers: tuple[TrustedIssuer, ...] = ()
    """Outside identity providers whose access tokens are accepted; see `TrustedIssuer`."""

    def __post_init__(self) -> None:
        _validate(self)


def _validate_browser(browser: Browser) -> None:
    if browser.public_url is not None and not re.fullmatch(r"https?://[^/?#\s]+", browser.public_url):
        raise ConfigError("browser.public_url: an http(s) origin without a path, such as https://auth.example.com")
    name = browser.cookie_name
    if not re.fullmatch(r"[A-Za-z0-9_.!#$%&'*+^`|~-]{1,64}", name):
        raise ConfigError("browser.cookie_name: 1-64 cookie-name characters")
    if name.startswith("__Host-") and (browser.cookie_domain is not None or not browser.cookie_secure):
        raise ConfigError("browser.cookie_name: a __Host- cookie needs cookie_secure and no cookie_domain")
    if name.startswith("__Secure-") and not browser.cookie_secure:
        raise ConfigError("browser.cookie_name: a __Secure- cookie needs cookie_secure")
    if not 60 <= browser.idle_seconds <= browser.absolute_seconds <= 30 * 24 * 3600:
        raise ConfigError("browser: 60 <= idle_seconds <= absolute_seconds <= 30 days")
    for index, origin in enumerate(browser.allowed_origins):
        if not re.fullmatch(r"https?://[^/?#\s]+", origin):
            raise ConfigError(f"browser.allowed_origins[{index}]: an origin such as https://app.example.com")
    for index, url in enumerate(browser.post_logout_urls):
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"browser.post_logout_urls[{index}]: an absolute http(s) URL")


def _validate(settings: Settings) -> None:
    if not settings.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError("database_url: must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    if not 0 < settings.port < 65536:
        raise ConfigError("port: must be between 1 and 65535")
    if not 1 <= settings.tokens.access_ttl_seconds <= 3600:
        raise ConfigError("tokens.access_ttl_seconds: must be between 1 and 3600")
    if settings.tokens.refresh_ttl_seconds < 60:
        raise ConfigError("tokens.refresh_ttl_seconds: must be at least 60")
    if not 1 <= settings.tokens.refresh_idle_seconds <= settings.tokens.refresh_ttl_seconds:
        raise ConfigError("tokens.refresh_idle_seconds: between 1 and tokens.refresh_ttl_seconds")
    for index, network in enumerate(settings.trusted_proxies):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies[{index}]: {network!r} is not an address or network") from exc
    if settings.mail.smtp_tls not in ("starttls", "tls", "none"):
        raise ConfigError("mail.smtp_tls: one of starttls, tls, none")
    if not settings.mail.public_base_url.startswith(("https://", "http://")):
        raise ConfigError("mail.public_base_url: an http(s) origin, such as https://app.example.com")
    if settings.encryption_key is not None:
        from cryptography.fernet import Fernet

        try:
            Fernet(settings.encryption_key.encode())
        except ValueError as exc:
            raise ConfigError("encryption_key: not a Fernet key; make one with `gateway encryption-key`") from exc
    login = settings.login
    if login.free_failures < 1 or login.ip_failures_per_window < 1:
        raise ConfigError("login: free_failures and ip_failures_per_window must be at least 1")
    if not 1 <= login.base_lock_seconds <= login.max_lock_seconds:
        raise ConfigError("login: 1 <= base_lock_seconds <= max_lock_seconds")
    if not 1 <= settings.orgs.per_user <= 10_000:
        raise ConfigError("orgs.per_user: between 1 and 10000")
    if not 0 <= settings.orgs.delete_after_days <= 3650:
        raise ConfigError("orgs.delete_after_days: between 0 and 3650")
    passwords = settings.passwords
    if passwords.max_concurrent is not None and not 1 <= passwords.max_concurrent <= 256:
        raise ConfigError("passwords.max_concurrent: between 1 and 256")
    if passwords.queue is not None and not 0 <= passwords.queue <= 10_000:
        raise ConfigError("passwords.queue: between 0 and 10000")
    if passwords.cpu_budget is not None and not 0.01 <= passwords.cpu_budget <= 256:
        raise ConfigError("passwords.cpu_budget: between 0.01 and 256 (CPUs)")
    if not 0 <= passwords.niceness <= 19:
        raise ConfigError("passwords.niceness: between 0 and 19")
    if settings.policy_poll_seconds <= 0:
        raise ConfigError("policy_poll_seconds: must be positive")
    if isinstance(settings.workers, int) and not 1 <= settings.workers <= 256:
        raise ConfigError('workers: between 1 and 256, or "auto"')
    if settings.admin_listen is not None:
        split_listen(settings.admin_listen)
    if settings.shutdown_grace_seconds < 0:
        raise ConfigError("shutdown_grace_seconds: must not be negative")
    clients = settings.clients
    if clients.header_timeout <= 0 or clients.keep_alive_timeout <= 0:
        raise ConfigError("clients: header_timeout and keep_alive_timeout must be positive")
    if clients.max_connections is not None and clients.max_connections < 1:
        raise ConfigError("clients.max_connections: at least 1")
    _validate_audit(settings.audit)
    _validate_tracing(settings.tracing)
    _validate_browser(settings.browser)
    _validate_providers(settings.identity_providers)
    _validate_issuers(settings.trusted_issuers, settings.tokens.issuer)
    seen: set[tuple[str, str]] = set()
    for index, route in enumerate(settings.routes):
        key = f"routes[{index}]"
        if not _PREFIX_RE.match(route.prefix) or (route.prefix != "/" and route.prefix.endswith("/")):
            raise ConfigError(f"{key}.prefix: must start with '/', have no empty segment and no trailing '/'")
        for host in _route_hosts(key, route) or ("",):
            if (host, route.prefix) in seen:
                where = f" for host {host!r}" if host else ""
                raise ConfigError(f"{key}.prefix: {route.prefix!r} is configured twice{where}")
            seen.add((host, route.prefix))
        _validate_route_org(key, route)
        # A catch-all `/` never shadows the gateway's own paths (they are matched first); anything else
        # that overlaps them is refused so a route can never capture /auth or /admin traffic.
        clash = [r for r in RESERVED_PREFIXES if route.prefix != "/" and _overlaps(route.prefix, r)]
        if clash:
            raise ConfigError(f"{key}.prefix: {route.prefix!r} overlaps the gateway's own {clash[0]}")
        parts = urlsplit(route.upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{key}.upstream: must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ConfigError(f"{key}.upstream: must not carry a query or fragment")
        if route.cors is not None and route.cors.allow_credentials and "*" in route.cors.allow_origins:
            raise ConfigError(f"{key}.cors.allow_origins: '*' cannot be combined with allow_credentials")
        if route.org_from != "header" and route.public:
            raise ConfigError(f"{key}.org_from: a public route has no organization")
        _validate_auth(f"{key}.auth", route.auth, settings.browser)
    _validate_auth("forward_auth.auth", settings.forward_auth.auth, settings.browser)
    if settings.forward_auth.identity_token and not settings.forward_auth.audience:
        raise ConfigError("forward_auth.audience: needed with identity_token (the upstream's origin)")


def _validate_auth(key: str, auth: tuple[str, ...], browser: Browser) -> None:
    if not auth:
        raise ConfigError(f"{key}: at least one of bearer, api_key, cookie")
    if "cookie" in auth and not browser.enabled:
        raise ConfigError(f"{key}: cookie needs [browser] enabled = true")


def _route_hosts(key: str, route: Route) -> tuple[str, ...]:
    """The route's `hosts` in the compared form; a host listed twice is refused."""
    hosts: list[str] = []
    for index, pattern in enumerate(route.hosts):
        try:
            host = configured_host(pattern)
        except ValueError as exc:
            raise ConfigError(f"{key}.hosts[{index}]: {pattern!r}: {exc}") from exc
        if host in hosts:
            raise ConfigError(f"{key}.hosts[{index}]: {pattern!r} is listed twice")
        hosts.append(host)
    return tuple(hosts)


def _validate_route_org(key: str, route: Route) -> None:
    """Each org option belongs to one `org_from`, which then needs it; `org_host` must fit the route's hosts."""
    needs = {"path": None, "host": "org_host", "default": "org"}
    for option, kind in (("org_path", "path"), ("org_host", "host"), ("org", "default")):
        if getattr(route, option) is not None and route.org_from != kind:
            raise ConfigError(f'{key}.{option}: only with org_from = "{kind}"')
    required = needs.get(route.org_from)
    if required is not None and getattr(route, required) is None:
        raise ConfigError(f'{key}.{required}: org_from = "{route.org_from}" needs it')
    if route.org is not None and not ORG_SLUG_RE.match(route.org):
        raise ConfigError(f"{key}.org: {route.org!r} is not an organization slug")
    if route.org_path is not None:
        try:
            path_template(route.org_path)
        except ValueError as exc:
            raise ConfigError(f"{key}.org_path: {route.org_path!r}: {exc}") from exc
    if route.org_host is not None:
        try:
            template = host_template(route.org_host)
        except ValueError as exc:
            raise ConfigError(f"{key}.org_host: {route.org_host!r}: {exc}") from exc
        for index, host in enumerate(_route_hosts(key, route)):
            fits = ".".join(template) == "{org}." + host[2:] if host.startswith("*.") else label_in(template, host)
            if not fits:
                raise ConfigError(f"{key}.org_host: {route.org_host!r} can never fit hosts[{index}] {host!r}")


def path_template(template: str) -> tuple[str | None, ...]:
    """An `org_path` template as its segments, None in the `{org}` place. Raises ValueError."""
    if not template.startswith("/") or template.endswith("/"):
        raise ValueError("starts with '/' and has no trailing '/', such as /orgs/{org}")
    segments = template[1:].split("/")
    if segments.count("{org}") != 1:
        raise ValueError("needs {org} exactly once, as a whole segment")
    if any(s != "{org}" and not _SEGMENT_RE.fullmatch(s) for s in segments):
        raise ValueError("its other segments are literal: letters, digits, '-', '.', '_', '~'")
    return tuple(None if s == "{org}" else s for s in segments)


def _validate_providers(providers: tuple[IdentityProvider, ...]) -> None:
    names: set[str] = set()
    for index, provider in enumerate(providers):
        key = f"identity_providers[{index}]"
        if not _PROVIDER_NAME_RE.match(provider.name):
            raise ConfigError(f"{key}.name: lower-case letters, digits and inner hyphens, at most 64")
        if provider.name in names:
            raise ConfigError(f"{key}.name: {provider.name!r} is configured twice")
        names.add(provider.name)
        if not provider.client_id:
            raise ConfigError(f"{key}.client_id: required")
        try:
            provider.secret()
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(f"identity_providers.{provider.name}", key, 1)) from None
        if provider.kind == "oidc" and not provider.issuer:
            raise ConfigError(f"{key}.issuer: required for an OpenID Connect provider")
        for name, url in (
            ("issuer", provider.issuer),
            ("authority", provider.authority),
            ("github_url", provider.github_url),
            ("github_api_url", provider.github_api_url),
        ):
            if url is not None and (not fetchable_url(url) or "?" in url):
                raise ConfigError(f"{key}.{name}: an https URL without query (http only to a loopback host)")
        if provider.kind == "entra":
            tenant = provider.tenant or ""
            if not tenant:
                raise ConfigError(f"{key}.tenant: required for entra (a tenant id, or organizations/common)")
            if tenant in ENTRA_MULTI_TENANT and not provider.allowed_tenants:
                raise ConfigError(f"{key}.allowed_tenants: required with a multi-tenant `tenant` ({tenant})")
            if tenant not in ENTRA_MULTI_TENANT and not re.fullmatch(r"[0-9a-fA-F-]{36}", tenant):
                raise ConfigError(f"{key}.tenant: a tenant id (GUID), or organizations, common or consumers")
        elif provider.tenant is not None or provider.allowed_tenants:
            raise ConfigError(f"{key}.tenant: only for kind = entra")
        if provider.hosted_domains and provider.kind != "google":
            raise ConfigError(f"{key}.hosted_domains: only for kind = google")
        if provider.required_orgs and provider.kind != "github":
            raise ConfigError(f"{key}.required_orgs: only for kind = github")
        if not provider.algorithms:
            raise ConfigError(f"{key}.algorithms: at least one")
        for alg in provider.algorithms:
            if alg not in ASYMMETRIC_ALGORITHMS:
                raise ConfigError(
                    f"{key}.algorithms: {alg!r} is not an asymmetric JWS algorithm (none and HS* are refused)"
                )
        for domain in provider.email_domains + provider.hosted_domains:
            if not re.fullmatch(r"[a-z0-9.-]+\.[a-z]{2,}", domain):
                raise ConfigError(f"{key}: {domain!r} is not a lower-case domain name")
        for number, rule in enumerate(provider.memberships):
            where = f"{key}.memberships[{number}]"
            if not rule.claim or not rule.value or not rule.org or not rule.role:
                raise ConfigError(f"{where}: claim, value, org and role are required")
            if provider.kind == "github" and rule.claim not in ("orgs", "teams"):
                raise ConfigError(f"{where}.claim: GitHub rules read `orgs` or `teams`")
            if rule.claim == "teams" and provider.kind == "github" and rule.value.count("/") != 1:
                raise ConfigError(f"{where}.value: a team is `org/team-slug`")


def _validate_audit(audit: Audit) -> None:
    if audit.retention_days is not None and not 1 <= audit.retention_days <= 36_500:
        raise ConfigError("audit.retention_days: between 1 and 36500 (leave it unset to keep every event)")
    if not 0 < audit.webhook_timeout <= MAX_WEBHOOK_TIMEOUT:
        raise ConfigError(f"audit.webhook_timeout: more than 0 and at most {MAX_WEBHOOK_TIMEOUT:g} seconds")
    if not 1 <= audit.checkpoint_seconds <= 86_400:
        raise ConfigError("audit.checkpoint_seconds: between 1 and 86400")
    if audit.otlp_logs_endpoint is not None:
        parts = urlsplit(audit.otlp_logs_endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ConfigError(
                "audit.otlp_logs_endpoint: an http:// or https:// URL, such as http://127.0.0.1:4318/v1/logs"
            )
        if not otel_installed():
            raise ConfigError(f"audit.otlp_logs_endpoint: the OpenTelemetry packages are not installed: {OTEL_EXTRA}")
    if audit.webhook_url is None:
        return
    parts = urlsplit(audit.webhook_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ConfigError("audit.webhook_url: an http:// or https:// URL with a host and no fragment")
    audit.webhook_key()


def _validate_tracing(tracing: Tracing) -> None:
    if not 0.0 <= tracing.sample_ratio <= 1.0:
        raise ConfigError("tracing.sample_ratio: between 0 and 1")
    if tracing.batch_delay_seconds <= 0:
        raise ConfigError("tracing.batch_delay_seconds: must be positive")
    parts = urlsplit(tracing.endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("tracing.endpoint: an http:// or https:// URL, such as " + DEFAULT_TRACES_ENDPOINT)
    if tracing.enabled and not otel_installed():
        raise ConfigError(f"tracing.enabled: the OpenTelemetry SDK is not installed: {OTEL_EXTRA}")


def otel_installed() -> bool:
    """Whether the `otel` extra's SDK and exporter are installed: found, not imported (that takes about 50 ms)."""
    try:
        needed = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")
        return all(importlib.util.find_spec(name) is not None for name in needed)
    except (ImportError, ValueError):  # a parent package missing, or blocked in sys.modules
        return False


def split_listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:9901` or `[::1]:9901` -> (host, port); ConfigError naming `admin_listen` otherwise."""
    found = _LISTEN_RE.match(value)
    if found is None or not 0 < int(found.group(2)) < 65536:
        raise ConfigError(f"admin_listen: {value!r} is not host:port (e.g. 127.0.0.1:9901)")
    return found.group(1).strip("[]"), int(found.group(2))


def _overlaps(prefix: str, reserved: str) -> bool:
    return prefix == reserved or prefix.startswith(reserved + "/") or reserved.startswith(prefix + "/")


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`GATEWAY_A__B=v` becomes `{"a": {"b": "v"}}`; `GATEWAY_CONFIG` names the file, not a setting."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path in (["routes"], ["trusted_issuers"]):
            raise ConfigError(f"{name}: {path[0]} are configured in the TOML file only")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _convert(raw: Mapping[str, Any], origin: str, environ: Mapping[str, Any] | None = None) -> Settings:
    """Decode and validate; an error names the key, or the environment variable when the value came from one."""
    try:
        # strict=False lets environment strings become ints, floats and booleans.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = re.search(r"`\$\.([A-Za-z0-9_.]+)`", message)
        key = found.group(1) if found else ""
        raise ConfigError(f"{_origin_of(key, origin, environ)}: {_name_key(message)}") from exc
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        raise ConfigError(f"{_origin_of(key, origin, environ)}: {exc}") from exc


def _origin_of(key: str, origin: str, environ: Mapping[str, Any] | None) -> str:
    """`GATEWAY_TOKENS__ACCESS_TTL_SECONDS` when the environment set `tokens.access_ttl_seconds`, else `origin`."""
    node: Any = environ or {}
    parts = key.split(".") if key else []
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return origin
        node = node[part]
    if not parts or isinstance(node, Mapping):
        return origin
    return ENV_PREFIX + "__".join(parts).upper()


def _name_key(message: str) -> str:
    # msgspec says "... - at `$.routes[0].prefix`"; turn the JSON path into the TOML key.
    return re.sub(r"`\$\.?([^`]*)`", lambda m: f"`{m.group(1) or '(root)'}`", message)


def _read_file(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc


def _relative_to(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Paths written in the config file mean the same wherever the gateway is started from: a relative
    `model_path`, `policy_dir`, `audit_log` file, `audit.webhook_secret_file` or SQLite file is taken relative to
    the file's folder."""
    resolved = dict(raw)
    for key in _PATH_KEYS:
        value = resolved.get(key)
        if isinstance(value, str) and value not in ("stderr", "stdout", "off") and not Path(value).is_absolute():
            resolved[key] = str(folder / value)
    audit = resolved.get("audit")
    secret_file = audit.get("webhook_secret_file") if isinstance(audit, dict) else None
    if isinstance(audit, dict) and isinstance(secret_file, str) and not Path(secret_file).is_absolute():
        resolved["audit"] = {**audit, "webhook_secret_file": str(folder / secret_file)}
    providers = resolved.get("identity_providers")
    if isinstance(providers, list):
        resolved["identity_providers"] = [
            {**item, "client_secret_file": str(folder / item["client_secret_file"])}
            if isinstance(item, dict)
            and isinstance(item.get("client_secret_file"), str)
            and not Path(item["client_secret_file"]).is_absolute()
            else item
            for item in providers
        ]
    url = resolved.get("database_url")
    if isinstance(url, str) and url.startswith("sqlite+aiosqlite:///"):
        file = url[len("sqlite+aiosqlite:///") :]
        if file and not file.startswith(":memory:") and not Path(file).is_absolute():
            resolved["database_url"] = "sqlite+aiosqlite:///" + str(folder / file)
    return resolved


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the config file (if any) and the environment into `Settings`; raise `ConfigError` naming the key
    (or the environment variable)."""
    env = os.environ if environ is None else environ
    explicit = config_path is not None or "GATEWAY_CONFIG" in env
    path = Path(config_path if config_path is not None else env.get("GATEWAY_CONFIG", "gateway.toml"))
    raw: dict[str, Any] = {}
    if path.exists():
        raw = _relative_to(_read_file(path), path.resolve().parent)
    elif explicit:
        raise ConfigError(f"{path}: config file not found")
    overrides = _env_overrides(env)
    return _convert(_merge(raw, overrides), str(path) if path.exists() else "environment", overrides)


def settings_from_mapping(raw: Mapping[str, Any]) -> Settings:
    """Build `Settings` from a plain mapping (tests and the demo use this)."""
    return _convert(raw, "settings")

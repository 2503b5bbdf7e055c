"""Request and response bodies of the /auth API."""

from __future__ import annotations

import datetime as dt

import msgspec


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str = msgspec.field()
    password: str = msgspec.field()


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: str


class TokenResponse(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type name, not a secret


class MembershipView(msgspec.Struct):
    org: str
    name: str
    role: str


class MeResponse(msgspec.Struct):
    id: str
    email: str | None
    name: str
    email_verified: bool
    mfa: bool
    created_at: dt.datetime
    memberships: list[MembershipView]
    global_roles: list[str]


class SessionView(msgspec.Struct):
    id: str
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    ip: str
    user_agent: str
    current: bool


class LogoutResult(msgspec.Struct):
    sessions_ended: int


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str


class InvitationAnswer(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    password: str | None = None
    """Only without an account at the invited address (and not signed in): the new account's password."""
    name: str = ""


class InvitationAccepted(msgspec.Struct):
    org: str
    user_id: str
    role: str


class ForgotPasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str


class ResetPasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    password: str


class ChangePasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    current_password: str
    new_password: str


class ProfileUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Profile fields only: anything else (email, roles, disabled...) is refused as an unknown field."""

    name: str


class EmailChangeRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str


class ReauthRequest(msgspec.Struct, forbid_unknown_fields=True):
    password: str


class Accepted(msgspec.Struct):
    status: str


class AccessTokenResponse(msgspec.Struct):
    access_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type name, not a secret


class PasswordChanged(msgspec.Struct):
    other_sessions_ended: int


class MfaChallengeResponse(msgspec.Struct):
    mfa_token: str
    """Single purpose: only POST /auth/login/mfa accepts it (never as a Bearer token)."""
    expires_in: int
    mfa_required: bool = True


class MfaLoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    mfa_token: str
    code: str
    """A 6-digit TOTP code, or a backup code (`xxxxx-xxxxx`)."""


class TotpEnrolment(msgspec.Struct):
    secret: str
    otpauth_uri: str


class CodeRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: str


class BackupCodes(msgspec.Struct):
    backup_codes: list[str]
    """Shown once; each works once. Store them somewhere safe."""


class MfaRemoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    password: str
    code: str
    """A current TOTP code or a backup code."""


class BootstrapRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    email: str
    password: str


class BootstrapResult(msgspec.Struct):
    id: str
    email: str


class ProviderView(msgspec.Struct):
    """A configured outside identity provider."""

    name: str
    display_name: str
    kind: str
    """`oidc`, `google`, `entra` or `github`."""
    start_url: str
    """Send the browser here (GET) to sign in with this provider."""


class AuthorizationUrl(msgspec.Struct):
    authorization_url: str
    """Send the browser here; the provider sends it back to this gateway's callback, which links the identity."""


class LinkedIdentityResult(msgspec.Struct):
    linked: bool
    """True: the identity was attached now; false: it was linked to this account already."""
    provider: str


class IdentityView(msgspec.Struct):
    """An identity at an outside provider that signs in to this account."""

    id: str
    provider: str
    email: str | None
    """The address the provider reported at the last sign-in (verified or not: never used to find the account)."""
    created_at: dt.datetime
    last_login_at: dt.datetime | None

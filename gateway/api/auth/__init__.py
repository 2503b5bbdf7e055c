"""/auth, by concern: signing in and tokens, second factors, the caller's sessions, and the account's
lifecycle."""

from __future__ import annotations

from gateway.api.auth.account import AccountController
from gateway.api.auth.invitations import InvitationsController
from gateway.api.auth.login import LoginController
from gateway.api.auth.mfa import MfaController
from gateway.api.auth.providers import ProvidersController
from gateway.api.auth.sessions import SessionsController

CONTROLLERS = (
    LoginController,
    MfaController,
    SessionsController,
    AccountController,
    InvitationsController,
    ProvidersController,
)

__all__ = ["CONTROLLERS"]

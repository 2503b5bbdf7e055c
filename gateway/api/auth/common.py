"""What the /auth controllers share: no-store answers, the principal dependency, the signed-in human."""

from __future__ import annotations

from litestar import Response
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.deps import provide_principal
from gateway.api.schemas import Accepted, TokenResponse
from gateway.db.models import Session, User
from gateway.errors import InvalidToken
from gateway.identity import mail
from gateway.identity.sessions import TokenPair
from gateway.identity.tokens import Principal

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
PRINCIPAL = {"principal": Provide(provide_principal)}
ACCEPTED = Accepted(status="accepted: if the address can receive it, an email is on its way")


def token_response(pair: TokenPair) -> Response[TokenResponse]:
    body = TokenResponse(access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in)
    return Response(body, status_code=200, headers=NO_STORE)


async def human(db: AsyncSession, principal: Principal) -> User:
    """The signed-in user, who must be an enabled human (not a service account)."""
    user = await db.get(User, principal.user_id)
    if user is None or user.disabled or user.kind != "human":
        raise InvalidToken("token rejected")
    return user


async def notify(db: AsyncSession, session_id: str | None, subject: str, text: str) -> None:
    """Tell the user, out of band, that their sign-in factors changed or were used."""
    row = await db.get(Session, session_id) if session_id else None
    user = await db.get(User, row.user_id) if row else None
    if user is not None and user.email:
        mail.enqueue(db, to=user.email, subject=subject, body=f"{text} If this was not you, reset your password.\n")

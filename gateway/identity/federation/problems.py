"""The problems a sign-in through an outside provider ends with (besides linking's, in linking.py)."""

from __future__ import annotations

from gateway.errors import BadGateway, Forbidden, GatewayTimeout


class ProviderRefused(Forbidden):
    """The provider, or this provider's rules, refused the person."""

    slug = "provider-refused"
    title = "Sign-in refused"


class IdTokenRejected(Forbidden):
    """The ID token failed a check of OIDC Core 3.1.3.7 (signature, iss, aud, azp, exp, iat, nonce, alg)."""

    slug = "id-token-rejected"
    title = "ID token rejected"


class ProviderUnavailable(BadGateway):
    """The provider could not be reached or answered with an error of its own: nothing was created."""

    slug = "provider-unavailable"
    title = "Identity provider unavailable"


class ProviderTimeout(GatewayTimeout):
    slug = "provider-timeout"
    title = "Identity provider did not answer in time"

"""Outside identity providers (OpenID Connect, Google, Microsoft Entra, GitHub): the configured providers of this
process (`Federation`), what a provider does (`Provider`), the sign-in state (state.py), the protocols (oidc.py,
github.py) and account linking (linking.py). The sign-in itself, start to tokens, is gateway.manage.signin.

Authlib and httpx are imported only when a provider is first used (a gateway without providers never loads them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import aiohttp

from gateway.errors import NotFound
from gateway.identity.federation.person import Person
from gateway.settings import IdentityProvider, Settings

HTTP_TIMEOUT = 10.0
"""Seconds any one call to a provider may take (connect, send, answer)."""


class Provider(Protocol):
    config: IdentityProvider

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str: ...

    async def redeem(self, params: Mapping[str, str], *, nonce: str, code_verifier: str) -> Person: ...

    async def close(self) -> None: ...


class Federation:
    """The configured providers of this process, built on first use (each keeps its discovery document and keys)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._providers: dict[str, Provider] = {}
        self._http: aiohttp.ClientSession | None = None

    @property
    def configured(self) -> tuple[IdentityProvider, ...]:
        return self.settings.identity_providers

    @property
    def names(self) -> frozenset[str]:
        return frozenset(provider.name for provider in self.configured)

    def get(self, name: str) -> Provider:
        """The provider `name`; 404 when none is configured by that name."""
        found = self._providers.get(name)
        if found is not None:
            return found
        config = next((provider for provider in self.configured if provider.name == name), None)
        if config is None:
            raise NotFound("provider: no such identity provider")
        from gateway.identity.federation.common import redirect_uri
        from gateway.identity.federation.github import GitHubProvider
        from gateway.identity.federation.oidc import OidcProvider

        redirect = redirect_uri(self.settings, config)
        made: Provider
        if config.kind == "github":
            made = GitHubProvider(config, config.secret(), redirect)
        else:
            if self._http is None:
                self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
            made = OidcProvider(config, config.secret(), redirect, self._http)
        self._providers[name] = made
        return made

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
        self._providers = {}
        if self._http is not None:
            await self._http.close()
            self._http = None


__all__ = ["HTTP_TIMEOUT", "Federation", "Person", "Provider"]

"""GitHub sign-in: OAuth 2.0 (GitHub has no ID token), the person read from GitHub's REST API (REQ-B18).

The person is GitHub's numeric user id (`login` can be renamed and is never the key); their email is the entry of
`/user/emails` that is both `primary` and `verified`, or none. Organisation and team rules (`required_orgs`,
membership rules on `orgs` or `teams`) read `/user/orgs` and `/user/teams` (scope `read:org`); a failed lookup
refuses the sign-in rather than guessing (fail closed). Only the first 100 organisations and teams are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authlib.integrations.httpx_client import AsyncOAuth2Client

from gateway.identity.federation.common import (
    ProviderRefused,
    ProviderUnavailable,
    email_domain_ok,
    oauth_client,
    provider_call,
    usable_email,
)
from gateway.identity.federation.person import Person
from gateway.settings import IdentityProvider

API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class GitHubProvider:
    """One configured GitHub (or GitHub Enterprise Server) OAuth app."""

    def __init__(self, provider: IdentityProvider, secret: str, redirect_uri: str):
        self.config = provider
        self._secret = secret
        self.redirect_uri = redirect_uri

    @property
    def reads_orgs(self) -> bool:
        return bool(self.config.required_orgs) or any(rule.claim == "orgs" for rule in self.config.memberships)

    @property
    def reads_teams(self) -> bool:
        return any(rule.claim == "teams" for rule in self.config.memberships)

    @property
    def scopes(self) -> tuple[str, ...]:
        if self.config.scopes:
            return self.config.scopes
        return ("read:user", "user:email", *(("read:org",) if self.reads_orgs or self.reads_teams else ()))

    def _client(self) -> AsyncOAuth2Client:
        return oauth_client(self.config, self._secret, self.redirect_uri, self.scopes, auth_method="client_secret_post")

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        del nonce  # no ID token: the state and PKCE bind the answer
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                self.config.github_url.rstrip("/") + "/login/oauth/authorize",
                state=state,
                code_verifier=code_verifier,
                allow_signup="false",
            )
        return str(url)

    async def redeem(self, params: Mapping[str, str], *, nonce: str, code_verifier: str) -> Person:
        del nonce
        code = params.get("code")
        if not code:
            raise ProviderRefused("GitHub sent no authorization code")
        name = self.config.name
        async with self._client() as client:
            async with provider_call(f"{name}: redeeming the code"):
                token = await client.fetch_token(
                    self.config.github_url.rstrip("/") + "/login/oauth/access_token",
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                    redirect_uri=self.redirect_uri,
                    headers={"Accept": "application/json"},
                )
            if not isinstance(token, Mapping) or not token.get("access_token"):
                raise ProviderUnavailable(f"{name}: GitHub answered without an access token")
            user = await self._get(client, "/user")
            emails = await self._get(client, "/user/emails")
            orgs = await self._orgs(client) if self.reads_orgs else []
            teams = await self._teams(client) if self.reads_teams else []
        if not isinstance(user, Mapping) or not isinstance(user.get("id"), int) or isinstance(user.get("id"), bool):
            raise ProviderUnavailable(f"{name}: GitHub's /user has no numeric id")
        email = _primary_verified(emails)
        if self.config.required_orgs and not set(orgs) & {org.lower() for org in self.config.required_orgs}:
            raise ProviderRefused("this GitHub account is not a member of an allowed organisation")
        if self.config.email_domains and (email is None or not email_domain_ok(email, self.config.email_domains)):
            raise ProviderRefused("a verified email address at an allowed domain is required")
        login = user.get("login")
        display = user.get("name") or login
        return Person(
            provider=name,
            subject=str(user["id"]),
            email=email,
            name=display[:200] if isinstance(display, str) else "",
            reported_email=email,
            claims={"orgs": orgs, "teams": teams, "login": login if isinstance(login, str) else ""},
        )

    async def _get(self, client: AsyncOAuth2Client, path: str) -> Any:
        """One API call; any failure (network, status, body) refuses the sign-in (502)."""
        async with provider_call(f"{self.config.name}: GitHub API {path}"):
            response = await client.get(self.config.github_api_url.rstrip("/") + path, headers=API_HEADERS)
            if response.status_code != 200:
                raise ProviderUnavailable(f"{self.config.name}: GitHub API {path} answered {response.status_code}")
            return response.json()

    async def _orgs(self, client: AsyncOAuth2Client) -> list[str]:
        found = await self._get(client, "/user/orgs?per_page=100")
        if not isinstance(found, list):
            raise ProviderUnavailable(f"{self.config.name}: GitHub API /user/orgs sent no list")
        return [
            item["login"].lower() for item in found if isinstance(item, dict) and isinstance(item.get("login"), str)
        ]

    async def _teams(self, client: AsyncOAuth2Client) -> list[str]:
        found = await self._get(client, "/user/teams?per_page=100")
        if not isinstance(found, list):
            raise ProviderUnavailable(f"{self.config.name}: GitHub API /user/teams sent no list")
        teams = []
        for item in found:
            org = item.get("organization") if isinstance(item, dict) else None
            if isinstance(org, dict) and isinstance(org.get("login"), str) and isinstance(item.get("slug"), str):
                teams.append(f"{org['login']}/{item['slug']}".lower())
        return teams

    async def close(self) -> None:
        return None


def _primary_verified(emails: Any) -> str | None:
    """The address GitHub marks both primary and verified (REQ-B18), lower-cased, or None."""
    if not isinstance(emails, list):
        return None
    for entry in emails:
        if isinstance(entry, dict) and entry.get("primary") is True and entry.get("verified") is True:
            return usable_email(entry.get("email"))
    return None

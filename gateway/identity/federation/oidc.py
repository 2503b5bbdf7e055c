"""OpenID Connect relying party: any provider by its issuer, with the Google and Microsoft Entra presets.

The authorization request carries PKCE S256 and a nonce (REQ-B13). At the callback, the RFC 9207 `iss` is compared
before the code is redeemed (REQ-B14), then the ID token is validated as OIDC Core 3.1.3.7 requires (REQ-B15):
signature by a key from the provider's JWKS (jwks.py: cached, refetched at most once per 30 s on an unknown kid),
the algorithm in the configured asymmetric allow-list (never `none` nor HS*), `iss` exactly, `client_id` in
`aud` and no audience beyond `extra_audiences`, `azp` if present equal to `client_id`, `exp`, `iat` and the nonce,
with 60 s of leeway.

Presets: Google accepts both of its issuer forms, checks `hd` against `hosted_domains` and takes `email` only
when `email_verified` (REQ-B17). Entra keys people on `tid:oid`, requires `iss` to equal the issuer template
with the token's own `tid` and that tenant to be allowed, and never trusts `email` unless the token marks its
domain verified (`xms_edov`) (REQ-B16, nOAuth).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt

from gateway.identity import jwks
from gateway.identity.federation.common import (
    MAX_SUBJECT,
    IdTokenRejected,
    ProviderRefused,
    ProviderUnavailable,
    email_domain_ok,
    oauth_client,
    provider_call,
    usable_email,
)
from gateway.identity.federation.person import Person
from gateway.settings import ENTRA_MULTI_TENANT, GOOGLE_ISSUER, IdentityProvider

LEEWAY_SECONDS = 60
DEFAULT_SCOPES = ("openid", "email", "profile")
_TENANT_PLACEHOLDER = "{tenantid}"


class OidcProvider:
    """One configured OpenID Connect provider: its metadata and keys (fetched on first use, then kept), the
    authorization URL, and the callback's checks."""

    def __init__(self, provider: IdentityProvider, secret: str, redirect_uri: str, http: aiohttp.ClientSession):
        self.config = provider
        self._secret = secret
        self.redirect_uri = redirect_uri
        self._http = http
        self._metadata: jwks.ProviderMetadata | None = None
        self._keys: jwks.RemoteKeys | None = None
        self._lock = asyncio.Lock()

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.config.scopes or DEFAULT_SCOPES

    @property
    def issuer(self) -> str:
        """The issuer whose discovery document is read (Entra: the tenant's, possibly a multi-tenant template)."""
        config = self.config
        if config.kind == "entra":
            return f"{config.authority.rstrip('/')}/{config.tenant}/v2.0"
        if config.kind == "google":
            return config.issuer or GOOGLE_ISSUER
        assert config.issuer is not None
        return config.issuer

    @property
    def multi_tenant(self) -> bool:
        return self.config.kind == "entra" and self.config.tenant in ENTRA_MULTI_TENANT

    async def metadata(self) -> jwks.ProviderMetadata:
        """The discovery document (read once, kept while the process runs); ProviderUnavailable while it
        cannot be read."""
        if self._metadata is not None:
            return self._metadata
        async with self._lock:
            if self._metadata is None:
                try:
                    found = await (
                        self._entra_template() if self.multi_tenant else jwks.discover(self.issuer, self._http)
                    )
                except jwks.RemoteError as exc:
                    raise ProviderUnavailable(f"{self.config.name}: discovery failed; try again later") from exc
                if found.authorization_endpoint is None or found.token_endpoint is None:
                    raise ProviderUnavailable(f"{self.config.name}: the discovery document lacks an endpoint")
                self._keys = jwks.RemoteKeys(
                    issuer=found.issuer, http=self._http, algorithms=self.config.algorithms, jwks_url=found.jwks_uri
                )
                self._metadata = found
        return self._metadata

    async def _entra_template(self) -> jwks.ProviderMetadata:
        """A multi-tenant Entra authority's document names the issuer template (`.../{tenantid}/v2.0`), not the
        URL it is read from: require exactly that template."""
        document = await jwks.fetch_json(self._http, jwks.discovery_url(self.issuer))
        template = f"{self.config.authority.rstrip('/')}/{_TENANT_PLACEHOLDER}/v2.0"
        if not isinstance(document, dict) or document.get("issuer") != template:
            raise jwks.RemoteError("discovery: the document's issuer is not the tenant template")
        endpoints = {name: document.get(name) for name in ("jwks_uri", "authorization_endpoint", "token_endpoint")}
        if not all(isinstance(url, str) and jwks.is_allowed_url(url) for url in endpoints.values()):
            raise jwks.RemoteError("discovery: an endpoint is missing or not an allowed URL")
        return jwks.ProviderMetadata(
            issuer=template,
            jwks_uri=str(endpoints["jwks_uri"]),
            authorization_endpoint=str(endpoints["authorization_endpoint"]),
            token_endpoint=str(endpoints["token_endpoint"]),
            authorization_response_iss_parameter_supported=document.get(
                "authorization_response_iss_parameter_supported"
            )
            is True,
        )

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        metadata = await self.metadata()
        assert metadata.authorization_endpoint is not None
        async with oauth_client(
            self.config, self._secret, self.redirect_uri, self.scopes, auth_method="client_secret_basic"
        ) as client:
            url, _ = client.create_authorization_url(
                metadata.authorization_endpoint, state=state, code_verifier=code_verifier, nonce=nonce
            )
        return str(url)

    def check_response_issuer(self, metadata: jwks.ProviderMetadata, iss: str | None) -> None:
        """RFC 9207 §2.4, before the code is redeemed: an `iss` parameter must equal the issuer exactly; a missing
        one is refused when the provider says it sends one."""
        if iss is None:
            if metadata.authorization_response_iss_parameter_supported:
                raise ProviderRefused("the authorization response lacks the issuer (RFC 9207)")
            return
        if self.multi_tenant:
            tenant = iss.removeprefix(f"{self.config.authority.rstrip('/')}/").removesuffix("/v2.0")
            if self._issuer_for(tenant) != iss or tenant not in self.config.allowed_tenants:
                raise ProviderRefused("the authorization response names another issuer (RFC 9207)")
            return
        if iss not in self._accepted_issuers(metadata):
            raise ProviderRefused("the authorization response names another issuer (RFC 9207)")

    def _accepted_issuers(self, metadata: jwks.ProviderMetadata) -> tuple[str, ...]:
        if self.config.kind == "google" and metadata.issuer == GOOGLE_ISSUER:
            return (GOOGLE_ISSUER, GOOGLE_ISSUER.removeprefix("https://"))
        return (metadata.issuer,)

    def _issuer_for(self, tenant: str) -> str:
        return f"{self.config.authority.rstrip('/')}/{tenant}/v2.0"

    async def redeem(self, params: Mapping[str, str], *, nonce: str, code_verifier: str) -> Person:
        """The callback after the state was claimed: check `iss`, redeem the code (PKCE), validate the ID token,
        and say who signed in."""
        metadata = await self.metadata()
        self.check_response_issuer(metadata, params.get("iss"))
        code = params.get("code")
        if not code:
            raise ProviderRefused("the provider sent no authorization code")
        assert metadata.token_endpoint is not None
        async with (
            provider_call(f"{self.config.name}: redeeming the code"),
            oauth_client(
                self.config, self._secret, self.redirect_uri, self.scopes, auth_method="client_secret_basic"
            ) as client,
        ):
            token = await client.fetch_token(
                metadata.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                redirect_uri=self.redirect_uri,
            )
        id_token = token.get("id_token") if isinstance(token, Mapping) else None
        if not isinstance(id_token, str):
            raise ProviderUnavailable(f"{self.config.name}: the token response carries no ID token")
        claims = await self.validate(id_token, metadata, nonce=nonce)
        return self.person(claims)

    async def validate(self, id_token: str, metadata: jwks.ProviderMetadata, *, nonce: str) -> dict[str, Any]:
        """OIDC Core 3.1.3.7 (see the module docstring); IdTokenRejected naming the failed check."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise IdTokenRejected("the ID token does not parse") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise IdTokenRejected(f"the ID token's algorithm {alg!r} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise IdTokenRejected("the ID token's kid is not a string")
        keys = self._keys
        assert keys is not None
        key = await keys.key_or_refetch(kid)
        if key is None and kid is None and len(keys.kids) == 1:
            key = keys.key(next(iter(keys.kids)))  # OIDC Core 10.1: without a kid, the set's only key
        if key is None and keys.fetched_at is None:
            raise ProviderUnavailable(f"{self.config.name}: the provider's keys cannot be read; try again later")
        if key is None or alg not in key.algorithms:
            raise IdTokenRejected("the ID token is not signed by a key of the provider")
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=[alg],
                audience=self.config.client_id,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"], "verify_iss": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise IdTokenRejected("the ID token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise IdTokenRejected("the ID token is for another client (aud)") from exc
        except jwt.PyJWTError as exc:
            raise IdTokenRejected(f"the ID token is invalid ({type(exc).__name__})") from exc
        self._check_issuer(claims, metadata)
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        allowed = {self.config.client_id, *self.config.extra_audiences}
        if not all(isinstance(item, str) and item in allowed for item in audiences):
            raise IdTokenRejected("the ID token carries an audience that is not trusted (aud)")
        if "azp" in claims and claims["azp"] != self.config.client_id:
            raise IdTokenRejected("the ID token was issued to another party (azp)")
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise IdTokenRejected("the ID token's nonce is not the one sent")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise IdTokenRejected("the ID token has no subject")
        return claims

    def _check_issuer(self, claims: Mapping[str, Any], metadata: jwks.ProviderMetadata) -> None:
        iss = claims["iss"]
        if self.config.kind == "entra":
            tid = claims.get("tid")
            if not isinstance(tid, str) or not tid:
                raise IdTokenRejected("the ID token has no tenant (tid)")
            expected = metadata.issuer.replace(_TENANT_PLACEHOLDER, tid) if self.multi_tenant else metadata.issuer
            if iss != expected:
                raise IdTokenRejected("the ID token is from another issuer (iss)")
            allowed = self.config.allowed_tenants if self.multi_tenant else (self.config.tenant,)
            if tid not in allowed:
                raise ProviderRefused("this Microsoft tenant may not sign in here")
            return
        if iss not in self._accepted_issuers(metadata):
            raise IdTokenRejected("the ID token is from another issuer (iss)")

    def person(self, claims: Mapping[str, Any]) -> Person:
        """Who the validated claims name, and their email only if verified; the preset's and the provider's rules
        (hosted domain, email domains) applied."""
        config = self.config
        reported = usable_email(claims.get(config.email_claim))
        if config.kind == "entra":
            oid = claims.get("oid")
            if not isinstance(oid, str) or not oid:
                raise IdTokenRejected("the ID token has no object id (oid)")
            subject = f"{claims['tid']}:{oid}"
            verified = claims.get("xms_edov") is True
        else:
            subject = str(claims["sub"])
            verified = claims.get(config.email_verified_claim) is True
        if config.kind == "google" and config.hosted_domains and claims.get("hd") not in config.hosted_domains:
            raise ProviderRefused("this Google account is not in an allowed Workspace domain (hd)")
        email = reported if verified else None
        if len(subject) > MAX_SUBJECT:
            raise IdTokenRejected("the ID token's subject is longer than 255 characters")
        if config.email_domains and (email is None or not email_domain_ok(email, config.email_domains)):
            raise ProviderRefused("a verified email address at an allowed domain is required")
        name = claims.get(config.name_claim)
        return Person(
            provider=config.name,
            subject=subject,
            email=email,
            name=name[:200] if isinstance(name, str) else "",
            reported_email=reported,
            claims=dict(claims),
        )

    async def close(self) -> None:
        if self._keys is not None:
            await self._keys.close()

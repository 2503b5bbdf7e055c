"""Outside identity providers for the tests, on ephemeral ports.

- `oidc_provider()`: a real OpenID Connect provider, `oidc-provider-mock` (Authlib's authorization server:
  discovery, a JWK Set of its own RSA key, authorization codes, a token endpoint issuing signed ID tokens), run in a
  thread, behind a small front on its own port that passes every request through and can be told to misbehave:
  forge the ID token (another key, `alg: none`, HS256), advertise RFC 9207 `iss`, or be down (503). The issuer is
  the front's URL; under `/{tenant}/v2.0/` it answers as Microsoft Entra does (the tenant's issuer, or the
  `{tenantid}` template for `organizations`/`common`). Claims a user is given (`set_user`) are written over the
  ID token's own, which is how a wrong `aud`, `iss`, `nonce` or an expired token is signed by the provider's real
  key.
- `github_standin()`: GitHub's endpoints cannot be reached from here, so a small server speaking the shapes of
  GitHub's OAuth app flow (`/login/oauth/authorize`, `/login/oauth/access_token`, PKCE S256 checked) and REST API
  (`/user`, `/user/emails`, `/user/orgs`, `/user/teams`, under `/api/v3` as on GitHub Enterprise Server) stands in.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import aiohttp
import jwt
import oidc_provider_mock
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

_ENTRA_PATH = re.compile(r"^/([A-Za-z0-9-]+)/v2\.0(/.*)$")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class OidcProvider:
    """The running provider (see the module docstring). `url` is its issuer."""

    url: str
    mock: str
    http: aiohttp.ClientSession
    forge: str | None = None
    """None: pass ID tokens on; `other-key`: re-signed with a key not in the JWK Set (same kid); `alg-none`:
    unsigned; `hs256`: HMAC-signed."""
    advertise_iss: bool = False
    """Discovery says `authorization_response_iss_parameter_supported` (RFC 9207)."""
    down: bool = False
    token_calls: int = 0

    async def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        async with self.http.put(f"{self.mock}/users/{quote(sub, safe='')}", json=claims) as response:
            assert response.status == 204, await response.text()

    async def authorize(self, authorization_url: str, sub: str) -> str:
        """Sign in at the provider as `sub` (its form's POST): the redirect back to the gateway."""
        assert authorization_url.startswith(self.url + "/"), authorization_url
        async with self.http.post(authorization_url, data={"sub": sub}, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            return response.headers["Location"]


def _forged(token: str, how: str) -> str:
    kid = jwt.get_unverified_header(token).get("kid")
    kept = {"kid": kid} if kid else {}
    claims = jwt.decode(token, options={"verify_signature": False})
    if how == "other-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(claims, other, algorithm="RS256", headers=kept)
    if how == "hs256":
        return jwt.encode(claims, "a shared secret of thirty-two bytes!", algorithm="HS256")
    if how == "alg-none":
        head = _b64(json.dumps({"alg": "none", **kept}).encode())
        return f"{head}.{_b64(json.dumps(claims).encode())}."
    raise ValueError(how)


async def _front(provider: OidcProvider, request: web.Request) -> web.StreamResponse:
    if provider.down:
        return web.Response(status=503, text="down for maintenance")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    headers["Host"] = urlsplit(provider.url).netloc  # the mock names every URL, the issuer too, after Host
    body = await request.read()
    path, tenant = request.path, None
    entra = _ENTRA_PATH.match(path)
    if entra:  # Microsoft's layout: {authority}/{tenant}/v2.0/...
        tenant, path = entra.group(1), entra.group(2)
    if path == "/oauth2/token":
        provider.token_calls += 1
    target = provider.mock + path + ("?" + request.query_string if request.query_string else "")
    async with provider.http.request(
        request.method, target, headers=headers, data=body, allow_redirects=False
    ) as answer:
        content = await answer.read()
        out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        status = answer.status
    if path == "/.well-known/openid-configuration" and (provider.advertise_iss or tenant):
        document = json.loads(content)
        if provider.advertise_iss:
            document["authorization_response_iss_parameter_supported"] = True
        if tenant:  # Entra names the tenant's issuer, or for a multi-tenant authority its template
            named = "{tenantid}" if tenant in ("common", "organizations") else tenant
            document["issuer"] = f"{provider.url}/{named}/v2.0"
        content = json.dumps(document).encode()
    if path == "/oauth2/token" and provider.forge and status == 200:
        document = json.loads(content)
        document["id_token"] = _forged(document["id_token"], provider.forge)
        content = json.dumps(document).encode()
    return web.Response(status=status, body=content, headers=out)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[tuple[str, web.AppRunner]]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", runner
    finally:
        await runner.cleanup()


@asynccontextmanager
async def oidc_provider() -> AsyncIterator[OidcProvider]:
    """The provider and its front, stopped afterwards."""
    with oidc_provider_mock.run_server_in_thread(require_nonce=True) as server:
        mock = f"http://localhost:{server.server_port}"
        async with aiohttp.ClientSession() as http:
            provider = OidcProvider(url="", mock=mock, http=http)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", functools.partial(_front, provider))
            async with serve(app) as (url, _):
                provider.url = url
                yield provider
                await asyncio.sleep(0)


# -- GitHub ---------------------------------------------------------------------------------------------------


@dataclass
class GitHubUser:
    id: int
    login: str
    name: str = ""
    emails: list[dict[str, Any]] = field(default_factory=list)
    orgs: list[str] = field(default_factory=list)
    teams: list[tuple[str, str]] = field(default_factory=list)
    """(org login, team slug)"""


@dataclass
class GitHubStandIn:
    """GitHub's OAuth and user API shapes (see the module docstring). `api` is the REST API's base URL."""

    url: str
    client_id: str
    client_secret: str
    http: aiohttp.ClientSession
    users: dict[str, GitHubUser] = field(default_factory=dict)
    codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """code -> (login, redirect_uri, code_challenge)"""
    tokens: dict[str, str] = field(default_factory=dict)
    fail_orgs: bool = False
    """/user/orgs and /user/teams answer 502."""

    @property
    def api(self) -> str:
        return self.url + "/api/v3"

    def add(self, user: GitHubUser) -> None:
        self.users[user.login] = user

    async def authorize(self, authorization_url: str, login: str) -> str:
        """`login` approves the app at GitHub: the redirect back to the gateway."""
        assert authorization_url.startswith(self.url + "/login/oauth/authorize?"), authorization_url
        async with self.http.get(authorization_url + "&" + urlencode({"as": login}), allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            return r.headers["Location"]


async def _authorize(hub: GitHubStandIn, request: web.Request) -> web.Response:
    query = request.query
    if query.get("client_id") != hub.client_id or query.get("code_challenge_method") != "S256":
        return web.Response(status=400, text="bad client or no PKCE")
    code = secrets.token_hex(10)
    hub.codes[code] = (query["as"], query["redirect_uri"], query["code_challenge"])
    target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
    raise web.HTTPFound(target)


async def _access_token(hub: GitHubStandIn, request: web.Request) -> web.Response:
    form = await request.post()
    if form.get("client_id") != hub.client_id or form.get("client_secret") != hub.client_secret:
        return web.json_response({"error": "incorrect_client_credentials"})  # GitHub answers errors with 200
    found = hub.codes.pop(str(form.get("code")), None)
    if found is None or found[1] != form.get("redirect_uri"):
        return web.json_response({"error": "bad_verification_code"})
    challenge = _b64(hashlib.sha256(str(form.get("code_verifier")).encode()).digest())
    if challenge != found[2]:
        return web.json_response({"error": "bad_verification_code", "error_description": "PKCE"})
    token = "gho_" + secrets.token_hex(16)
    hub.tokens[token] = found[0]
    return web.json_response({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})


def _caller(hub: GitHubStandIn, request: web.Request) -> GitHubUser:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    login = hub.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
    if login is None:
        raise web.HTTPUnauthorized(text='{"message": "Bad credentials"}', content_type="application/json")
    return hub.users[login]


async def _api(hub: GitHubStandIn, request: web.Request) -> web.Response:
    user = _caller(hub, request)
    path = request.path.removeprefix("/api/v3")
    if path == "/user":
        return web.json_response({"id": user.id, "login": user.login, "name": user.name or None, "email": None})
    if path == "/user/emails":
        return web.json_response(user.emails)
    if path in ("/user/orgs", "/user/teams") and hub.fail_orgs:
        return web.json_response({"message": "Server Error"}, status=502)
    if path == "/user/orgs":
        return web.json_response([{"login": org, "id": index} for index, org in enumerate(user.orgs)])
    if path == "/user/teams":
        teams = [{"slug": slug, "organization": {"login": org}} for org, slug in user.teams]
        return web.json_response(teams)
    return web.json_response({"message": "Not Found"}, status=404)


@asynccontextmanager
async def github_standin(client_id: str, client_secret: str) -> AsyncIterator[GitHubStandIn]:
    async with aiohttp.ClientSession() as http:
        hub = GitHubStandIn(url="", client_id=client_id, client_secret=client_secret, http=http)
        app = web.Application()
        app.router.add_get("/login/oauth/authorize", functools.partial(_authorize, hub))
        app.router.add_post("/login/oauth/access_token", functools.partial(_access_token, hub))
        app.router.add_get("/api/v3/{tail:.*}", functools.partial(_api, hub))
        async with serve(app) as (url, _):
            hub.url = url
            yield hub


def callback_target(location: str) -> str:
    """The path and query of a redirect to the gateway's callback (the public base in the tests is not where the
    test gateway listens)."""
    parts = urlsplit(location)
    assert parts.path.startswith("/auth/providers/"), location
    return parts.path + ("?" + parts.query if parts.query else "")


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}

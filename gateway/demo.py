"""`gateway demo`: a working gateway on SQLite in front of a tiny echo upstream, with users, orgs and curl lines."""

from __future__ import annotations

import json

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Organization, User
from gateway.identity import accounts
from gateway.identity.passwords import PasswordHasher
from gateway.manage import members, orgs
from gateway.manage.common import Actor, find_org
from gateway.policy.store import migrate
from gateway.serve import GatewayConfig, GatewayServer, configure_logging, listen, run_loop
from gateway.settings import Settings, settings_from_mapping

DEMO_USERS = (
    # email, password, (org, role) or None for the superadmin
    ("alice@acme.test", "acme-admin-demo", ("acme", "admin")),
    ("bob@acme.test", "acme-viewer-demo", ("acme", "viewer")),
    ("carol@globex.test", "globex-member-demo", ("globex", "member")),
    ("root@platform.test", "platform-operator-demo", None),
)
DEMO_ORGS = (("acme", "Acme Corp"), ("globex", "Globex"))


async def echo(request: web.Request) -> web.Response:
    """The demo upstream: says what it received, including the identity the gateway vouched for."""
    body = await request.read()
    return web.json_response(
        {
            "upstream": "demo-echo",
            "method": request.method,
            "path": request.raw_path,
            "x-gateway-user": request.headers.get("X-Gateway-User"),
            "x-gateway-org": request.headers.get("X-Gateway-Org"),
            "x-gateway-roles": request.headers.get("X-Gateway-Roles"),
            "body_bytes": len(body),
        }
    )


async def seed(settings: Settings) -> None:
    """Create the demo orgs, users and memberships if absent (idempotent)."""
    engine = create_engine(settings.database_url)
    hasher = PasswordHasher(settings.passwords)
    try:
        async with session_factory(engine)() as session:
            await _seed(session, hasher)
            await session.commit()
    finally:
        await engine.dispose()


async def _seed(session: AsyncSession, hasher: PasswordHasher) -> None:
    actor = Actor(subject="cli:demo")
    for slug, name in DEMO_ORGS:
        if await session.scalar(select(Organization).where(Organization.slug == slug)) is None:
            await orgs.create_org(session, actor, slug=slug, name=name)
    for email, password, membership in DEMO_USERS:
        user = await session.scalar(select(User).where(User.email == email))
        if user is None:
            user = await accounts.create_user(session, hasher, email=email, password=password)
        if membership is None:
            await accounts.grant_superadmin(session, user)
        else:
            org = await find_org(session, membership[0])
            await members.set_role(session, actor, org, user, membership[1])


def _curl_lines(port: int) -> str:
    base = f"http://127.0.0.1:{port}"

    def login(email: str, password: str) -> str:
        payload = json.dumps({"email": email, "password": password})
        return (
            f"curl -s {base}/auth/login -H 'content-type: application/json' -d '{payload}' "
            "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
        )

    return f"""
Demo gateway on {base} (SQLite), upstream echo on /api. Users: alice (admin of acme), bob (viewer of acme),
carol (member of globex), root (superadmin). Try, in another terminal:

  ALICE=$({login("alice@acme.test", "acme-admin-demo")})
  BOB=$({login("bob@acme.test", "acme-viewer-demo")})

  # allowed: alice is admin in acme
  curl -i {base}/api/orders/42 -H "Authorization: Bearer $ALICE" -H 'X-Org: acme'
  # denied (403): bob is only a viewer in acme, viewers may not DELETE
  curl -i -X DELETE {base}/api/orders/42 -H "Authorization: Bearer $BOB" -H 'X-Org: acme'
  # denied (403): alice has no role in globex
  curl -i {base}/api/orders/42 -H "Authorization: Bearer $ALICE" -H 'X-Org: globex'
  # 401: no token
  curl -i {base}/api/orders/42 -H 'X-Org: acme'
"""


def run_demo(*, port: int, upstream_port: int, database: str) -> None:
    settings = settings_from_mapping(
        {
            "database_url": database,
            "port": port,
            "routes": [{"prefix": "/api", "upstream": f"http://127.0.0.1:{upstream_port}"}],
        }
    )
    configure_logging("INFO")
    # Both ports first: a busy one is a one-line error before anything is written.
    listening = listen("127.0.0.1", port, what="the demo gateway (--port)")
    upstream_socket = listen("127.0.0.1", upstream_port, what="the demo upstream (--upstream-port)")
    migrate(settings.database_url)  # the schema and the system roles

    async def main() -> None:
        await seed(settings)
        upstream = web.Application()
        upstream.router.add_route("*", "/{tail:.*}", echo)
        runner = web.AppRunner(upstream, access_log=None)
        await runner.setup()
        await web.SockSite(runner, upstream_socket).start()
        print(_curl_lines(port), flush=True)
        try:
            await GatewayServer(GatewayConfig(settings, management_ports=frozenset())).serve(sockets=[listening])
        finally:
            await runner.cleanup()

    run_loop(main)

"""A real headless Chromium's whole journey through a cookie route: a proxied page sends it to the portal, it signs
in and lands back on the page, opens a WebSocket with the cookie, signs out and is sent to the portal again; then
the same journey behind a real Caddy using the gateway's forward-auth. Screenshots land beside the portal's."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.api.portal.helpers import LOCAL_BROWSER
from tests.api.portal.test_browser import _fill_and_submit, _shot, driver
from tests.conftest import PASSWORD, Upstream, closed_port, gateway_settings, load_system_policy, serving
from tests.proxy.test_forward_auth import CADDY_GLOBAL, _caddy
from tests.waiting import eventually

__all__ = ["driver"]  # the fixture, imported for this module's test

WEBSOCKET_ECHO = """
const done = arguments[arguments.length - 1];
const socket = new WebSocket(arguments[0]);
socket.onopen = () => socket.send("hello");
socket.onmessage = (event) => { done(String(event.data)); socket.close(); };
socket.onerror = () => done("error");
socket.onclose = (event) => { if (!event.wasClean) done("closed " + event.code); };
"""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_real_browser_signs_in_through_a_proxied_page_and_forward_auth(
    db_url: str, upstream: Upstream, tmp_path: Path, driver: Any
) -> None:
    """Chromium asks for a page of a cookie route, is sent to the portal with that page as the return URL, signs
    in and lands back on it (the upstream sees the user, never the gateway's cookies); a WebSocket from the page is
    authenticated by the cookie and echoed; after sign-out the page sends it to the portal again. Behind Caddy's
    forward_auth the same: redirected to sign in by the gateway's answer, back to Caddy's page after sign-in."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    caddy_port = closed_port()
    await load_system_policy(db_url)
    settings = gateway_settings(
        db_url,
        upstream.url,
        audit_log=str(tmp_path / "audit.jsonl"),
        trusted_proxies=["127.0.0.1"],
        browser={**LOCAL_BROWSER, "public_url": base, "allowed_hosts": [f"127.0.0.1:{caddy_port}"]},
        forward_auth={"auth": ["bearer", "api_key", "cookie"]},
        routes=[{"prefix": "/app", "upstream": upstream.url, "auth": ["cookie", "bearer"], "org_from": "path"}],
    )
    async with serving(settings, upstream, sock=sock) as gateway:
        await gateway.org("acme")
        user_id = await gateway.user("ann@acme.test", org="acme", role="member")
        await asyncio.to_thread(_journey, driver, base, base, user_id, upstream, "proxy")
        caddy = _caddy(tmp_path, caddy_port, upstream.url, base)  # skips or fails (CI) without caddy
        conf = tmp_path / "Caddyfile"
        conf.write_text(
            CADDY_GLOBAL
            + f"http://127.0.0.1:{caddy_port} {{\n\troute {{\n\t\trequest_header -X-Gateway-*\n"
            + f"\t\tforward_auth {base.removeprefix('http://')} {{\n\t\t\turi /authz/forward\n"
            + "\t\t\tcopy_headers X-Gateway-User X-Gateway-Org X-Gateway-Roles\n\t\t}\n"
            + f"\t\treverse_proxy {upstream.url.removeprefix('http://')} {{\n"
            + '\t\t\theader_up Cookie "(^|;\\s*)gateway_session=[^;]*" ""\n\t\t}\n\t}\n}\n'
        )
        process = await asyncio.create_subprocess_exec(
            *caddy, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            front = f"http://127.0.0.1:{caddy_port}"

            async def listening() -> bool:
                try:
                    async with aiohttp.ClientSession() as http, http.get(front + "/"):
                        return True
                except aiohttp.ClientConnectionError:
                    assert process.returncode is None, "caddy exited"
                    return False

            await eventually(listening, within=10, every=0.05, what="caddy never listened")
            await asyncio.to_thread(_journey, driver, front, base, user_id, upstream, "caddy")
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 10)


def _journey(driver: Any, front: str, portal: str, user_id: str, upstream: Upstream, name: str) -> None:
    page = f"{front}/app/acme/reports?tab=1"
    driver.get(page)
    assert driver.current_url.startswith(f"{portal}/portal/sign-in?rd="), driver.current_url
    _shot(driver, f"20-{name}-sent-to-sign-in")
    _fill_and_submit(driver, {"email": "ann@acme.test", "password": PASSWORD}, "sign-in")
    assert driver.current_url == page
    seen = upstream.last
    assert seen.raw_path == "/app/acme/reports?tab=1"
    assert seen.header("X-Gateway-User") == user_id and seen.header("X-Gateway-Org") == "acme"
    assert "gateway_session" not in (seen.header("Cookie") or "")
    if name == "proxy":  # the gateway drops all of its cookies, the portal's form secret too
        assert "gateway_csrf" not in (seen.header("Cookie") or "")
    assert json.loads(driver.find_element("tag name", "body").text)["path"] == "/app/acme/reports?tab=1"
    _shot(driver, f"21-{name}-page")
    if name == "proxy":  # a WebSocket from the page's own origin, authenticated by the cookie alone
        echoed = driver.execute_async_script(WEBSOCKET_ECHO, front.replace("http://", "ws://") + "/app/acme/ws")
        assert echoed == "echo:hello"
        assert upstream.last.method == "WEBSOCKET" and upstream.last.header("X-Gateway-User") == user_id
    driver.get(f"{portal}/portal/sign-out")
    _fill_and_submit(driver, {}, "sign-out")
    assert driver.current_url.startswith(f"{portal}/portal/sign-in")
    assert driver.get_cookie("gateway_session") is None
    driver.get(page)
    assert driver.current_url.startswith(f"{portal}/portal/sign-in?rd="), driver.current_url
    _shot(driver, f"22-{name}-signed-out")

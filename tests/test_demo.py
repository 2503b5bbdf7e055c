"""`gateway demo` from the README works: it seeds, serves, and answers the quick start's requests as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, closed_port
from tests.waiting import eventually_blocking


def _call(url: str, method: str = "GET", body: dict[str, str] | None = None, /, **headers: str) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=data, method=method, headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_demo_runs_as_the_readme_says(tmp_path: Path) -> None:
    """Alice (admin) reads acme, Bob (viewer) cannot delete, another org is 403, no token is 401, and the demo
    superadmin and admin can use the management API."""
    port, upstream = closed_port(), closed_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    demo = subprocess.Popen(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--port",
            str(port),
            "--upstream-port",
            str(upstream),
            "--database",
            f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        ],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return _call(base + "/healthz")[0] == 200
            except OSError:
                assert demo.poll() is None, "the demo exited"
                return False

        eventually_blocking(healthy, within=30, every=0.1, what="the demo never answered /healthz")

        def login(email: str, password: str) -> str:
            status, raw = _call(base + "/auth/login", "POST", {"email": email, "password": password})
            assert status == 200, raw
            token: str = json.loads(raw)["access_token"]
            return token

        alice = login("alice@acme.test", "acme-admin-demo")
        bob = login("bob@acme.test", "acme-viewer-demo")
        root = login("root@platform.test", "platform-operator-demo")
        login("carol@globex.test", "globex-member-demo")
        assert _call(base + "/api/orders/42", Authorization=f"Bearer {alice}", **{"X-Org": "acme"})[0] == 200
        assert _call(base + "/api/orders/42", "DELETE", Authorization=f"Bearer {bob}", **{"X-Org": "acme"})[0] == 403
        assert _call(base + "/api/orders/42", Authorization=f"Bearer {alice}", **{"X-Org": "globex"})[0] == 403
        assert _call(base + "/api/orders/42", **{"X-Org": "acme"})[0] == 401
        assert _call(base + "/admin/orgs/acme/members", Authorization=f"Bearer {alice}")[0] == 200
        created = _call(
            base + "/admin/orgs", "POST", {"slug": "initech", "name": "Initech"}, Authorization=f"Bearer {root}"
        )
        assert created[0] == 201, created
    finally:
        demo.terminate()
        demo.wait(timeout=10)

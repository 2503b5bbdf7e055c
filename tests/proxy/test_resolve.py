"""Resolving the organization (gateway/proxy/resolve.py): from X-Org, a path segment or template, the host or the
route; missing is 400, unknown looks exactly like a denial, nothing may name another org than the one decided.
On the bare data plane: no database."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from tests.conftest import BareGateway, Upstream, bare_serving


async def test_unknown_org_looks_exactly_like_a_denial(bare: BareGateway) -> None:
    """An org that does not exist gets the same status and body shape as one the caller may not use."""
    tokens = bare.tokens
    unknown = await bare.call("GET", "/api/x", token=tokens["owner"], org="no-such-org")
    foreign = await bare.call("GET", "/api/x", token=tokens["owner"], org="globex")
    assert unknown[0] == foreign[0] == 403

    def strip(body: bytes) -> dict[str, object]:
        return {k: v for k, v in json.loads(body).items() if k != "decision_id"}

    assert strip(unknown[2]) == strip(foreign[2])
    bogus = await bare.call("GET", "/api/x", token=tokens["owner"], org="*")
    assert bogus[0] == 403


async def test_missing_org_header_is_a_clear_400(bare: BareGateway) -> None:
    """A header-org route without X-Org says what is missing."""
    tokens = bare.tokens
    status, _, body = await bare.call("GET", "/api/x", token=tokens["owner"])
    assert status == 400
    assert "X-Org" in json.loads(body)["detail"]


async def test_org_from_path_segment(bare: BareGateway) -> None:
    """A route with org_from=path takes the org from the first segment after its prefix."""
    tokens = bare.tokens
    status, _, _ = await bare.call("GET", "/orgs/acme/projects", token=tokens["viewer"])
    assert status == 200
    assert bare.upstream.last.header("X-Gateway-Org") == "acme"
    status, _, _ = await bare.call("GET", "/orgs/globex/projects", token=tokens["viewer"])
    assert status == 403


def org_routes(url: str) -> list[dict[str, object]]:
    """An org from each source: the host, a path template under a prefix, a route's own org, X-Org."""
    return [
        {"prefix": "/", "upstream": url},
        {
            "prefix": "/",
            "upstream": url,
            "hosts": ["*.apps.example.com"],
            "org_from": "host",
            "org_host": "{org}.apps.example.com",
            "identity_token": True,
        },
        {"prefix": "/t", "upstream": url, "org_from": "path", "org_path": "/orgs/{org}"},
        {"prefix": "/", "upstream": url, "hosts": ["acme.example.com"], "org_from": "default", "org": "acme"},
    ]


@pytest.fixture
async def orgs(upstream: Upstream, tmp_path: Path) -> AsyncIterator[BareGateway]:
    """A bare data plane with org_routes."""
    async with bare_serving(upstream, tmp_path, routes=org_routes(upstream.url)) as gateway:
        yield gateway


@pytest.mark.parametrize(
    ("user", "host", "path", "x_org", "status", "org"),
    [
        pytest.param("viewer", "acme.apps.example.com", "/x", None, 200, "acme", id="host"),
        pytest.param("viewer", "ACME.apps.example.com.", "/x", None, 200, "acme", id="host-upper-case-dot"),
        pytest.param("carol", "globex.apps.example.com", "/x", None, 200, "globex", id="host-other-org"),
        pytest.param("viewer", "globex.apps.example.com", "/x", None, 403, None, id="host-not-a-member"),
        pytest.param("viewer", "acme.apps.example.com", "/x", "acme", 200, "acme", id="host-agreeing-x-org"),
        pytest.param("carol", "acme.apps.example.com", "/x", "globex", 403, None, id="host-conflicting-x-org"),
        pytest.param("root", "acme.apps.example.com", "/x", "globex", 403, None, id="conflict-even-superadmin"),
        pytest.param("viewer", "gw.test", "/t/orgs/acme/p", None, 200, "acme", id="path-template"),
        pytest.param("carol", "gw.test", "/t/orgs/acme/p", "globex", 403, None, id="path-conflicting-x-org"),
        pytest.param("viewer", "gw.test", "/t/orgs/globex/p", None, 403, None, id="path-not-a-member"),
        pytest.param("viewer", "gw.test", "/t/teams/acme/p", "acme", 403, None, id="path-not-fitting-template"),
        pytest.param("viewer", "gw.test", "/t/orgs", "acme", 403, None, id="path-too-short"),
        pytest.param("viewer", "acme.example.com", "/x", None, 200, "acme", id="default"),
        pytest.param("carol", "acme.example.com", "/x", None, 403, None, id="default-not-a-member"),
        pytest.param("carol", "acme.example.com", "/x", "globex", 403, None, id="default-conflicting-x-org"),
        pytest.param("viewer", "gw.test", "/x", "acme", 200, "acme", id="header-still"),
        pytest.param("viewer", "gw.test", "/orgs/acme", " acme ", 200, "acme", id="header-x-org-forwarded-as-decided"),
    ],
)
async def test_the_org_comes_from_the_routes_source_and_nothing_may_disagree(
    orgs: BareGateway, user: str, host: str, path: str, x_org: str | None, status: int, org: str | None
) -> None:
    """The org is read from the host, the path template or the route; an X-Org naming another org is refused
    (even for a superadmin, who may act in both); the upstream's X-Gateway-Org, X-Org and identity token all
    carry the org decided on."""
    headers = {"Host": host}
    got, _, _ = await orgs.call("GET", path, token=orgs.tokens[user], org=x_org, headers=headers)
    assert got == status
    if status != 200:
        assert orgs.upstream.seen == []
        return
    seen = orgs.upstream.last
    assert seen.header("X-Gateway-Org") == org
    if x_org is not None:
        assert seen.header("X-Org") == org
    else:
        assert seen.header("X-Org") is None
    token = seen.header("X-Gateway-Identity")
    if token is not None:
        assert jwt.decode(token, options={"verify_signature": False})["org"] == org


@pytest.mark.parametrize(
    ("host", "path"),
    [
        pytest.param("no-such-org.apps.example.com", "/x", id="host-unknown"),
        pytest.param("x_y.apps.example.com", "/x", id="host-not-a-slug"),
        pytest.param("gw.test", "/t/orgs/no-such-org/p", id="path-unknown"),
        pytest.param("gw.test", "/t/orgs/ACME~/p", id="path-not-a-slug"),
    ],
)
async def test_an_unknown_or_malformed_org_from_host_or_path_looks_like_a_denial(
    orgs: BareGateway, host: str, path: str
) -> None:
    """No existence oracle: an org that does not exist or cannot exist gets the body of a denial in an org
    that exists."""
    denied = await orgs.call("GET", "/x", token=orgs.tokens["viewer"], headers={"Host": "globex.apps.example.com"})
    unknown = await orgs.call("GET", path, token=orgs.tokens["viewer"], headers={"Host": host})
    assert unknown[0] == denied[0] == 403

    def strip(body: bytes) -> dict[str, object]:
        return {k: v for k, v in json.loads(body).items() if k != "decision_id"}

    assert strip(unknown[2]) == strip(denied[2])


def _readme_hosts_example() -> tuple[str, list[tuple[str, dict[str, str], int]]]:
    """The README's "Hosts and organizations" TOML and its curl lines: (path, headers, status) each."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Hosts and organizations", 1)[1].split("\n### ", 1)[0]
    toml = re.search(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    shell = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert toml is not None and shell is not None
    calls = []
    lines = shell.group(1).splitlines()
    for line, comment in itertools.pairwise(lines):
        if not line.startswith("curl "):
            continue
        words = shlex.split(line.replace("$ALICE", "admin").replace("$BOB", "viewer"))
        headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
        path = "/" + words[2].split("/", 3)[3]
        status = re.match(r"#\s+(\d{3})", comment)
        assert status is not None, comment
        calls.append((path, headers, int(status.group(1))))
    return toml.group(1), calls


async def test_the_readme_hosts_example_answers_as_documented(upstream: Upstream, tmp_path: Path) -> None:
    """The README's routes by host load as shown, and each curl line there gets the status its comment says
    (alice is acme's admin, bob its viewer)."""
    text, calls = _readme_hosts_example()
    routes = tomllib.loads(text.replace("http://127.0.0.1:9080", upstream.url))["routes"]
    assert len(calls) == 7
    async with bare_serving(upstream, tmp_path, routes=routes) as gateway:
        for path, headers, status in calls:
            user = headers.pop("Authorization").removeprefix("Bearer ")
            got, _, _ = await gateway.call("GET", path, token=gateway.tokens[user], headers=headers)
            assert got == status, (path, headers)
            if status == 200:
                assert upstream.last.header("X-Gateway-Org") == "acme"

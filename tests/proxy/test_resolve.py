"""Resolving the organization (gateway/proxy/resolve.py): from X-Org or a path segment; missing is 400, unknown
looks exactly like a denial. On the bare data plane: no database."""

from __future__ import annotations

import json

from tests.conftest import BareGateway


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

"""CORS on proxied routes (gateway/proxy/cors.py): preflights answered by the gateway, Access-Control-* on
answers and errors, OPTIONS authorized like any method without it. On the bare data plane: no database."""

from __future__ import annotations

from tests.conftest import BareGateway

PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "DELETE",
    "Access-Control-Request-Headers": "Authorization, X-Org",
}


async def test_cors_preflight_is_answered_by_the_gateway(bare: BareGateway) -> None:
    """On a route with cors, an allowed preflight gets 204 without credentials and never reaches upstream."""
    status, headers, _ = await bare.call("OPTIONS", "/cors/items/1", headers=PREFLIGHT)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "DELETE" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "authorization, x-org"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert bare.upstream.seen == []
    for refused in (
        {**PREFLIGHT, "Origin": "https://evil.example"},
        {**PREFLIGHT, "Access-Control-Request-Headers": "X-Secret"},
        {**PREFLIGHT, "Access-Control-Request-Method": "TRACE"},
    ):
        status, headers, _ = await bare.call("OPTIONS", "/cors/items/1", headers=refused)
        assert status == 403
        assert "Access-Control-Allow-Origin" not in headers


async def test_cors_headers_on_actual_responses_and_errors(bare: BareGateway) -> None:
    """Allowed origins get Access-Control-* on proxied answers and on errors; others get none."""
    tokens = bare.tokens
    origin = {"Origin": "https://app.example"}
    status, headers, _ = await bare.call("GET", "/cors/x", token=tokens["viewer"], org="acme", headers=origin)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Expose-Headers"] == "x-request-id"
    status, headers, _ = await bare.call("GET", "/cors/x", headers=origin)
    assert status == 401
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    _, headers, _ = await bare.call(
        "GET", "/cors/x", token=tokens["viewer"], org="acme", headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers


async def test_without_cors_an_options_request_is_authorized_like_any_other(bare: BareGateway) -> None:
    """A route without cors does not answer preflights: no token is 401, and viewers may not OPTIONS."""
    tokens = bare.tokens
    assert (await bare.call("OPTIONS", "/api/x", headers=PREFLIGHT))[0] == 401
    assert (await bare.call("OPTIONS", "/api/x", token=tokens["viewer"], org="acme", headers=PREFLIGHT))[0] == 403

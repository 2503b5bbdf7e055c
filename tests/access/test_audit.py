"""The audit line (gateway/access/audit.py): one per proxied request, with the decision, never a secret. On the
bare data plane: no database."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import BareGateway


async def test_every_request_is_audited_without_secrets(bare: BareGateway) -> None:
    """One audit line per proxied request with the decision; the token never appears in it."""
    tokens = bare.tokens
    await bare.call("GET", "/api/ok", token=tokens["viewer"], org="acme")
    _, _, body = await bare.call("DELETE", "/api/no", token=tokens["viewer"], org="acme")
    await bare.call("GET", "/api/x", token="garbage", org="acme")
    events = bare.audit_events()
    assert [(e["method"], e["granted"], e["status"]) for e in events] == [
        ("GET", True, 200),
        ("DELETE", False, 403),
        ("GET", False, 401),
    ]
    assert events[1]["decision_id"] == json.loads(body)["decision_id"]
    assert events[0]["reason"].startswith("matched p, viewer")
    assert events[0]["org"] == "acme"
    assert events[0]["route"] == "/api"
    assert events[2]["reason"] == "invalid-token"
    raw = Path(bare.runtime.settings.audit_log).read_text()
    assert tokens["viewer"] not in raw
    assert "garbage" not in raw

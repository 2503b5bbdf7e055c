"""schemathesis against the OpenAPI document, through real HTTP: no 5xx anywhere, and every answer (status,
content type, body) as the document describes it; as a superadmin and as an org admin."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import Gateway

# Operations that would end the very session the fuzzer authenticates with, or disable its user.
SELF_ENDING = r"^/auth/(logout|logout-all|change-password|change-email|mfa.*|sessions.*)$|/disable$"


@pytest.mark.parametrize("caller", ["superadmin", "org-admin"])
async def test_the_api_holds_to_its_document_under_fuzzing(gateway: Gateway, caller: str, tmp_path: Path) -> None:
    """schemathesis (bounded examples per operation, deterministic) finds no server error and no answer that
    the document does not describe."""
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.fail("schemathesis is part of the test extra")
    await gateway.org("acme")
    if caller == "superadmin":
        await gateway.user("root@fuzz.test", superadmin=True)
        token = await gateway.login("root@fuzz.test")
    else:
        await gateway.user("admin@fuzz.test", org="acme", role="admin")
        token = await gateway.login("admin@fuzz.test")
    process = await asyncio.create_subprocess_exec(
        str(st),
        "run",
        gateway.url + "/auth/schema/openapi.json",
        "--url",
        gateway.url,
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        "8",
        "--generation-deterministic",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--exclude-path-regex",
        SELF_ENDING,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 600)
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
    status, _, _ = await gateway.call("GET", "/auth/me", token=token)
    assert status == 200, "the fuzzer's session lasted the whole run (its answers were not all 401s)"

"""Hostile JSON bodies on the control plane: never a 500, never a value the database would refuse."""

from __future__ import annotations

import io
import json

import pytest

from gateway.api.bodies import MAX_BODY_BYTES, depth
from tests.conftest import Gateway


def test_depth_ignores_brackets_inside_strings() -> None:
    """Nesting is counted on the structure only."""
    assert depth(b'{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert depth(b'"\\"[["') == 0


@pytest.mark.parametrize("path", ["/auth/login", "/auth/register", "/admin/orgs"])
async def test_deeply_nested_bodies_are_400_everywhere(gateway: Gateway, path: str) -> None:
    """1,000 nested arrays are refused with 400, unauthenticated endpoints included."""
    await gateway.user("root@x.test", superadmin=True)
    token = await gateway.login("root@x.test")
    body = b"[" * 1000 + b"]" * 1000
    status, headers, answer = await gateway.call(
        "POST", path, token=token, data=body, headers={"content-type": "application/json"}
    )
    assert status == 400, answer
    assert headers["content-type"] == "application/problem+json"


async def test_control_characters_in_text_are_422_naming_the_field(gateway: Gateway) -> None:
    """A NUL or another control character in a name, slug or email is refused before the database sees it
    (PostgreSQL would refuse the NUL as a data error), with the field named."""
    await gateway.user("root@x.test", superadmin=True)
    token = await gateway.login("root@x.test")
    for body, field in (
        ({"slug": "acme", "name": "Ac\u0000me"}, "name"),
        ({"slug": "ac\u0007me", "name": "Acme"}, "slug"),
    ):
        status, _, answer = await gateway.call("POST", "/admin/orgs", token=token, json=body)
        assert status == 422, answer
        assert json.loads(answer)["field"] == field
    status, _, answer = await gateway.call("POST", "/auth/login", json={"email": "a\u001fb@x.test", "password": "x"})
    assert (status, json.loads(answer)["field"]) == (422, "email")
    status, _, _ = await gateway.call("POST", "/admin/orgs", token=token, json={"slug": "acme", "name": "Acme"})
    assert status == 201, "a clean body still works"


async def test_a_body_over_the_limit_is_413(gateway: Gateway) -> None:
    """The control plane reads at most MAX_BODY_BYTES of a body."""
    body = b'{"email": "' + b"a" * (MAX_BODY_BYTES + 10) + b'", "password": "x"}'
    status, _, _ = await gateway.call(
        "POST", "/auth/login", data=io.BytesIO(body), headers={"content-type": "application/json"}
    )
    assert status == 413

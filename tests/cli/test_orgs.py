"""`gateway orgs list|archive|restore|transfer`, `members list|role|remove`, `users list` (gateway/cli/orgs.py):
the operator's side of the admin API, against a real database, in columns or as JSON lines."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def _ok(args: list[str], db_url: str, stdin: str = "") -> str:
    done = run_cli(args, db_url, stdin=stdin)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def test_the_operator_lists_changes_and_hands_over_orgs(db_url: str) -> None:
    _ok(["migrate"], db_url)
    for email in ("ann@example.test", "bob@example.test"):
        _ok(["users", "create", "--email", email], db_url, stdin="a long password\n")
    _ok(["orgs", "create", "--slug", "acme", "--name", "Acme"], db_url)
    _ok(["members", "add", "--org", "acme", "--email", "ann@example.test", "--role", "owner"], db_url)
    _ok(["members", "add", "--org", "acme", "--email", "bob@example.test", "--role", "viewer"], db_url)

    listed = [json.loads(line) for line in _ok(["members", "list", "--org", "acme", "--json"], db_url).splitlines()]
    assert sorted((m["email"], m["role"]) for m in listed) == [
        ("ann@example.test", "owner"),
        ("bob@example.test", "viewer"),
    ]
    table = _ok(["members", "list", "--org", "acme", "--search", "BOB"], db_url).splitlines()
    assert table[0].split("\t") == ["user_id", "email", "name", "kind", "role", "created_at"]
    assert [row.split("\t")[1] for row in table[1:]] == ["bob@example.test"]

    _ok(["members", "role", "--org", "acme", "--email", "bob@example.test", "--role", "member"], db_url)
    moved = _ok(
        ["orgs", "transfer", "--slug", "acme", "--to", "bob@example.test", "--previous", "ann@example.test"], db_url
    )
    assert "bob@example.test owns acme" in moved
    roles = {
        m["email"]: m["role"]
        for m in map(json.loads, _ok(["members", "list", "--org", "acme", "--json"], db_url).splitlines())
    }
    assert roles == {"ann@example.test": "admin", "bob@example.test": "owner"}
    _ok(["members", "remove", "--org", "acme", "--email", "ann@example.test"], db_url)
    refused = run_cli(["members", "remove", "--org", "acme", "--email", "bob@example.test"], db_url)
    assert refused.returncode == 1 and "owner" in refused.stderr, "the last owner stays"

    _ok(["orgs", "archive", "--slug", "acme"], db_url)
    orgs = [json.loads(line) for line in _ok(["orgs", "list", "--json"], db_url).splitlines()]
    assert [(o["slug"], o["archived"]) for o in orgs] == [("acme", True)]
    refused = run_cli(["orgs", "delete", "--slug", "acme"], db_url)
    assert refused.returncode == 1 and "archived too recently" in refused.stderr
    _ok(["orgs", "restore", "--slug", "acme"], db_url)
    users = [json.loads(line) for line in _ok(["users", "list", "--json"], db_url).splitlines()]
    assert sorted(u["email"] for u in users) == ["ann@example.test", "bob@example.test"]
    assert all(u["disabled"] is False for u in users)

"""`gateway invitations|roles|service-accounts` and `gateway policy versions|version|rollback`
(gateway/cli/operating.py), against a real database: the same services as the admin API, audited as cli:."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import InProcessCli


def _ok(cli: InProcessCli, args: list[str], db_url: str) -> str:
    done = cli(args, db_url)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def _json(cli: InProcessCli, args: list[str], db_url: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in _ok(cli, [*args, "--json"], db_url).splitlines()]


def test_invitations_from_the_shell(db_url: str, cli: InProcessCli) -> None:
    _ok(cli, ["migrate"], db_url)
    _ok(cli, ["orgs", "create", "--slug", "acme", "--name", "Acme"], db_url)
    made = _ok(
        cli, ["invitations", "create", "--org", "acme", "--email", "Ann@Example.test", "--role", "viewer"], db_url
    )
    assert "invited ann@example.test to acme as viewer" in made
    assert "token=inv_" in _ok(cli, ["outbox"], db_url), "without SMTP the link waits in the outbox"
    (pending,) = _json(cli, ["invitations", "list", "--org", "acme"], db_url)
    assert (pending["email"], pending["status"]) == ("ann@example.test", "pending")
    refused = cli(["invitations", "create", "--org", "acme", "--email", "b@example.test", "--role", "nope"], db_url)
    assert refused.returncode == 1 and "nope" in refused.stderr
    _ok(cli, ["invitations", "revoke", "--org", "acme", "--id", str(pending["id"])], db_url)
    assert _json(cli, ["invitations", "list", "--org", "acme"], db_url) == []
    (revoked,) = _json(cli, ["invitations", "list", "--org", "acme", "--status", "all"], db_url)
    assert revoked["status"] == "revoked"


def test_roles_service_accounts_and_policy_versions_from_the_shell(db_url: str, cli: InProcessCli) -> None:
    _ok(cli, ["migrate"], db_url)
    _ok(cli, ["orgs", "create", "--slug", "acme", "--name", "Acme"], db_url)
    role = ["--org", "acme", "--name", "reports", "--allow", "GET,HEAD /api/reports/*", "--inherits", "viewer"]
    _ok(cli, ["roles", "create", *role, "--description", "reads reports"], db_url)
    listed = {r["name"]: r for r in _json(cli, ["roles", "list", "--org", "acme"], db_url)}
    assert listed["reports"]["permissions"] == "GET,HEAD /api/reports/* allow"
    assert listed["reports"]["inherits"] == "viewer" and listed["viewer"]["system"] is True
    _ok(cli, ["roles", "replace", "--org", "acme", "--name", "reports", "--deny", "DELETE /api/*"], db_url)
    bad = cli(["roles", "create", "--org", "acme", "--name", "x", "--allow", "GET"], db_url)
    assert bad.returncode == 1 and "--allow" in bad.stderr

    account = _ok(
        cli, ["service-accounts", "create", "--org", "acme", "--name", "ci", "--role", "reports"], db_url
    ).strip()
    made = ["service-accounts", "key", "--org", "acme", "--id", account, "--name", "deploy", "--allow-ip", "10.0.0.0/8"]
    key = _ok(cli, made, db_url).strip()
    assert key.startswith("gw_")
    assert "10.0.0.0/8" in _ok(cli, ["keys", "list", "--org", "acme"], db_url)
    (key_row,) = _json(cli, ["keys", "list", "--org", "acme"], db_url)
    assert (key_row["name"], key_row["allowed_ips"]) == ("deploy", ["10.0.0.0/8"])
    assert [a["name"] for a in _json(cli, ["service-accounts", "list", "--org", "acme"], db_url)] == ["ci"]
    refused = cli(["roles", "delete", "--org", "acme", "--name", "reports"], db_url)
    assert refused.returncode == 1 and "move_to" in refused.stderr
    _ok(cli, ["service-accounts", "delete", "--org", "acme", "--id", account], db_url)
    _ok(cli, ["roles", "delete", "--org", "acme", "--name", "reports"], db_url)

    history = _json(cli, ["policy", "versions", "--org", "acme"], db_url)
    assert [(v["number"], v["action"]) for v in history] == [
        (4, "role.delete"),
        (3, "role.update"),
        (2, "role.create"),
        (1, "baseline"),
    ]
    lines = _ok(cli, ["policy", "version", "--org", "acme", "2"], db_url)
    assert "p, reports, acme, /api/reports/*, GET, allow\t# api" in lines
    changed = _ok(cli, ["policy", "version", "--org", "acme", "3", "--diff"], db_url)
    assert "+ p, reports, acme, /api/*, DELETE, deny" in changed
    assert "- p, reports, acme, /api/reports/*, HEAD, allow" in changed

    _ok(cli, ["roles", "create", "--org", "acme", "--name", "reports"], db_url)
    dry = _ok(cli, ["policy", "rollback", "--org", "acme", "--to", "3", "--dry-run"], db_url)
    assert "+ p, reports, acme, /api/*, DELETE, deny" in dry and "nothing was changed" in dry
    assert _json(cli, ["policy", "versions", "--org", "acme"], db_url)[0]["number"] == 4
    done = _ok(cli, ["policy", "rollback", "--org", "acme", "--to", "3"], db_url)
    assert "acme is at version 5" in done
    again = _ok(cli, ["policy", "version", "--org", "acme", "5"], db_url)
    assert again == _ok(cli, ["policy", "version", "--org", "acme", "3"], db_url)


def test_a_shadow_policy_from_the_shell(db_url: str, cli: InProcessCli, tmp_path: Path) -> None:
    _ok(cli, ["migrate"], db_url)
    _ok(cli, ["orgs", "create", "--slug", "acme", "--name", "Acme"], db_url)
    candidate = tmp_path / "next.csv"
    candidate.write_text("# next quarter\np, viewer, acme, /api/reports/*, GET, deny\n")
    attached = _ok(cli, ["policy", "shadow", "attach", "--name", "next", "--files", str(candidate)], db_url)
    assert "1 line(s) added, 0 removed" in attached
    again = cli(["policy", "shadow", "attach", "--name", "again", "--add", str(candidate)], db_url)
    assert again.returncode == 1 and "attached already" in again.stderr
    report = _ok(cli, ["policy", "shadow", "report"], db_url)
    assert "(next, files)" in report and "0 request(s) compared" in report
    as_json = json.loads(_ok(cli, ["policy", "shadow", "report", "--json"], db_url))
    assert as_json["add"] == ["p, viewer, acme, /api/reports/*, GET, deny"]
    assert "promoted" in _ok(cli, ["policy", "shadow", "promote"], db_url)
    exported = tmp_path / "out.csv"
    _ok(cli, ["policy", "export", "--out", str(exported)], db_url)
    assert "p, viewer, acme, /api/reports/*, GET, deny" in exported.read_text()
    assert _json(cli, ["policy", "versions", "--org", "acme"], db_url)[0]["action"] == "shadow.promote"
    gone = cli(["policy", "shadow", "drop"], db_url)
    assert gone.returncode == 1 and "no shadow policy" in gone.stderr
    missing = cli(["policy", "shadow", "attach", "--name", "x", "--add", str(tmp_path / "nope.csv")], db_url)
    assert missing.returncode == 1 and "nope.csv" in missing.stderr

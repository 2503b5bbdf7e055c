"""Policy lines are validated before they reach the database or the enforcer."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.rules import PolicyError, Rule, parse_files, parse_text, validate

ROOT = Path(__file__).resolve().parents[2]

VALID = [
    ("p", ("viewer", "acme", "/api/*", "GET"), ("viewer", "acme", "/api/*", "GET", "allow")),
    ("p", ("admin", "*", "/orders/:id", "*", "deny"), ("admin", "*", "/orders/:id", "*", "deny")),
    ("p", ("user:0b7c7a3e-8d6f-4a55-9c2a-1d2e3f4a5b6c", "acme", "/x/", "PATCH", "allow"), None),
    ("p", ("viewer", "acme", "*", "GET", "deny"), None),
    ("p", ("viewer", "acme", "/caf%C3%A9/*", "GET", "allow"), None),
    ("g", ("member", "viewer", "*"), None),
    ("g", ("user:0b7c7a3e-8d6f-4a55-9c2a-1d2e3f4a5b6c", "superadmin", "*"), None),
    ("p", ("ext:corp:alice@corp.example", "acme", "/api/*", "GET", "allow"), None),
    ("p", ("ext:corp:00u1a2b3c4", "*", "/api/*", "GET", "deny"), None),
    ("g", ("ext:entra_1:6f1c-9a2e", "viewer", "acme"), None),
]


@pytest.mark.parametrize(("ptype", "values", "normalised"), VALID)
def test_valid_lines_are_normalised(ptype: str, values: tuple[str, ...], normalised: tuple[str, ...] | None) -> None:
    """Valid lines pass; a `p` line without an effect gets `allow`."""
    assert validate(ptype, values) == Rule(ptype, normalised or values)


INVALID = [
    ("p", ("viewer", "acme", "/a,b", "GET"), "path"),
    ("p", ("viewer ", "acme", "/a", "GET"), "subject"),
    ("p", ("viewer", "ac me", "/a", "GET"), "org"),
    ("p", ("viewer", "Acme", "/a", "GET"), "org"),
    ("p", ("viewer", "acme*", "/a", "GET"), "org"),
    ("p", ("viewer", "acme", "/v1.json", "GET"), "path"),
    ("p", ("viewer", "acme", "/a(b", "GET"), "path"),
    ("p", ("viewer", "acme", "/a/x*", "GET"), "path"),
    ("p", ("viewer", "acme", "a/b", "GET"), "path"),
    ("p", ("viewer", "acme", "/a/../b", "GET"), "path"),
    ("p", ("viewer", "acme", "/a", "get"), "method"),
    ("p", ("viewer", "acme", "/a", "FETCH"), "method"),
    ("p", ("viewer", "acme", "/a", "GET", "Allow"), "effect"),
    ("p", ("viewer", "acme", "/a"), "p:"),
    ("p", ("Viewer", "acme", "/a", "GET"), "subject"),
    ("g", ("member", "viewer"), "g:"),
    ("g", ("member", "user:abc", "*"), "role"),
    ("x", ("a", "b"), "ptype"),
    ("p", ("ext:Corp:alice", "acme", "/a", "GET"), "subject"),
    ("p", ("ext:corp:", "acme", "/a", "GET"), "subject"),
    ("p", ("ext:corp:a#b", "acme", "/a", "GET"), "subject"),
    ("p", ("ext:corp:a,b", "acme", "/a", "GET"), "subject"),
    ("g", ("member", "ext:corp:alice", "acme"), "role"),
]


@pytest.mark.parametrize(("ptype", "values", "field"), INVALID)
def test_poisonous_lines_are_refused_naming_the_field(ptype: str, values: tuple[str, ...], field: str) -> None:
    """Commas, whitespace, regex characters, bad methods/effects and `*` inside slugs are refused."""
    with pytest.raises(PolicyError, match=field):
        validate(ptype, values)


def test_parse_text_reports_file_and_line() -> None:
    """Errors name the file and line; whole-line comments and blank lines are skipped."""
    text = "# comment\n\np, viewer, *, /*, GET\np, viewer, *, /x, GET # inline\n"
    with pytest.raises(PolicyError, match=r"pol\.csv:4: inline comments"):
        parse_text(text, "pol.csv")
    assert parse_text(text.rsplit("\n", 2)[0], "pol.csv") == [Rule("p", ("viewer", "*", "/*", "GET", "allow"))]


def test_shipped_policies_are_valid() -> None:
    """policies/*.csv parse cleanly and cover every system role and the superadmin."""
    rules = parse_files(sorted((ROOT / "policies").glob("*.csv")))
    subjects = {rule.values[0] for rule in rules}
    assert {"viewer", "member", "admin", "owner", "superadmin"} <= subjects

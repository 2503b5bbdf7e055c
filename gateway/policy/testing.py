"""`gateway policy test`: assertion tables (subject or role, org, METHOD, path, allow|deny) run against files.

No database: the engine is built from the model and the policy files alone. A role name works as a subject
(casbin's `g(role, role)` holds), so a table can state what each role may do without inventing users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.errors import InvalidPath
from gateway.paths import canonical_path
from gateway.policy.hot import Decision, HotState, OrgRef, StateRows
from gateway.policy.rules import ADMIN_OBJECT, ANY_DOMAIN, METHODS, PolicyError, Rule, is_org_slug, is_subject


@dataclass(frozen=True, slots=True)
class Case:
    source: str
    line: int
    subject: str
    org: str
    method: str
    path: str
    allow: bool

    def __str__(self) -> str:
        return f"{self.subject} {self.org} {self.method} {self.path}"


def read_cases(paths: list[Path]) -> list[Case]:
    """Rows `subject, org, METHOD, path, allow|deny`; `#` comments and blank lines are skipped."""
    cases: list[Case] = []
    for path in paths:
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{number}"
            fields = [field.strip() for field in line.split(",")]
            if len(fields) != 5:
                raise PolicyError(f"{where}: expected 'subject, org, METHOD, path, allow|deny'")
            subject, org, method, request_path, expected = fields
            if not is_subject(subject):
                raise PolicyError(
                    f"{where}: subject {subject!r} is not a role name, user:<uuid> or ext:<issuer>:<subject>"
                )
            if org != ANY_DOMAIN and not is_org_slug(org):
                raise PolicyError(f"{where}: org {org!r} is not an organization slug or '*'")
            if method not in METHODS or method == "*":
                raise PolicyError(f"{where}: method {method!r} is not an HTTP method")
            if expected not in ("allow", "deny"):
                raise PolicyError(f"{where}: expected must be 'allow' or 'deny', not {expected!r}")
            namespace = ADMIN_OBJECT if request_path.startswith(ADMIN_OBJECT) else ""
            try:
                canonical = namespace + canonical_path(request_path.removeprefix(namespace).encode())
            except InvalidPath as exc:
                raise PolicyError(f"{where}: path {request_path!r}: {exc.detail}") from None
            cases.append(Case(str(path), number, subject, org, method, canonical, expected == "allow"))
    return cases


def run_cases(model_path: Path, rules: list[Rule], cases: list[Case]) -> list[tuple[Case, Decision]]:
    """Every case's decision, computed by casbin's own evaluator (the reference)."""
    engine = HotState(model_path)
    orgs = tuple(OrgRef(id=slug, slug=slug) for slug in sorted({case.org for case in cases} - {ANY_DOMAIN}))
    engine.install(StateRows(rules=tuple(rules), orgs=orgs))
    return [(case, engine.explain(case.subject, case.org, case.path, case.method)) for case in cases]

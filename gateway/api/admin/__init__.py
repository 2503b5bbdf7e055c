"""/admin: the management API. Every handler is behind `authorize`, which asks the proxy's own enforcer."""

from __future__ import annotations

from litestar import Router

from gateway.api.admin.audit import AuditController, GlobalAuditController
from gateway.api.admin.decisions import DecisionsController
from gateway.api.admin.guard import authorize
from gateway.api.admin.invitations import InvitationsController
from gateway.api.admin.keys import KeysController, ServiceAccountsController
from gateway.api.admin.members import MembersController
from gateway.api.admin.orgs import OrgsController
from gateway.api.admin.policies import GlobalPoliciesController, PoliciesController, VersionsController
from gateway.api.admin.roles import RolesController
from gateway.api.admin.shadow import ShadowController
from gateway.api.admin.users import UsersController

ADMIN_CONTROLLERS = (
    OrgsController,
    MembersController,
    InvitationsController,
    RolesController,
    PoliciesController,
    VersionsController,
    GlobalPoliciesController,
    ShadowController,
    DecisionsController,
    KeysController,
    ServiceAccountsController,
    AuditController,
    GlobalAuditController,
    UsersController,
)


def admin_router() -> Router:
    """All /admin handlers, each authorized by `authorize` before its dependencies or body are read."""
    return Router(path="/admin", guards=[authorize], route_handlers=list(ADMIN_CONTROLLERS))

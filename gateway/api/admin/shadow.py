"""/admin/shadow: attach a shadow policy, read its report, promote it to live or drop it (platform-wide)."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin import schemas
from gateway.api.admin.guard import Caller
from gateway.manage import shadow
from gateway.runtime import Runtime


class ShadowController(Controller):
    path = "/shadow"
    tags = ["policies"]
    opt = {"authz": "platform", "may_be_missing": True}  # 404 while no shadow policy is attached

    @get("/")
    async def read(self, runtime: NamedDependency[Runtime], db: NamedDependency[AsyncSession]) -> schemas.ShadowReport:
        """The attached shadow policy and where it would decide otherwise, most frequent first (this process's
        counts are written first; other replicas' within 10 seconds)."""
        await runtime.flush_shadow()
        return await shadow.report(db)

    @post("/", status_code=201)
    async def attach(
        self, data: JSONBody[schemas.ShadowAttach], caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]
    ) -> schemas.ShadowReport:
        """Attach a candidate: `add`/`remove` lines against the live policy, or `files`, the whole set of lines
        the policy files would hold. Every proxied request is then decided by both; only the live one decides.
        409 while another is attached."""
        return await shadow.attach(db, caller.actor, name=data.name, add=data.add, remove=data.remove, files=data.files)

    @post("/promote", status_code=200)
    async def promote(
        self, runtime: NamedDependency[Runtime], caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]
    ) -> schemas.ShadowReport:
        """Make the candidate live in one step (a new version for every org whose lines change); audited."""
        await runtime.flush_shadow()
        return await shadow.promote(db, caller.actor)

    @delete("/")
    async def drop(self, caller: NamedDependency[Caller], db: NamedDependency[AsyncSession]) -> None:
        """Detach the candidate; the live policy was never touched."""
        await shadow.drop(db, caller.actor)

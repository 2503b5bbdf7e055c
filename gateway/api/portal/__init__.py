"""The browser sign-in portal (`/portal/...`, with `[browser] enabled`): its pages and their template engine."""

from __future__ import annotations

from pathlib import Path

from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from gateway.api.portal.pages import PortalController

TEMPLATES = Path(__file__).parent / "templates"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 over the portal's templates, autoescaping every value."""
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)


__all__ = ["PortalController", "template_config"]

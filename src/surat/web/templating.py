"""Server-rendered pages: jinja2 templates from templates/, HTML-escaped by default.

Every value a page shows passes through autoescaping, so a name or address holding `<script>` is
shown, never run; templates must not use `|safe` on anything that came from a user. Static files
(style sheets, and htmx if a page needs it, vendored: no CDN) are under static/ and served at
/static/ by the listener that shows pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,  # a misspelt variable is an error, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, status: int = 200, **values: Any) -> web.Response:
    """A page from `template` with `values`."""
    html = ENVIRONMENT.get_template(template).render(**values)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

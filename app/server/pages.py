"""The browser page and the API docs, rendered from the package's ``templates``; assets served from ``static``.

``/docs`` is Swagger UI 5 served from ``static/swagger`` (vendored, see its README): it renders offline
and under the same Content-Security-Policy as the page (no inline script, nothing from a CDN).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from attnlens import __version__
from attnlens.models.references import METHODS

# package data folders (installed as attnlens.static / attnlens.templates, also in editable installs)
TEMPLATES = Jinja2Templates(directory=Path(str(resources.files("attnlens.templates"))))
STATIC_DIR = Path(str(resources.files("attnlens.static")))

pages = APIRouter(include_in_schema=False)


@pages.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    service = request.app.state.service
    return TEMPLATES.TemplateResponse(request, "index.html", {"version": __version__, "model": service.get(None).model,
                                                              "ready": service.ready, "methods": METHODS.values()})


@pages.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "docs.html", {"title": f"{request.app.title} {__version__} - API",
                                                             "openapi_url": request.app.openapi_url})

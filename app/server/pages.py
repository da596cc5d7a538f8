"""The browser page, rendered from the package's ``templates``; its assets are served from ``static``."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from attnlens import __version__

# package data folders (installed as attnlens.static / attnlens.templates, also in editable installs)
TEMPLATES = Jinja2Templates(directory=Path(str(resources.files("attnlens.templates"))))
STATIC_DIR = Path(str(resources.files("attnlens.static")))

pages = APIRouter(include_in_schema=False)


@pages.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    service = request.app.state.service
    return TEMPLATES.TemplateResponse(request, "index.html", {"version": __version__, "model": service.model,
                                                              "ready": service.ready})

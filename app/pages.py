"""The browser page, rendered from ``templates/``; its assets are served from ``static/``."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from . import __version__

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Jinja2Templates(directory=ROOT / "templates")
STATIC_DIR = ROOT / "static"

pages = APIRouter(include_in_schema=False)


@pages.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    service = request.app.state.service
    return TEMPLATES.TemplateResponse(request, "index.html", {"version": __version__, "model": service.model,
                                                              "ready": service.ready})

"""The web server: app factory, routes, pages, the inference service, middleware, schemas, settings."""
from .app import create_app, serve
from .settings import Settings

__all__ = ["Settings", "create_app", "serve"]

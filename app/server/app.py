"""The FastAPI application factory and ``attnlens serve``.

``create_app(settings)`` builds the app: the model loads in the lifespan handler (on a background
thread, so ``/healthz`` answers at once and ``/readyz`` turns 200 when the model is warmed up); routes
come from ``app.api`` and ``app.pages``; every error is JSON ``{"detail": ...}`` with the status SPEC
section 4 names: 400 bad input, 404 unknown model, 413 too large, 415 not an image type, 503 overloaded (+ Retry-After).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from attnlens import __version__
from attnlens.analysis.imaging import ImageError, ImageTooLarge, UndecodableImage, UnsupportedImage
from attnlens.models.boundary import ModelRunError
from attnlens.models.outputs import TargetError

from .api import api, health
from .browsing import datasets
from .inference import Overloaded
from .middleware import PlainTextErrorsAsJson, SecurityHeaders
from .pages import STATIC_DIR, pages
from .service import Service, UnknownDataset, UnknownModel
from .settings import Settings

__all__ = ["create_app", "serve"]

log = logging.getLogger("attnlens")

IMAGE_ERROR_STATUS = {UndecodableImage: 400, ImageTooLarge: 413, UnsupportedImage: 415}


class AttnlensAPI(FastAPI):
    """FastAPI whose whole middleware stack, the body-size limit included, answers errors as JSON and
    sends the security headers."""

    def build_middleware_stack(self):
        return SecurityHeaders(PlainTextErrorsAsJson(super().build_middleware_stack()))


def create_app(settings: Settings | None = None, load_in_background: bool = True,
               on_load_error: Callable[[str], None] | None = None) -> FastAPI:
    """The app; ``ModelLoadError`` for a models file that cannot be used; ``on_load_error``: called when a model
    fails to load in the background (``serve`` stops the server then)."""
    settings = settings or Settings()
    service = Service(settings, on_load_error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start(background=load_in_background)
        yield
        service.stop()

    app = AttnlensAPI(title="attnlens", version=__version__, lifespan=lifespan, max_body_size=settings.max_upload_bytes,
                      docs_url=None, redoc_url=None,  # /docs is served offline by pages.docs
                      description="What CNN plug-in blocks (ACmix, GC, CA, SPD, DCN) attend to: predictions and "
                                  "per-block heatmaps for uploaded images.")
    app.state.service = service
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    app.include_router(api)
    app.include_router(datasets)
    app.include_router(health)
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, error: Overloaded) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=503,
                            headers={"Retry-After": str(error.retry_after_s)})

    @app.exception_handler(ImageError)
    async def bad_image(request: Request, error: ImageError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=IMAGE_ERROR_STATUS[type(error)])

    @app.exception_handler(UnknownDataset)
    async def unknown_dataset(request: Request, error: UnknownDataset) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(UnknownModel)
    async def unknown_model(request: Request, error: UnknownModel) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(ModelRunError)
    async def model_failed(request: Request, error: ModelRunError) -> JSONResponse:
        """The user's model failed on this image: its own failure (502), logged with its traceback; the
        server goes on serving it and the other models."""
        log.error("%s", error, exc_info=error.error)
        return JSONResponse({"detail": str(error), "model": error.model, "raised": error.raised}, status_code=502)

    @app.exception_handler(TargetError)
    async def bad_target(request: Request, error: TargetError) -> JSONResponse:
        return JSONResponse({"detail": f"Grad-CAM: {error}"}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=400)

    return app


def serve(settings: Settings) -> str | None:
    """Run the server until SIGINT / SIGTERM (in-flight requests finish; new ones are refused), or until a model
    fails to load (a mistake to fix, not to wait out); returns that failure, if any."""
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings, on_load_error=lambda message: setattr(server, "should_exit", True))
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                                           timeout_graceful_shutdown=settings.request_timeout_s))
    server.run()
    return app.state.service.load_error

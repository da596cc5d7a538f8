"""HTTP routes: the v1 JSON API and the health probes."""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from attnlens.analysis.engine import MAX_SIZE, MIN_SIZE, AnalyzeOptions
from attnlens.analysis.render import COLORMAP_CHOICES, DEFAULT_COLORMAP, colormap_lut

from .schemas import AnalysisResult, Colormaps, ErrorResponse, Health, ModelDescription
from .service import Service

__all__ = ["api", "health"]

INCLUDE_CHOICES = ("values", "maps")
ERRORS = {status: {"model": ErrorResponse, "description": description} for status, description in (
    (400, "not an image, undecodable, or a bad option"), (413, "too many bytes or pixels"),
    (415, "not an image type we read"), (503, "overloaded or still loading; see Retry-After"))}

api = APIRouter(prefix="/api/v1", tags=["v1"])
health = APIRouter(tags=["health"])


def get_service(request: Request) -> Service:
    return request.app.state.service


def ready_service(service: Annotated[Service, Depends(get_service)]) -> Service:
    service.require_ready()
    return service


ReadyService = Annotated[Service, Depends(ready_service)]


@api.get("/model", response_model=ModelDescription, responses={503: ERRORS[503]})
def describe_model(service: ReadyService) -> ModelDescription:
    """The loaded model and its blocks, in execution order."""
    model = service.model
    recipe = model.recipe
    return ModelDescription(backbone=model.name, device=str(model.device), task=model.task, output=model.reader.layout,
                            note=model.reader.note or None, input_size=model.input_size,
                            input={"size": recipe.size, "resize": recipe.resize, "normalize": recipe.normalize},
                            num_classes=model.num_classes, blocks_trained=model.blocks_trained,
                            blocks=[vars(block) for block in model.blocks])


@api.get("/colormaps", response_model=Colormaps)
def colormaps() -> Colormaps:
    """The lookup tables of the colormaps the page offers, so it can recolour maps without asking again."""
    return Colormaps(colormaps={name: colormap_lut(name).tolist() for name in COLORMAP_CHOICES})


@api.post("/analyze", response_model=AnalysisResult, response_model_exclude_none=True, responses=ERRORS)
async def analyze(
    service: ReadyService,
    file: Annotated[UploadFile, File(description="the image (JPEG, PNG, WebP, GIF, TIFF or BMP)")],
    include: Annotated[list[str], Query(description="extra content: values (raw heatmap values), maps (full "
                                                    "maps); repeat or comma-separate")] = [],  # noqa: B006
    colormap: Annotated[str, Query(description="matplotlib colormap of the heatmap PNGs")] = DEFAULT_COLORMAP,
    size: Annotated[int | None, Query(ge=MIN_SIZE, le=MAX_SIZE,
                                      description="short side the image is resized to (default: model input)")] = None,
) -> dict:
    """Predictions and every block's heatmap and maps for one uploaded image."""
    started = time.perf_counter()
    extras = {item.strip() for value in include for item in value.split(",") if item.strip()}
    if unknown := extras - set(INCLUDE_CHOICES):
        raise HTTPException(400, f"include must be among {', '.join(INCLUDE_CHOICES)}; got {', '.join(sorted(unknown))}")
    options = AnalyzeOptions(size=size, colormap=colormap, include_values="values" in extras,
                             include_maps="maps" in extras)
    try:
        options.validate()
    except ValueError as error:
        raise HTTPException(400, str(error)) from None
    with service.admission.slot(service.retry_after_s()):
        data = await file.read()
        decode_start = time.perf_counter()
        geometry, tensor = await run_in_threadpool(service.prepare, data, options)
        decode_ms = 1000 * (time.perf_counter() - decode_start)
        report = await service.batcher.submit(tuple(tensor.shape), (tensor, geometry, options, time.perf_counter()),
                                              service.settings.request_timeout_s)
    report["timings_ms"] = {"decode": round(decode_ms, 2), **report["timings_ms"],
                            "total": round(1000 * (time.perf_counter() - started), 2)}
    return report


@health.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers (on the event loop, which inference never blocks)."""
    return Health(status="ok")


@health.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(service: Annotated[Service, Depends(get_service)]):
    """Readiness: 200 once the model is loaded and warmed up."""
    if service.ready:
        return Health(status="ready")
    status = "failed: " + service.load_error if service.load_error else "loading"
    return JSONResponse({"status": status}, status_code=503, headers={"Retry-After": "5"})

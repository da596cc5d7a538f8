"""HTTP routes: the v1 JSON API and the health probes."""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from attnlens.analysis.options import MAX_SIZE, MIN_SIZE, AnalyzeOptions
from attnlens.analysis.render import COLORMAP_CHOICES, DEFAULT_COLORMAP, colormap_lut
from attnlens.evaluation.browse import match_detections
from attnlens.models.references import METHODS, TARGET_KINDS

from .schemas import AnalysisResult, Colormaps, ErrorResponse, Health, ModelDescription, ModelFailure, ModelList
from .service import Served, Service, UnknownDataset

__all__ = ["api", "health"]

INCLUDE_CHOICES = ("values", "maps", "gradcam", "knockout")
FORMATS = ("json", "npz")
NPZ_MEDIA_TYPE = "application/x-npz"
ERRORS = {status: {"model": ErrorResponse, "description": description} for status, description in (
    (400, "not an image, undecodable, or a bad option"), (404, "no model by that name"),
    (413, "too many bytes or pixels"), (415, "not an image type we read"),
    (503, "overloaded or still loading; see Retry-After"))} | {
    502: {"model": ModelFailure, "description": "the model itself failed on this image (its code raised, exited or "
                                                "ran out of memory): the model's failure, not the request's"}}

api = APIRouter(prefix="/api/v1", tags=["v1"])
health = APIRouter(tags=["health"])


def get_service(request: Request) -> Service:
    return request.app.state.service


def ready_service(service: Annotated[Service, Depends(get_service)]) -> Service:
    service.require_ready()
    return service


ReadyService = Annotated[Service, Depends(ready_service)]


ModelName = Annotated[str | None, Query(description="the model's name (GET /api/v1/models); default: the first")]


def describe(served: Served) -> ModelDescription:
    model = served.model
    recipe = model.recipe
    return ModelDescription(name=served.name, backbone=model.name, device=str(model.device), task=model.task,
                            output=model.reader.layout, note=model.note or None, input_size=model.input_size,
                            input={"size": recipe.size, "resize": recipe.resize, "normalize": recipe.normalize},
                            num_classes=model.num_classes, blocks_trained=model.blocks_trained,
                            gradcam_layer=",".join(model.reference_layers) or None,
                            reference_layers=model.reference_layers, memory_mb=served.memory_mb,
                            blocks=[vars(block) for block in model.blocks],
                            candidates=[vars(candidate) for candidate in
                                        (model.recognition.candidates if model.recognition else ())])


@api.get("/model", response_model=ModelDescription, responses={404: ERRORS[404], 503: ERRORS[503]})
def describe_model(service: ReadyService, model: ModelName = None) -> ModelDescription:
    """One model the server offers (the default unless named) and its blocks, in execution order."""
    return describe(service.get(model))


@api.get("/models", response_model=ModelList, responses={503: ERRORS[503]})
def list_models(service: ReadyService) -> ModelList:
    """Every model the server offers, the default first."""
    return ModelList(default=service.default, models=[describe(served) for served in service.served.values()])


@api.get("/colormaps", response_model=Colormaps)
def colormaps() -> Colormaps:
    """The lookup tables of the colormaps the page offers, so it can recolour maps without asking again."""
    return Colormaps(colormaps={name: colormap_lut(name).tolist() for name in COLORMAP_CHOICES})


FIGURE_MEDIA_TYPES = {"pdf": "application/pdf", "svg": "image/svg+xml", "png": "image/png"}
FIGURE_IMAGES = 8  # images one figure takes


@api.post("/figure", response_class=Response,
          responses=ERRORS | {200: {"content": {kind: {} for kind in FIGURE_MEDIA_TYPES.values()},
                                    "description": "the paper figure (attnlens figure) as a PDF, SVG or PNG file"}})
async def figure(
    service: ReadyService,
    files: Annotated[list[UploadFile], File(description=f"the images, one row each (at most {FIGURE_IMAGES})")],
    model: Annotated[list[str], Query(description="the models, one column group each, in order (repeat; default: "
                                                  "the first model)")] = [],  # noqa: B006
    maps: Annotated[str | None, Query(description="comma-separated map columns: kinds (gc, ca, acmix, dcn, spd), "
                                                  "block ids, reference methods; default: every kind the models "
                                                  "share")] = None,
    reference: Annotated[str | None, Query(description="a reference map column: " + ", ".join(METHODS))] = None,
    width: Annotated[str, Query(description="inches, or column (3.5) or page (7.16)")] = "page",
    scale: Annotated[str, Query(description="shared (one colour scale per map family) or per-panel")] = "shared",
    format: Annotated[str, Query(description="pdf, svg or png")] = "pdf",
    dpi: Annotated[int, Query(ge=50, le=600, description="the heatmaps' raster resolution")] = 300,
):
    """The paper figure of uploaded images (rows) x the served models x their maps, as ``attnlens figure`` draws
    it: one colour scale per map family, at a journal's width."""
    from attnlens.analysis.imaging import decode_image
    from attnlens.evaluation.paper import FigureError, PaperImage, paper_figure, paper_figure_bytes

    if format not in FIGURE_MEDIA_TYPES:
        raise HTTPException(400, f"format must be one of {', '.join(FIGURE_MEDIA_TYPES)}; got {format!r}")
    if not 1 <= len(files) <= FIGURE_IMAGES:
        raise HTTPException(400, f"a figure takes 1 to {FIGURE_IMAGES} images; got {len(files)}")
    if reference is not None and reference not in METHODS:
        raise HTTPException(400, f"reference must be one of {', '.join(METHODS)}; got {reference!r}")
    served = [service.get(name) for name in dict.fromkeys(model)] or [service.get(None)]
    with service.admission.slot(service.retry_after_s()):
        rows = []
        for upload in files:
            data = await upload.read()
            image = await run_in_threadpool(decode_image, data, service.settings.max_pixels)
            rows.append(PaperImage(image, (upload.filename or "image").rsplit(".", 1)[0]))
        chosen = [m.strip() for m in maps.split(",") if m.strip()] if maps else None
        try:
            drawn = await run_in_threadpool(paper_figure, [(s.name, s.model) for s in served], rows, chosen, reference,
                                            width, dpi, 7, scale)
            content = await run_in_threadpool(paper_figure_bytes, drawn, format, dpi)
        except FigureError as error:
            raise HTTPException(400, str(error)) from None
    return Response(content, media_type=FIGURE_MEDIA_TYPES[format],
                    headers={"Content-Disposition": f'attachment; filename="attnlens-figure.{format}"'})


@api.post("/analyze", response_model=AnalysisResult, response_model_exclude_none=True,
          responses=ERRORS | {200: {"content": {NPZ_MEDIA_TYPE: {}}, "description": "the report as JSON, or with "
                                    "format=npz every map as a numpy array and the JSON report as `report`"}})
async def analyze(
    service: ReadyService,
    file: Annotated[UploadFile | None, File(description="the image (JPEG, PNG, WebP, GIF, TIFF or BMP); or give "
                                                          "dataset and image instead")] = None,
    model: ModelName = None,
    dataset: Annotated[str | None, Query(description="a served dataset (GET /api/v1/datasets): analyse its image "
                                                     "`image` instead of an upload; the answer adds ground_truth")] = None,
    image: Annotated[str | None, Query(description="with dataset: the image's id from its listing")] = None,
    include: Annotated[list[str], Query(description="extra content: values (raw heatmap values), maps (full "
                                                    "maps), gradcam (the same as reference=gradcam), knockout (the "
                                                    "answer again with each block's map made flat: one forward per "
                                                    "block); repeat or comma-separate")] = [],  # noqa: B006
    reference: Annotated[str | None, Query(description="a reference map beside the blocks': " + ", ".join(METHODS) +
                                           " (the first three cost a backward pass; eigencam needs none and has no "
                                           "target), at the layers GET /api/v1/model names")] = None,
    target: Annotated[int | None, Query(ge=0, description="what the reference explains: a class index (classifiers) "
                                                          "or a rank in detections (detectors); default the top one")] = None,
    target_kind: Annotated[str, Query(description="detectors: which score of the detection the reference explains: "
                                                  + ", ".join(TARGET_KINDS) + " (class score, box coordinates, "
                                                  "both)")] = "class",
    colormap: Annotated[str, Query(description="matplotlib colormap of the heatmap PNGs")] = DEFAULT_COLORMAP,
    size: Annotated[int | None, Query(ge=MIN_SIZE, le=MAX_SIZE,
                                      description="short side the image is resized to (default: model input)")] = None,
    format: Annotated[str, Query(description="json, or npz: application/x-npz with one array per map named "
                                             "<block id>/<map name> and the JSON report as `report`")] = "json",
):
    """Predictions or detections, and every block's heatmap and maps, for one uploaded image (or one of a served
    dataset's, with its ground truth)."""
    started = time.perf_counter()
    served = service.get(model)
    labelled = _labelled(service, file, dataset, image)
    extras = {item.strip() for value in include for item in value.split(",") if item.strip()}
    if unknown := extras - set(INCLUDE_CHOICES):
        raise HTTPException(400, f"include must be among {', '.join(INCLUDE_CHOICES)}; got {', '.join(sorted(unknown))}")
    if format not in FORMATS:
        raise HTTPException(400, f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if "gradcam" in extras and reference not in (None, "gradcam"):
        raise HTTPException(400, f"include=gradcam asks for reference=gradcam, but reference={reference} was given: "
                                 f"give one of them")
    options = AnalyzeOptions(size=size, colormap=colormap, include_values="values" in extras,
                             include_maps="maps" in extras, target=target, target_kind=target_kind,
                             reference="gradcam" if "gradcam" in extras else reference, knockout="knockout" in extras)
    try:
        options.validate()
    except ValueError as error:
        raise HTTPException(400, str(error)) from None
    with service.admission.slot(service.retry_after_s()):
        data = await (file.read() if labelled is None else run_in_threadpool(labelled[1].read_bytes))
        decode_start = time.perf_counter()
        tensor, geometry = await run_in_threadpool(service.prepare, served, data, options)
        decode_ms = 1000 * (time.perf_counter() - decode_start)
        key = (tuple(tensor.shape), object() if options.reference else None, options.knockout)  # reference jobs alone
        analysis = await served.batcher.submit(key, (tensor, options, geometry, time.perf_counter()),
                                               service.settings.request_timeout_s)
    analysis.timings_ms = {"decode": decode_ms, **analysis.timings_ms}
    if format == "npz":
        return Response(await run_in_threadpool(analysis.npz, options), media_type=NPZ_MEDIA_TYPE,
                        headers={"Content-Disposition": 'attachment; filename="attnlens.npz"'})
    report = await run_in_threadpool(analysis.report, options)
    if labelled is not None:
        browser, _, found = labelled
        size = (report["image"]["width"], report["image"]["height"])
        truth = browser.ground_truth(found, size)
        if served.model.task == "detect":
            labels = [served.model.label(i) for i in range(served.model.num_classes)]
            report["ground_truth"] = match_detections(truth, report.get("detections", []), labels,
                                                      browser.dataset.classes)
        else:  # no boxes to match them to: the labelled boxes as they are, and why
            report["ground_truth"] = truth
            report["note"] = "; ".join(filter(None, [report.get("note"), f"the labelled boxes are not matched: this "
                                                     f"model gives no boxes (task {served.model.task})"]))
    report["timings_ms"]["total"] = round(1000 * (time.perf_counter() - started), 2)
    return report


def _labelled(service: Service, file: UploadFile | None, dataset: str | None, image: str | None):
    """``(browser, path, labelled image)`` of ``dataset=&image=``, None for an upload; 400 / 404 (JSON) for what
    does not fit."""
    if dataset is None and image is None:
        if file is None:
            raise HTTPException(400, "give the image as the multipart field file, or a served one as dataset= and image=")
        return None
    if file is not None:
        raise HTTPException(400, "give an uploaded file, or dataset= and image=, not both")
    if dataset is None or image is None:
        raise HTTPException(400, "dataset= and image= go together: the dataset's name and the image's id")
    browser = service.dataset(dataset)
    path = browser.path_of(image)
    if path is None:
        raise UnknownDataset(f"dataset {dataset!r} has no image {image!r}")
    return browser, path, browser.by_id[image]


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

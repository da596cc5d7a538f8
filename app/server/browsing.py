"""The labelled datasets a server offers for browsing (``attnlens serve --data``): their listing, their images
and thumbnails, always by id (``attnlens.evaluation.browse``: never a path from the request)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from .schemas import DatasetList, DatasetListing, ErrorResponse
from .service import Service, UnknownDataset

__all__ = ["datasets"]

datasets = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "no dataset, or no image of it, by that name"}}


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDependency = Annotated[Service, Depends(get_service)]


@datasets.get("", response_model=DatasetList)
def list_datasets(service: ServiceDependency) -> DatasetList:
    """The labelled datasets the server offers, with their classes and the scores their images sort by."""
    return DatasetList(datasets=[browser.describe() for browser in service.datasets.values()])


@datasets.get("/{name}/images", response_model=DatasetListing, responses=NOT_FOUND | {400: {"model": ErrorResponse}})
def list_images(service: ServiceDependency, name: str,
                offset: Annotated[int, Query(ge=0, description="the first image of the page")] = 0,
                limit: Annotated[int, Query(ge=1, le=500, description="images per page")] = 100,
                sort: Annotated[str | None, Query(description="MAP:MEASURE from the eval results (GET /api/v1/datasets "
                                                            "lists them), high to low")] = None,
                cls: Annotated[str | None, Query(alias="class", description="only images with an object of this "
                                                 "class (a name or an index)")] = None,
                search: Annotated[str | None, Query(description="only images whose path holds this text")] = None,
                missed: Annotated[str | None, Query(description="only images where a detector of the eval results "
                                                    "missed a labelled object: 1 (any), or a model's name")] = None,
                ) -> DatasetListing:
    """A page of the dataset's images with their boxes (original-image pixels) and scores (a detector's results add
    ``objects:missed`` and ``objects:found`` per image)."""
    try:
        return service.dataset(name).listing(offset, limit, sort, cls, search, missed)
    except ValueError as error:
        raise HTTPException(400, str(error)) from None


@datasets.get("/{name}/images/{image_id:path}", response_class=FileResponse, responses=NOT_FOUND)
def image_file(service: ServiceDependency, name: str, image_id: str) -> FileResponse:
    """The image file itself (``id`` from the listing)."""
    path = service.dataset(name).path_of(image_id)
    if path is None:
        raise UnknownDataset(f"dataset {name!r} has no image {image_id!r}")
    return FileResponse(path)


@datasets.get("/{name}/thumbnails/{image_id:path}", responses=NOT_FOUND | {200: {"content": {"image/jpeg": {}}}})
async def thumbnail(service: ServiceDependency, name: str, image_id: str) -> Response:
    """A JPEG of the image, its long side at most 256 px (made on request, cached)."""
    data = await run_in_threadpool(service.dataset(name).thumbnail, image_id)
    if data is None:
        raise UnknownDataset(f"dataset {name!r} has no image {image_id!r} it can show")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


"""Server settings: one class, read from ``ATTNLENS_*`` environment variables, overridden by CLI flags.

The model options (``ATTNLENS_MODEL``, ``ATTNLENS_TASK``, ``ATTNLENS_INPUT_SIZE`` ...) are
``attnlens.models.ModelOptions``, declared there once for the CLI, the server and models files.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from attnlens.models.options import EnvironmentModelOptions

__all__ = ["Settings"]


class Settings(EnvironmentModelOptions):
    """Every setting of ``attnlens serve``; environment variable ``ATTNLENS_<NAME>`` (e.g. ``ATTNLENS_PORT``)."""

    models: Path | None = Field(None, description="a models file (TOML, [[models]] tables with a name and the model "
                                "options) to serve several models; default: the default model and the same with "
                                "untrained blocks (or the one --model)")
    data: Path | None = Field(None, description="a labelled dataset to browse in the page and analyse by id: a YOLO "
                              "data.yaml or a COCO JSON (more: [[datasets]] tables in the models file)")
    data_images: Path | None = Field(None, description="COCO: the folder of the dataset's images (default: the JSON's)")
    data_split: str = Field("val", description="YOLO: the split to browse")
    eval_results: Path | None = Field(None, description="an attnlens eval --out folder for --data: its images sortable "
                                      "by each map's energy, lift and pointing (per_image.csv)")
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    queue_size: int = Field(16, ge=1, description="requests admitted at once (decoding, queued, running); more get 503")
    max_batch: int | None = Field(None, ge=1, description="images per forward pass (default: 8 on CUDA, 4 on CPU)")
    batch_window_ms: float = Field(5.0, ge=0, description="how long the first request of a batch waits for others")
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1, description="request bodies larger than this get 413")
    max_pixels: int = Field(40_000_000, ge=1, description="images with more pixels get 413 (before decoding)")
    request_timeout_s: float = Field(60.0, gt=0, description="a request waiting or running longer gets 503")
    cors_origins: list[str] = Field([], description="origins allowed to call the API from a browser (none: no CORS)")
    log_level: str = Field("info", description="uvicorn log level")

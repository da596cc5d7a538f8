"""What one analysis is asked for: input size, Grad-CAM, and what the report carries."""
from __future__ import annotations

from dataclasses import dataclass

from .render import DEFAULT_COLORMAP, colormap_lut

__all__ = ["MAX_SIZE", "MIN_SIZE", "AnalyzeOptions"]

MIN_SIZE, MAX_SIZE = 32, 1024


@dataclass(frozen=True)
class AnalyzeOptions:
    """size: the input size (short side, or long side for letterbox; default: the model's); colormap:
    matplotlib colormap of the heatmap PNGs; include_values: raw heatmap values in the JSON;
    include_maps: the full maps (ACmix attention, DCN offsets, ...) in the JSON; gradcam: a Grad-CAM
    reference map (costs a backward pass) for ``target``: a class index, or a detection's rank (default:
    the top one)."""

    size: int | None = None
    colormap: str = DEFAULT_COLORMAP
    include_values: bool = False
    include_maps: bool = False
    gradcam: bool = False
    target: int | None = None

    def validate(self) -> None:
        if self.size is not None and not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE}, got {self.size}")
        if self.target is not None and self.target < 0:
            raise ValueError(f"target must be at least 0, got {self.target}")
        colormap_lut(self.colormap)

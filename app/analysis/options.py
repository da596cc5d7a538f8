"""What one analysis is asked for: input size, a reference map, and what the report carries."""
from __future__ import annotations

from dataclasses import dataclass

from attnlens.models.references import METHODS, TARGET_KINDS

from .render import DEFAULT_COLORMAP, colormap_lut

__all__ = ["MAX_SIZE", "MIN_SIZE", "AnalyzeOptions"]

MIN_SIZE, MAX_SIZE = 32, 1024


@dataclass(frozen=True)
class AnalyzeOptions:
    """size: the input size (short side, or long side for letterbox; default: the model's); colormap:
    matplotlib colormap of the heatmap PNGs; include_values: raw heatmap values in the JSON;
    include_maps: the full maps (ACmix attention, DCN offsets, ...) in the JSON; reference: a reference map
    (``gradcam``, ``gradcam++``, ``layercam``: a backward pass; ``eigencam``: none) for ``target``: a class index,
    or a detection's rank (default: the top one), and of a detection its ``target_kind`` of score: ``class``,
    ``box`` (its coordinates) or ``all`` (both); knockout: the answer again with each block's map made flat
    (``attnlens.analysis.knockout``; one extra forward per block)."""

    size: int | None = None
    colormap: str = DEFAULT_COLORMAP
    include_values: bool = False
    include_maps: bool = False
    reference: str | None = None
    target: int | None = None
    target_kind: str = "class"
    knockout: bool = False

    def validate(self) -> None:
        if self.size is not None and not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE}, got {self.size}")
        if self.reference is not None and self.reference not in METHODS:
            raise ValueError(f"reference must be one of {', '.join(METHODS)}, got {self.reference!r}")
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {', '.join(TARGET_KINDS)}, got {self.target_kind!r}")
        if self.reference is None and (self.target is not None or self.target_kind != "class"):
            raise ValueError("target and target_kind choose what a reference map explains: give them with a reference "
                             "(e.g. reference=gradcam)")
        if self.reference is not None and not METHODS[self.reference].gradients and \
                (self.target is not None or self.target_kind != "class"):
            raise ValueError(f"{self.reference} uses no gradients, so it explains no target: leave target and "
                             f"target_kind out")
        if self.target is not None and self.target < 0:
            raise ValueError(f"target must be at least 0, got {self.target}")
        colormap_lut(self.colormap)

"""``TrainConfig``: the settings of ``attnlens train`` (no torch import, so the CLI can show its defaults cheaply)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Defaults: the recipe of the shipped blocks (r9 in the README's model card)."""

    out: Path = Path("runs/blocks")
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    ca_lr_factor: float = 10.0  # CA's gates read row / column means, whose differences are small: it learns faster
    weight_decay: float = 1e-4
    temperature: float = 2.0
    consistency: float = 6.0  # weight of the object-alone term: the student must keep the teacher's answer there
    probe: float = 4.0  # weight of the probe terms: each block's own output must tell the teacher's answer
    seed: int = 0
    checkpoint_every: int = 50
    resume: bool = False
    data: Path | None = None  # an ImageFolder: supervised training of blocks + a new head
    device: str | None = None
    sources: dict[str, Path] | None = None  # where the Debian data lies (default: located or fetched)

"""attnlens blocks: CNN plug-in blocks (ACmix, GC, CA, SPD, DCN) and ``capture`` to read their maps (in any
model: blocks are recognised by what they compute, ``recognise``).

Pure PyTorch; nothing here knows of the web app. The seed names (``ACmix``, ``CB2d``, ``CA``,
``space_to_depth``) and the descriptive ones import from here.
"""
from .acmix import ACmix
from .capture import Candidate, FoundBlock, Recognition, capture, find_blocks, recognise, recognition_of
from .context import CB2d, GlobalContextBlock
from .coord import CA, CoordinateAttention
from .deform import DCN, DCNv2, DeformConv, ModulatedDeformConv
from .kinds import KINDS, BlockMaps, ContextMaps, CoordMaps, DeformMaps, SpaceToDepthMaps, WindowAttentionMaps
from .spd import SpaceToDepth, SPDConv, space_to_depth

__all__ = [
    "ACmix", "CB2d", "CA", "DCN", "DCNv2", "SPDConv", "space_to_depth",
    "GlobalContextBlock", "CoordinateAttention", "DeformConv", "ModulatedDeformConv", "SpaceToDepth",
    "capture", "find_blocks", "recognise", "recognition_of", "Recognition", "FoundBlock", "Candidate", "KINDS",
    "BlockMaps", "ContextMaps", "CoordMaps", "DeformMaps", "SpaceToDepthMaps", "WindowAttentionMaps",
]

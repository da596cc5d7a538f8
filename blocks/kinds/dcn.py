"""DCN, deformable convolution (``blocks.deform``): its record (offsets and mask in torchvision's layout), how a
block is recognised as one by what it computes (a ``deform_conv2d`` call, or sampling written by hand at a
regular k x k grid plus predicted offsets) and the structures read by their names (ours, mmcv, the forks').
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import DeformConv2d

from ..deform import split_offset_output
from ..observe import Frame, Op, Pattern, effective_shape, storage_key
from .base import BlockMaps, Call, Flattening, Kind, Parts, Reader, flattened, has_all, last_output


@dataclass(frozen=True)
class DeformMaps(BlockMaps):
    """Deformable convolution. ``offsets`` ``(N, G, kh*kw, 2, H', W')``: for offset group ``g`` and
    kernel tap ``t = i*kw + j``, the ``[dy, dx]`` displacement in input pixels of that tap's sampling
    point from its regular grid position ``(stride*y - padding + dilation*i, ...)``; ``mask``
    ``(N, G, kh*kw, H', W')``: DCNv2 modulation, the factor each tap's sample is weighted by (a sigmoid in
    (0, 1) in mmcv and torchvision's recipe; some forks use ``2 * sigmoid``), ``None`` for DCNv1.
    Heatmap: mean offset length ``|(dy, dx)|`` over groups and taps, in input pixels."""

    type: ClassVar[str] = "dcn"
    title: ClassVar[str] = "DCN mean offset length"
    meaning: ClassVar[str] = ("mean offset length: how far the deformable sampling points move from the regular grid")
    unit: ClassVar[str] = "input-feature pixels"
    offsets: Tensor
    mask: Tensor | None
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def compute_heatmap(self) -> Tensor:
        dy, dx = self.offsets.float().unbind(dim=3)  # (norm over that size-2, strided axis is ~100x slower)
        return torch.sqrt(dy.square() + dx.square()).mean(dim=(1, 2))

    def summary(self, i: int) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "modulated": self.mask is not None}

    def arrays(self, i: int) -> dict[str, Tensor]:
        return {"offsets": self.offsets[i]} | ({} if self.mask is None else {"mask": self.mask[i]})


def _deform_maps(offsets: Tensor, mask: Tensor | None, kernel_size, stride, padding, dilation) -> DeformMaps:
    kernel_size = _pair(kernel_size)
    taps = kernel_size[0] * kernel_size[1]
    n, _, height, width = offsets.shape
    return DeformMaps(offsets=offsets.reshape(n, -1, taps, 2, height, width),
                      mask=None if mask is None else mask.reshape(n, -1, taps, height, width),
                      kernel_size=tuple(kernel_size), stride=tuple(_pair(stride)), padding=tuple(_pair(padding)),
                      dilation=tuple(_pair(dilation)))


def _module_deform_maps(offsets: Tensor, mask: Tensor | None, module: nn.Module) -> DeformMaps:
    return _deform_maps(offsets, mask, module.kernel_size, module.stride, module.padding,
                        getattr(module, "dilation", 1))


class DeformPattern(Pattern):
    """DCN: every ``deform_conv2d`` call (torchvision's op, its ``DeformConv2d`` module, ``torch.ops``): the
    offsets and mask it receives, whatever computed them (one conv or two, any activation of the mask), with
    the kernel size of its weight and the stride, padding and dilation it is given. And deformable sampling
    written by hand (``grid_sample`` on offset-shifted grids, or ``floor`` then gathering the corners): positions
    that are a regular ``kh x kw`` grid plus offsets one of the block's children predicts, found by running the
    call again with that child's output replaced (zeros, ones, each axis's index), once per input shape; the
    mask is the factor that then multiplies the samples, one value per sampling point."""

    kind = "dcn"
    description = ("a torchvision deform_conv2d call (the offsets and mask it is given), or sampling by grid_sample / "
                   "floor at a regular k x k grid plus offsets predicted by one of the block's children")
    OP = "torchvision::deform_conv2d"

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        if op.name == self.OP:
            frame = self.owner(frames, lambda frame: True)  # the innermost module making the call
            if frame is not None:
                frame.state.setdefault(self.kind, []).append(op.args)
            return
        if op.name in PADS:
            for frame in frames:
                if frame.input is not None and op.args[0] is frame.input:
                    frame.state.setdefault(PADDED, tuple(op.args[1]))
        if op.name in SAMPLERS:
            frame = self.owner(frames, lambda frame: frame.input is not None)
            wanted = None if frame is None or frame.detail is None else frame.detail.get("samplings", {})
            occurrence = None if frame is None else (op.name, frame.counts[op.name])
            if frame is not None and (wanted is None or occurrence in wanted):
                positions = _sampled_positions(op)
                if positions is not None:
                    frame.state.setdefault(SAMPLED, []).append(
                        {"occurrence": occurrence, "positions": positions, "shapes": _shapes(op),
                         "taint": {storage_key(op.out)}, "mask": None})
            return
        for frame in frames:
            for sampled in frame.state.get(SAMPLED, ()):
                _follow_samples(op, sampled)

    def finish(self, frame: Frame) -> list[BlockMaps]:
        records = []
        for args in frame.state.get(self.kind, ()):
            # the op's schema: input, weight, offset, mask, bias, stride, padding, dilation (h, w each), groups,
            # offset groups, use_mask
            _, weight, offset, mask, _, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, *_, use_mask = args
            records.append(_deform_maps(offset, mask if use_mask else None, tuple(weight.shape[-2:]),
                                        (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w)))
        samplings = frame.state.get(SAMPLED, ())
        if not samplings:
            return records
        known = frame.detail if frame.detail is not None else {"samplings": {}, "layouts": {}}
        for sampled in samplings:
            layout = _layout_for(frame, sampled, known)
            if layout is None:
                if sampled["occurrence"][0] in GRID_SAMPLERS and frame.detail is None:
                    frame.candidates.append("samples with grid_sample, but not at a regular k x k grid plus offsets "
                                            "that one of its children predicts (not a deformable convolution)")
                continue
            records.append(layout.record(sampled["positions"][0], sampled["mask"]))
        if known["samplings"]:
            frame.detail = known
        return records


SAMPLERS = ("aten::grid_sampler_2d", "aten::cudnn_grid_sampler", "aten::floor")
GRID_SAMPLERS = SAMPLERS[:2]
PADS = ("aten::constant_pad_nd",)
SAMPLED, PADDED = "dcn:sampled", "dcn:padded"  # frame state: sampling operations seen, the padding of the input
MAX_LAYOUTS = 16  # input shapes remembered per block (each new one costs a few runs of the block)
MAX_SOURCES = 4  # children tried as the offsets' source (two runs of the block each), the nearest first


def _shapes(op: Op) -> tuple:
    return tuple(tuple(tensor.shape) for tensor in op.tensors)


def _sampled_positions(op: Op) -> tuple[Tensor, Tensor | None, tuple[int, int] | None] | None:
    """Where a sampling operation reads: every coordinate, flat, in pixels of the tensor it samples (float64);
    which are rows where the operation says (grid_sample's last axis is x, y), and the sampled (H, W). A floor's
    input: positions of the block's (padded) input, rows and columns not told apart."""
    if op.name in GRID_SAMPLERS:
        source, grid = op.args[0], op.args[1]
        if source.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2 or not grid.is_floating_point():
            return None
        align_corners = bool(op.args[4]) if op.name == "aten::grid_sampler_2d" else True
        height, width = source.shape[-2:]
        size = torch.tensor([width, height], dtype=torch.float64, device=grid.device)
        normalised = grid.double()
        pixels = (normalised + 1) / 2 * (size - 1) if align_corners else ((normalised + 1) * size - 1) / 2
        rows = torch.tensor([False, True], device=grid.device).repeat(grid.numel() // 2)
        return pixels.flatten(), rows, (height, width)
    positions = op.args[0]
    if not isinstance(positions, Tensor) or not positions.is_floating_point() or positions.dim() < 3:
        return None
    return positions.double().flatten(), None, None


def _follow_samples(op: Op, sampled: dict) -> None:
    """What the samples become: every tensor computed from them; the first factor not computed from them that
    has one value per sampling point (broadcast or repeated over the channels) is the modulation mask."""
    tensors = op.tensors
    taint = sampled["taint"]
    keys = [storage_key(tensor) for tensor in tensors]
    if not any(key in taint for key in keys):
        return
    if sampled["mask"] is None and op.name in ("aten::mul.Tensor", "aten::mul_.Tensor") and len(tensors) == 2:
        factor = tensors[1] if keys[0] in taint else tensors[0]
        if storage_key(factor) not in taint:
            points = sampled["positions"][0].numel() // 2
            sampled["mask"] = _per_point(factor, points)
    if op.out is not None:
        taint.add(storage_key(op.out))


def _per_point(factor: Tensor, points: int) -> Tensor | None:
    """``factor`` flat, one value per sampling point, if it is that (with one axis it is constant along, its
    channels, left out)."""
    if factor.numel() == points:
        return factor.reshape(-1)
    if factor.numel() % points or factor.dim() < 2:
        return None
    copies = factor.numel() // points
    shape = effective_shape(factor)
    for axis, size in enumerate(factor.shape):
        if size == copies and (shape[axis] == 1 or torch.equal(factor, factor.narrow(axis, 0, 1).expand_as(factor))):
            return factor.select(axis, 0).reshape(-1)
    return None


@dataclass(frozen=True)
class _SamplingLayout:
    """How a sampling operation's coordinates are a deformable convolution's taps: ``rows`` / ``columns``
    ``(N, G, kh*kw, H', W')``, the flat index of each tap's row and column coordinate among the operation's
    positions; ``regular``: the positions with zero offsets; ``points``: each row coordinate's rank among the
    row coordinates (the order of one value per sampling point, the mask's); ``offset_elements``: where in the
    source child's output the offsets are (True), the rest (a mask's logits) not."""

    rows: Tensor
    columns: Tensor
    regular: Tensor
    points: Tensor
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    offset_elements: Tensor

    def record(self, positions: Tensor, mask: Tensor | None) -> DeformMaps:
        shift = positions - self.regular
        offsets = torch.stack([shift[self.rows], shift[self.columns]], dim=3).float()
        if mask is not None and mask.numel() == int(self.points.max()) + 1:
            mask = mask[self.points[self.rows]]
        else:
            mask = None
        return DeformMaps(offsets=offsets, mask=mask, kernel_size=self.kernel_size, stride=self.stride,
                          padding=self.padding, dilation=self.dilation)


def _layout_for(frame: Frame, sampled: dict, known: dict) -> _SamplingLayout | None:
    """The layout of one sampling operation at this call's shapes: remembered, else found by running the call
    again (``_find_layout``)."""
    occurrence = sampled["occurrence"]
    key = (occurrence, sampled["shapes"], tuple(frame.input.shape))
    if key in known["layouts"]:
        return known["layouts"][key]
    if frame.replay is None:
        return None
    sources = [known["samplings"][occurrence]] if occurrence in known["samplings"] else None
    found = _find_layout(frame, sampled, sources)
    if found is None:
        return None
    source, layout = found
    known["samplings"][occurrence] = source
    if len(known["layouts"]) >= MAX_LAYOUTS:
        known["layouts"].pop(next(iter(known["layouts"])))
    known["layouts"][key] = layout
    return layout


def _replayed_positions(frame: Frame, occurrence: tuple[str, int], outputs: dict) -> Tensor | None:
    name, count = occurrence
    ops = [op for op in frame.replay(outputs) if op.name == name]
    if len(ops) < count:
        return None
    positions = _sampled_positions(ops[count - 1])
    return None if positions is None else positions[0]


def _find_layout(frame: Frame, sampled: dict, sources: list[str] | None) -> tuple[str, _SamplingLayout] | None:
    """Which child's output the sampling positions add to the regular grid, and how: run the call with that
    output replaced by zeros (the regular grid), ones (each coordinate's scale), then each axis's index (which
    element of the output each coordinate adds)."""
    occurrence, (positions, rows, size) = sampled["occurrence"], sampled["positions"]
    if sources is None:
        seen: dict[str, Tensor] = {}
        spies = {name: (lambda output, name=name: seen.setdefault(name, output))
                 for name, _ in frame.module.named_children()}
        ops = frame.replay(spies)
        name, count = occurrence
        calls = [i for i, op in enumerate(ops) if op.name == name]
        sampled_at = calls[count - 1] if len(calls) >= count else len(ops)
        made_at = {id(op.out): i for i, op in enumerate(ops) if op.out is not None}
        sources = [child for child, output in reversed(seen.items())  # the last called before the sampling first
                   if isinstance(output, Tensor) and output.dim() == 4 and output.is_floating_point()
                   and made_at.get(id(output), -1) < sampled_at][:MAX_SOURCES]
    pad = _input_padding(frame, size)
    for source in sources:
        try:
            regular = _replayed_positions(frame, occurrence, {source: torch.zeros_like})
            ones = _replayed_positions(frame, occurrence, {source: torch.ones_like})
            if regular is None or ones is None or regular.shape != positions.shape:
                continue
            scale = ones - regular
            fed = scale.abs() > 1e-3
            if not fed.any():
                continue
            where = []
            shape = None
            for axis in range(4):
                def code(output, axis=axis):
                    nonlocal shape
                    shape = output.shape
                    index = torch.arange(1, output.shape[axis] + 1, dtype=output.dtype, device=output.device)
                    return index.view([-1 if a == axis else 1 for a in range(output.dim())]).expand_as(output).clone()
                coded = _replayed_positions(frame, occurrence, {source: code})
                step = (coded - regular)[fed] / scale[fed]
                index = step.round()
                if (step - index).abs().max() > 0.05 or index.min() < 1 or index.max() > shape[axis]:
                    break
                where.append(index.long() - 1)
            else:
                layout = _fit_taps(torch.stack(where, 1), regular, fed, None if rows is None else rows, shape, pad)
                if layout is not None:
                    return source, layout
        except Exception:  # noqa: BLE001 - a child whose output cannot be replaced so: not the source
            continue
    return None


def _input_padding(frame: Frame, size: tuple[int, int] | None) -> tuple[int, int]:
    """(top, left) padding of the block's input in the tensor sampled: from the sampled size (grid_sample), else
    the block's own padding of its input."""
    x = frame.input
    if size is not None:
        for height, width in ((x.shape[-2], x.shape[-1]), (x.shape[1], x.shape[2])):  # channels first or last
            if size[0] >= height and size[1] >= width and (size[0] - height) % 2 == 0 and (size[1] - width) % 2 == 0:
                return (size[0] - height) // 2, (size[1] - width) // 2
        return 0, 0
    pads = frame.state.get(PADDED, ())
    return (int(pads[2]) if len(pads) >= 4 else 0), (int(pads[0]) if pads else 0)


def _fit_taps(where: Tensor, regular: Tensor, fed: Tensor, rows: Tensor | None, shape: torch.Size,
              pad: tuple[int, int]) -> _SamplingLayout | None:
    """The kernel, stride, dilation and padding for which the fed coordinates at zero offsets are a regular grid:
    each output channel of the source is one coordinate (rows: ``stride*y - padding + dilation*i``, columns the
    same in x) of one tap; row and column channels pair up in their order, taps group by ``kh*kw``. ``where``: the
    source element (4 axes) of each fed coordinate."""
    flat = fed.nonzero()[:, 0]
    values = regular[fed]
    for n_axis, c_axis, y_axis, x_axis in ((0, 1, 2, 3), (0, 3, 1, 2)):  # channels first, channels last
        n, c, height, width = shape[n_axis], shape[c_axis], shape[y_axis], shape[x_axis]
        if height < 2 or width < 2:
            continue
        grid = regular.new_full((n, c, height, width), math.nan)
        index = torch.full((n, c, height, width), -1, dtype=torch.long, device=regular.device)
        spot = (where[:, n_axis], where[:, c_axis], where[:, y_axis], where[:, x_axis])
        grid[spot], index[spot] = values, flat
        used = (index >= 0).flatten(1).any(0).view(c, height, width).any(2).any(1)  # channels that are coordinates
        grid, index = grid[:, used], index[:, used]
        if (index < 0).any() or len(torch.unique(index)) != index.numel():
            continue  # not every position of each coordinate channel, or one coordinate twice
        down, across = grid.diff(dim=2), grid.diff(dim=3)
        is_row = (across.abs() < 1e-3).all(3).all(2).all(0)  # a row coordinate does not change along x
        is_column = (down.abs() < 1e-3).all(3).all(2).all(0)
        if not (is_row ^ is_column).all() or is_row.sum() != is_column.sum() or not is_row.any():
            continue
        if rows is not None and not (rows[index[:, is_row]].all() and not rows[index[:, is_column]].any()):
            continue
        stride_h, stride_w = down[:, is_row].flatten(), across[:, is_column].flatten()
        stride = (round(float(stride_h[0])), round(float(stride_w[0])))
        if min(stride) < 1 or (stride_h - stride[0]).abs().max() > 1e-3 or (stride_w - stride[1]).abs().max() > 1e-3:
            continue
        row_start, column_start = grid[0, is_row, 0, 0], grid[0, is_column, 0, 0]
        row_taps, column_taps = _taps_of(row_start), _taps_of(column_start)
        if row_taps is None or column_taps is None:
            continue
        (i, first_row, dil_h, kh), (j, first_column, dil_w, kw) = row_taps, column_taps
        taps = kh * kw
        if len(i) % taps:
            continue
        groups = len(i) // taps
        tap = (i * kw + j).view(groups, taps)
        if not (tap.sort(dim=1).values == torch.arange(taps, device=tap.device)).all():
            continue
        padding = (pad[0] - first_row, pad[1] - first_column)
        if any(abs(p - round(p)) > 1e-3 for p in padding):
            continue
        order = tap.argsort(dim=1)  # the pairs of each group in tap order t = i * kw + j
        pairs = (order + torch.arange(groups, device=order.device)[:, None] * taps).flatten()
        row_index = index[:, is_row][:, pairs].view(n, groups, taps, height, width)
        column_index = index[:, is_column][:, pairs].view(n, groups, taps, height, width)
        is_row_coordinate = torch.zeros_like(fed)
        is_row_coordinate[index[:, is_row].flatten()] = True
        points = torch.cumsum(is_row_coordinate.long(), 0) - 1
        offset_elements = torch.zeros(shape, dtype=torch.bool, device=where.device)
        offset_elements[tuple(where.T)] = True
        return _SamplingLayout(row_index, column_index, regular, points, (kh, kw), stride,
                               (round(padding[0]), round(padding[1])), (dil_h, dil_w), offset_elements)
    return None


def _taps_of(starts: Tensor) -> tuple[Tensor, float, int, int] | None:
    """From the regular position of each coordinate channel at output (0, 0): its tap index along the axis, the
    first tap's position, the dilation and the kernel size; None unless they are ``first + dilation * i``."""
    levels = torch.unique((starts * 1000).round()) / 1000
    kernel = len(levels)
    dilation = round(float(levels[1] - levels[0])) if kernel > 1 else 1
    expected = levels[0] + dilation * torch.arange(kernel, dtype=levels.dtype, device=levels.device)
    if dilation < 1 or (levels - expected).abs().max() > 1e-3:
        return None
    taps = ((starts - levels[0]) / dilation).round().long()
    return taps, float(levels[0]), dilation, kernel


OFFSET_CONVS = ("conv_offset", "conv_offset_mask", "conv_offset2d")  # mmcv; CenterNet DCNv2 / YOLO forks; older forks
OFFSET_GROUPS = ("deform_groups", "deformable_groups", "offset_groups")


def _offset_conv(module: nn.Module) -> str:
    """The name of the module's offset conv ("" if none)."""
    return next((name for name in OFFSET_CONVS if isinstance(getattr(module, name, None), nn.Conv2d)), "")


def _is_offset_conv_dcn(module: nn.Module) -> bool:
    """A deformable conv that computes its offsets (and DCNv2 mask) with one conv beside its own ``weight``."""
    return (bool(_offset_conv(module)) and isinstance(getattr(module, "weight", None), nn.Parameter)
            and has_all(module, "kernel_size", "stride", "padding"))


def _offset_groups(module: nn.Module, raw: Tensor) -> tuple[int, int]:
    """``(offset groups, taps)`` of a module's offset conv output ``raw``: the groups its attribute says, else DCNv2
    when the channels split in thirds, DCNv1 otherwise."""
    kernel_size = _pair(module.kernel_size)
    taps = kernel_size[0] * kernel_size[1]
    groups = next((int(getattr(module, name)) for name in OFFSET_GROUPS if hasattr(module, name)), None)
    if groups is None:
        modulated = raw.shape[1] % (3 * taps) == 0 and raw.shape[1] % (2 * taps) != 0
        groups = raw.shape[1] // ((3 if modulated else 2) * taps)
    return groups, taps


def _build_offset_conv_dcn(module: nn.Module, call: Call, parts: Parts) -> DeformMaps:
    """The offset conv's output is ``[offsets | mask logits]``: ``2*G*k*k`` offset channels in torchvision's
    layout (mmcv and the forks' ``o1, o2, mask = chunk(out, 3); offset = cat(o1, o2)`` alike), then, for
    DCNv2, ``G*k*k`` mask logits (sigmoid)."""
    raw = last_output(parts, _offset_conv(module))
    groups, taps = _offset_groups(module, raw)
    modulated = raw.shape[1] == 3 * groups * taps
    offsets, mask = split_offset_output(raw, groups, tuple(_pair(module.kernel_size)), modulated)
    return _module_deform_maps(offsets, mask, module)


def _build_torchvision_deform(module: nn.Module, call: Call, parts: Parts) -> DeformMaps:
    named = dict(zip(("input", "offset", "mask"), call.args)) | call.kwargs
    return _module_deform_maps(named["offset"], named.get("mask"), module)


DCN_READERS = (
    Reader("deformable conv with its offset conv (ours, mmcv DeformConv2dPack / ModulatedDeformConv2dPack, "
           "DCNv2 conv_offset_mask forks, conv_offset2d)", _is_offset_conv_dcn, _build_offset_conv_dcn,
           lambda module: (_offset_conv(module),)),
    Reader("torchvision DeformConv2d fed by any offset conv", lambda module: isinstance(module, DeformConv2d),
           _build_torchvision_deform),
)


def _flatten_dcn(module: nn.Module, reader: Reader | None, detail: Any) -> Flattening:
    """Zero offsets where they are made: the offset channels of a known structure's offset conv (its mask logits
    kept), the offset elements of the child a hand-written sampling reads them from, and any ``deform_conv2d`` call's
    offset argument."""
    outputs: dict[str, Any] = {}
    if reader is DCN_READERS[0]:
        outputs[_offset_conv(module)] = lambda raw: _without_offsets(module, raw)
    elif reader is None:  # by computation: where its own sampling was found to read them (at this input's shape)
        for source in (detail or {}).get("samplings", {}).values():
            outputs[source] = lambda raw: _zero_offset_elements(raw, detail["layouts"].values())

    def rewrite(name: str, args: tuple, kwargs: dict, run, frame: Frame):
        if name == DeformPattern.OP:
            flattened(frame)
            args = (*args[:2], torch.zeros_like(args[2]), *args[3:])  # input, weight, offset, ...
        return run(args, kwargs)

    return Flattening(rewrite=rewrite, outputs=outputs)


def _without_offsets(module: nn.Module, raw: Tensor) -> Tensor:
    """The offset conv's output ``[offsets | mask logits]`` with the offsets zero."""
    groups, taps = _offset_groups(module, raw)
    flat = raw.clone()
    flat[:, :2 * groups * taps] = 0
    return flat


def _zero_offset_elements(raw: Tensor, layouts) -> Tensor:
    """The source child's output with the elements a sampling layout adds to its grid zero (the same object when no
    layout knows its shape)."""
    for layout in layouts:
        if tuple(layout.offset_elements.shape) == tuple(raw.shape):
            return raw.masked_fill(layout.offset_elements.to(raw.device), 0)
    return raw


KIND = Kind(DeformMaps, DeformPattern(), DCN_READERS,
            "the offsets set to zero: every tap samples its regular grid position (a plain convolution), the "
            "modulation mask kept", _flatten_dcn)

"""CA, coordinate attention (``blocks.coord``): its record (the row and column gates), how a block is recognised
as one by what it computes (gates broadcast along rows and along columns that multiply its input, or a projection
of it) and the structures read by their names (the official CoordAtt and the forks' copies).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..observe import Frame, Op, Pattern, effective_shape, shares_storage
from .base import BlockMaps, Call, Flattening, Kind, Parts, Reader, flattened, has_all, last_output


@dataclass(frozen=True)
class CoordMaps(BlockMaps):
    """Coordinate attention. ``a_h`` ``(N, C, H)`` and ``a_w`` ``(N, C, W)``: the gate weights (sigmoid in
    the official code, in (0, 1); a fork's own gate otherwise) with which each channel keeps each row and
    each column. Heatmap: ``mean_c a_h[c] (x) a_w[c]``, the mean factor by which the block scales each
    position."""

    type: ClassVar[str] = "ca"
    title: ClassVar[str] = "CA mean a_h x a_w"
    meaning: ClassVar[str] = "mean over channels of a_h x a_w: the factor by which the block keeps each position"
    unit: ClassVar[str] = "factor in (0, 1)"
    a_h: Tensor
    a_w: Tensor

    def compute_heatmap(self) -> Tensor:
        return torch.einsum("nch,ncw->nhw", self.a_h.float(), self.a_w.float()) / self.a_h.shape[1]

    def summary(self, i: int) -> dict[str, Any]:
        return {"a_h_mean": self.a_h[i].mean(0), "a_w_mean": self.a_w[i].mean(0)}

    def arrays(self, i: int) -> dict[str, Tensor]:
        return {"a_h": self.a_h[i], "a_w": self.a_w[i]}


def _gate_of(pre_gate: Tensor, parts: Parts) -> Tensor:
    """The gate applied to ``pre_gate`` (a ``conv_h`` / ``conv_w`` output): the output of the parameter-free
    submodule called on that very tensor (``nn.Sigmoid``, ``h_sigmoid``, ``nn.Hardsigmoid`` ...), else its
    sigmoid (the official ``conv_h(x).sigmoid()``)."""
    for calls in parts.values():
        for call in calls:
            if call.args and call.args[0] is pre_gate and call.output is not pre_gate:
                return call.output
    return pre_gate.sigmoid()


def _build_ca(module: nn.Module, call: Call, parts: Parts) -> CoordMaps:
    a_h = _gate_of(last_output(parts, "conv_h"), parts)  # (N, C, H, 1)
    a_w = _gate_of(last_output(parts, "conv_w"), parts)  # (N, C, 1, W)
    return CoordMaps(a_h=a_h[..., 0], a_w=a_w[:, :, 0, :])


def _ca_parts(module: nn.Module) -> tuple[str, ...]:
    """``conv_h``, ``conv_w`` and every parameter-free child, one of which may be the gate."""
    gates = tuple(name for name, child in module.named_children()
                  if name not in ("conv_h", "conv_w") and next(child.parameters(), None) is None)
    return ("conv_h", "conv_w", *gates)


class CoordPattern(Pattern):
    """CA: two gates multiply the block's input (or a view of it: channel groups, groups folded into the batch;
    or a projection of it, the same rows and columns, other channels, when the input itself is not gated),
    one broadcast along rows ``(N, C, H, 1)`` and one along columns ``(N, C, 1, W)``, in either order, through
    ``expand_as`` or broadcasting, any activation. Gates of channel groups are joined along the input's
    channels, each where its group lies in the input."""

    kind = "ca"
    description = ("gates that multiply the block's input (or a projection of it), one broadcast along rows "
                   "(N, C, H, 1) and one along columns (N, C, 1, W)")
    MULS = ("aten::mul.Tensor", "aten::mul_.Tensor")

    def see(self, op: Op, frames: list[Frame], scratch: dict) -> None:
        if op.name not in self.MULS or len(op.args) < 2 or not all(isinstance(a, Tensor) for a in op.args[:2]):
            return
        a, b = op.args[:2]
        if a.dim() != 4 or b.dim() != 4:
            return
        out = op.out
        roles = {"a": _gate_role(a), "b": _gate_role(b)}
        chains = scratch.setdefault("chains", {})  # id(product so far) -> chain
        products = scratch.setdefault("products", {})  # id(row gate * column gate) -> (row, column)
        if {roles["a"], roles["b"]} == {"rows", "columns"}:
            row, column = (a, b) if roles["a"] == "rows" else (b, a)
            products[id(out)] = (out, row, column)
            return
        for full, gate, role in ((a, b, roles["b"]), (b, a, roles["a"])):
            if _gate_role(full) != "full":
                continue
            if role == "full" and products.get(id(gate), (None,))[0] is gate:
                gates = products[id(gate)][1:]
            elif role in ("rows", "columns"):
                gates = (gate, None) if role == "rows" else (None, gate)
            else:
                if role in ("channels", "positions"):
                    self._note_other_gate(full, role, out, frames, scratch)
                continue
            chain = chains.get(id(full))
            if chain is None or chain["product"] is not full:
                frame = self.owner(frames, lambda frame: _part_of(full, frame.input)) or \
                    self.owner(frames, lambda frame: _projection_of(full, frame.input))
                if frame is None:
                    continue
                chain = {"root": full, "rows": None, "columns": None}
                frame.state.setdefault(self.kind, []).append(chain)
            for axis, value in zip(("rows", "columns"), gates):
                if value is not None:
                    chain[axis] = value if chain[axis] is None else chain[axis] * value
            chain["product"] = out
            chains[id(out)] = chain
            return

    def _note_other_gate(self, full: Tensor, role: str, out: Tensor, frames: list[Frame], scratch: dict) -> None:
        """A gate of another shape (SE's, CBAM's): said as a candidate of the module it gates."""
        others = scratch.setdefault("others", {})  # id(gated tensor) -> (it, the module's call)
        known = others.get(id(full))
        frame = next((frame for frame in reversed(frames) if _part_of(full, frame.input)), None) or \
            (known[1] if known and known[0] is full and any(f is known[1] for f in frames) else None)
        if frame is None:
            return
        others[id(out)] = (out, frame)
        frame.candidates.append(
            "a channel gate (N, C, 1, 1) multiplies its input (squeeze-excitation style), not a kind attnlens reads"
            if role == "channels" else
            "a spatial gate (N, 1, H, W) multiplies its input (CBAM / spatial attention style), not a kind attnlens "
            "reads")

    def finish(self, frame: Frame) -> list[BlockMaps]:
        x = frame.input
        records, covered = [], None
        groups: list[list[tuple[dict, Tensor]]] = []
        for chain in frame.state.get(self.kind, ()):
            if chain["rows"] is None or chain["columns"] is None:
                frame.candidates.append(f"a gate along {'rows' if chain['columns'] is None else 'columns'} only "
                                        f"multiplies its input (CA gates both)")
                continue
            planes = _planes_in(chain["root"], x)  # (n', c', 2): where each plane of the root lies in x
            if planes is None:  # gating a projection of x, or (named) a tensor inside it: that tensor's channels
                if frame.forced == self.kind or _projection_of(chain["root"], x):
                    records.append(_joined_gates([(chain, _planes_in(chain["root"], chain["root"]))], chain["root"]))
                continue
            seen = torch.zeros(x.shape[:2], dtype=torch.bool)
            seen[planes[..., 0].flatten(), planes[..., 1].flatten()] = True
            if covered is None or (covered & seen).any():
                groups.append([])
                covered = torch.zeros_like(seen)
            groups[-1].append((chain, planes))
            covered |= seen
        for group in groups:
            records.append(_joined_gates(group, x))
        return records


def _gate_role(tensor: Tensor) -> str:
    """What a factor of a product is to CA: ``full`` (varies along rows and columns), a gate along ``rows``
    ``(N, C, H, 1)`` or ``columns`` ``(N, C, 1, W)``, a ``channels`` gate ``(N, C, 1, 1)``, or a
    ``positions`` gate ``(N, 1, H, W)``."""
    _, channels, height, width = effective_shape(tensor)
    if height > 1 and width > 1:
        return "positions" if channels == 1 else "full"
    if height > 1:
        return "rows"
    if width > 1:
        return "columns"
    return "channels" if channels > 1 else "scalar"


def _part_of(tensor: Tensor, x: Tensor | None) -> bool:
    """Whether ``tensor`` is ``x`` or a view of it with the same rows and columns (a channel group, groups
    folded into the batch)."""
    if x is None or tensor.shape[-2:] != x.shape[-2:]:
        return False
    if tensor is x:
        return True
    return shares_storage(tensor, x) and tensor.stride()[-2:] == x.stride()[-2:]


def _projection_of(tensor: Tensor, x: Tensor | None) -> bool:
    """Whether ``tensor`` can be a projection of ``x`` (a 1x1 conv of it, any channels): the same images, rows and
    columns, not a view of it."""
    return x is not None and tensor.shape[0] == x.shape[0] and tensor.shape[-2:] == x.shape[-2:] and \
        not shares_storage(tensor, x)


def _planes_in(root: Tensor, x: Tensor) -> Tensor | None:
    """``(n', c', 2)``: the (image, channel) of ``x`` that each (n', c') plane of its view ``root`` is (None if
    ``root`` is no view of ``x``)."""
    if root is not x and not shares_storage(root, x):
        return None
    if root is x or root.shape == x.shape and root.stride() == x.stride() and \
            root.storage_offset() == x.storage_offset():
        n, c = x.shape[:2]
        return torch.stack(torch.meshgrid(torch.arange(n), torch.arange(c), indexing="ij"), -1)
    if x.stride(1) == 0 or x.stride(0) == 0:
        return None
    start = root.storage_offset() - x.storage_offset()
    offsets = start + torch.arange(root.shape[0])[:, None] * root.stride(0) + \
        torch.arange(root.shape[1])[None, :] * root.stride(1)
    image, rest = offsets.div(x.stride(0), rounding_mode="floor"), offsets.remainder(x.stride(0))
    channel, misfit = rest.div(x.stride(1), rounding_mode="floor"), rest.remainder(x.stride(1))
    if (misfit != 0).any() or (image < 0).any() or (image >= x.shape[0]).any() or (channel >= x.shape[1]).any():
        return None
    return torch.stack([image, channel], -1)


def _joined_gates(group: list[tuple[dict, Tensor]], x: Tensor) -> CoordMaps:
    """One record from the chains of one call: each chain's gates put at the channels of ``x`` it gates (the
    channels no chain gates are left out)."""
    n, c, height, width = x.shape
    a_h = x.new_zeros(n, c, height, dtype=torch.float32)
    a_w = x.new_zeros(n, c, width, dtype=torch.float32)
    covered = torch.zeros(n, c, dtype=torch.bool, device=x.device)
    for chain, planes in group:
        root_n, root_c = chain["root"].shape[:2]
        rows = chain["rows"].float().expand(root_n, root_c, height, -1)[..., 0]
        columns = chain["columns"].float().expand(root_n, root_c, -1, width)[:, :, 0]
        image, channel = planes[..., 0].flatten().to(x.device), planes[..., 1].flatten().to(x.device)
        a_h[image, channel] = rows.reshape(-1, height)
        a_w[image, channel] = columns.reshape(-1, width)
        covered[image, channel] = True
    keep = covered.all(dim=0)
    return CoordMaps(a_h=a_h[:, keep], a_w=a_w[:, keep])


CA_READERS = (Reader("CA / CoordAtt (official, pools made in forward, any activation or gate module)",
                     lambda module: has_all(module, "conv1", "bn1", "conv_h", "conv_w"), _build_ca, _ca_parts),)


def _flatten_ca(module: nn.Module, reader: Reader | None, detail: Any) -> Flattening:
    """Every row gate ``(N, C, H, 1)`` or column gate ``(N, C, 1, W)`` that multiplies a full map (or the other gate)
    is replaced by its mean over its rows / columns."""

    def rewrite(name: str, args: tuple, kwargs: dict, run, frame: Frame):
        if name not in CoordPattern.MULS or len(args) < 2 or not all(isinstance(a, Tensor) and a.dim() == 4
                                                                     for a in args[:2]):
            return run(args, kwargs)
        roles = [_gate_role(a) for a in args[:2]]
        factors = list(args)
        for i, role in enumerate(roles):
            if role in ("rows", "columns") and roles[1 - i] in ("full", "rows", "columns") and roles[1 - i] != role:
                gate = args[i]
                factors[i] = gate.mean(dim=-2 if role == "rows" else -1, keepdim=True).expand_as(gate)
                flattened(frame)
        return run(tuple(factors), kwargs)

    return Flattening(rewrite=rewrite)


KIND = Kind(CoordMaps, CoordPattern(), CA_READERS,
            "each gate replaced by its mean over its positions (a_h over the rows, a_w over the columns): the channel "
            "scale kept, the preference for rows and columns gone", _flatten_ca)

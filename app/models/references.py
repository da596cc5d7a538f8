"""Reference maps (class activation maps) at layers of a model, to set beside the blocks' maps.

For the activations ``A`` ``(N, C, h, w)`` of a layer and, for the gradient methods, ``G = d y / d A`` of a
scalar target score ``y`` (a class logit, a detection's class score or box), each method gives ``(N, h, w)``,
as pytorch-grad-cam defines it:

* ``gradcam`` (Selvaraju et al. 2017): ``ReLU(sum_c w_c A_c)``, ``w_c = mean_hw G_c``;
* ``gradcam++`` (Chattopadhay et al. 2018): ``w_c = sum_hw ReLU(G_c) a_c``, ``a_c = G_c^2 / (2 G_c^2 +
  sum_hw(A_c) G_c^3 + 1e-7)`` (0 where ``G_c = 0``), map ``ReLU(sum_c w_c A_c)``;
* ``layercam`` (Jiang et al. 2021): ``ReLU(sum_c ReLU(G_c) * A_c)``, weighted per position;
* ``eigencam`` (Muhammad & Yeasin 2020), no gradients and no target: the activations' projection on their
  first principal component (positions as samples, centred per channel), ``ReLU``'d. The component's sign is
  arbitrary in an SVD; it is chosen so that the projection rises with the summed activation ``sum_c A_c``.

At one layer a map is in the layer's units. At several (a detector's head inputs, one per scale) each layer's
map is scaled to [0, 1] (its minimum to 0, maximum to 1), brought to the finest layer's grid (bilinear), and
the mean of them is scaled to [0, 1] again, as pytorch-grad-cam fuses the layers of LayerCAM and the others
(without its 1e-7 in the scaling's denominator: ``_unit``).

Layers (``find_reference_layers``): for detectors the inputs of the detection head, for classifiers the last
feature stage; never a layer inside the output head. Hooks live only inside ``LayerActivations.kept``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .outputs import leading_output

__all__ = ["METHODS", "TARGET_KINDS", "LayerActivations", "Method", "ReferenceLayers", "find_reference_layers",
           "fuse", "gradients_of", "layer_output", "reference_maps"]

TARGET_KINDS = ("class", "box", "all")  # what of a detection the gradient methods explain: its class score, box, both
EPSILON = 1e-7  # pytorch-grad-cam's, in Grad-CAM++'s weights


def _grad_cam(activations: Tensor, gradients: Tensor) -> Tensor:
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1))


def _grad_cam_plus_plus(activations: Tensor, gradients: Tensor) -> Tensor:
    squared, cubed = gradients ** 2, gradients ** 3
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = squared / (2 * squared + total * cubed + EPSILON)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    weights = (F.relu(gradients) * alpha).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1))


def _layer_cam(activations: Tensor, gradients: Tensor) -> Tensor:
    return F.relu((F.relu(gradients) * activations).sum(dim=1))


def _eigen_cam(activations: Tensor, gradients: Tensor | None = None) -> Tensor:
    n, c, h, w = activations.shape
    samples = torch.nan_to_num(activations).flatten(2).transpose(1, 2)  # (N, h*w, C): positions as samples
    centred = samples - samples.mean(dim=1, keepdim=True)
    # X v for the first right singular vector v of the centred X, from the top eigenpair of its smaller Gram
    # matrix (float64): X^T X (C x C) gives v; X X^T (h*w square) gives u with X v = sqrt(lambda) u
    wide = centred.double()
    if h * w < c:
        pairs = torch.linalg.eigh(wide @ wide.transpose(1, 2))
        projection = pairs.eigenvectors[..., -1] * pairs.eigenvalues[..., -1:].clamp_min(0).sqrt()
    else:
        component = torch.linalg.eigh(wide.transpose(1, 2) @ wide).eigenvectors[..., -1]  # (N, C)
        projection = (wide @ component[..., None])[..., 0]
    projection = projection.to(centred.dtype)  # (N, h*w)
    strength = samples.sum(dim=2)
    agreement = ((projection - projection.mean(1, keepdim=True)) * (strength - strength.mean(1, keepdim=True))).sum(1)
    projection = projection * torch.where(agreement < 0, -1.0, 1.0)[:, None]
    return F.relu(projection).reshape(n, h, w)


@dataclass(frozen=True)
class Method:
    """A reference method: its name in words, whether it needs the target's gradients, what its map means."""

    name: str
    title: str
    gradients: bool
    compute: Callable[[Tensor, Tensor | None], Tensor]
    meaning: str

    def at_layer(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        """``(N, h, w)`` float32 at one layer (float32 whatever the forward's precision)."""
        return self.compute(activations.detach().float(), None if gradients is None else gradients.float())


METHODS: dict[str, Method] = {method.name: method for method in (
    Method("gradcam", "Grad-CAM", True, _grad_cam,
           "Grad-CAM: where the layer's features raise the target's score (ReLU of the activations weighted by their "
           "channel's mean gradient)"),
    Method("gradcam++", "Grad-CAM++", True, _grad_cam_plus_plus,
           "Grad-CAM++: as Grad-CAM, each channel weighted by its positive gradients, which the squared and cubed "
           "gradients weigh per position"),
    Method("layercam", "LayerCAM", True, _layer_cam,
           "LayerCAM: where the layer's features raise the target's score, position by position (ReLU of the "
           "activations times their positive gradient)"),
    Method("eigencam", "EigenCAM", False, _eigen_cam,
           "EigenCAM: the layer's activations projected on their first principal component (no gradients, no "
           "target: what the layer responds to most)"),
)}


def fuse(maps: Sequence[Tensor]) -> Tensor:
    """One map ``(N, h, w)`` of several layers' (module docstring); one layer's map unchanged."""
    if len(maps) == 1:
        return maps[0]
    finest = max((tuple(m.shape[-2:]) for m in maps), key=lambda shape: shape[0] * shape[1])
    scaled = [F.interpolate(_unit(m)[:, None], size=finest, mode="bilinear", align_corners=False)[:, 0] for m in maps]
    return _unit(torch.stack(scaled).mean(dim=0))


def _unit(maps: Tensor) -> Tensor:
    """Each map of ``(N, h, w)`` scaled to [0, 1]: minimum to 0, maximum to 1 (0 everywhere for a flat map).
    pytorch-grad-cam divides by the maximum + 1e-7 instead, which flattens maps whose values are all below ~1e-6
    (a real YOLOv8n with random weights: Grad-CAM's fused maximum came out 0.0002): here the maximum alone."""
    shifted = maps - maps.amin(dim=(1, 2), keepdim=True)
    top = shifted.amax(dim=(1, 2), keepdim=True)
    return torch.where(top > 0, shifted / top.clamp_min(torch.finfo(shifted.dtype).tiny), torch.zeros_like(shifted))


def gradients_of(score: Tensor, activations: Sequence[Tensor]) -> list[Tensor]:
    """``d score / d A`` at each layer (zeros at a layer the score does not reach). ``score``: a scalar (the sum
    of each image's own target score: images of a batch do not mix, so each gets its own gradient);
    ``ValueError`` if it depends on none of the layers."""
    if not score.requires_grad:
        raise ValueError("the target's score does not depend on the model's weights or input")
    found = torch.autograd.grad(score, list(activations), allow_unused=True)
    if all(gradient is None for gradient in found):
        raise ValueError("the target's score does not depend on these layers")
    return [torch.zeros_like(a) if g is None else g for a, g in zip(activations, found)]


def reference_maps(method: str, activations: Sequence[Tensor], gradients: Sequence[Tensor] | None = None) -> Tensor:
    """``method``'s map ``(N, h, w)`` over ``activations`` (one per layer, fused when several), float32, detached;
    the gradient methods need ``gradients`` (``gradients_of``)."""
    chosen = METHODS[method]
    if chosen.gradients and gradients is None:
        raise ValueError(f"{chosen.title} needs the target's gradients")
    given: Sequence[Tensor | None] = gradients if chosen.gradients and gradients is not None else [None] * len(activations)
    return fuse([chosen.at_layer(a, g) for a, g in zip(activations, given)]).detach()


def layer_output(output: Any) -> Tensor | None:
    """The ``(N, C, h, w)`` feature map a layer gives: its output, or the first tensor of a tuple / list."""
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, Tensor) and output.dim() == 4 and output.is_floating_point() else None


def _with_first(output: Any, feature: Tensor) -> Any:
    """``output`` with its leading feature map (``layer_output``'s) replaced by ``feature``."""
    if isinstance(output, Tensor):
        return feature
    return type(output)([_with_first(output[0], feature), *output[1:]])


class LayerActivations:
    """Keeps the outputs of ``module``'s layers ``names`` during a forward pass (``.outputs``, in ``names``'s
    order; ``ValueError`` for a layer the model lacks or cannot hook)."""

    def __init__(self, module: nn.Module, names: Sequence[str]):
        layers = dict(module.named_modules())
        for name in names:
            if name not in layers:
                raise ValueError(f"the model has no layer {name!r} for a reference map")
            if isinstance(layers[name], torch.jit.ScriptModule):
                raise ValueError(f"layer {name!r} is TorchScript, which supports no forward hooks: no reference map "
                                 f"can read it")
        self.names, self.layers = list(names), [layers[name] for name in names]
        self.kept_outputs: dict[str, Tensor] = {}

    @property
    def outputs(self) -> list[Tensor | None]:
        return [self.kept_outputs.get(name) for name in self.names]

    @contextmanager
    def kept(self, gradients: bool = False) -> Iterator[LayerActivations]:
        """Keep the layers' outputs while inside. ``gradients``: the forward runs under ``no_grad`` and the graph
        the gradient methods need starts at these layers: a kept feature map outside any graph yet is handed on
        as a leaf that requires grad, and grad mode is on for the rest of the forward (the caller's ``no_grad``
        restores it). A layer reached later, after another, stays in the graph: its gradient still flows back to
        the earlier one. Nothing before the first layer is recorded."""
        self.kept_outputs = {}

        def keep(name: str, module: nn.Module, args: tuple, output: Any) -> Any:
            feature = layer_output(output)
            if feature is None:
                return None
            if not gradients or feature.requires_grad:
                self.kept_outputs[name] = feature
                return None
            self.kept_outputs[name] = feature.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
            return _with_first(output, self.kept_outputs[name])

        handles = [layer.register_forward_hook(lambda m, a, out, name=name: keep(name, m, a, out))
                   for name, layer in zip(self.names, self.layers)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


@dataclass(frozen=True)
class ReferenceLayers:
    """What one forward pass showed: ``stage``, the last feature stage (the coarsest ``(N, C, h, w)`` map with
    ``h, w >= 2`` outside the head, the outermost layer giving it), and ``head_inputs``, the layers whose maps the
    output head takes, one per scale, finest first (empty where no head taking feature maps was found)."""

    stage: str | None
    head_inputs: tuple[str, ...] = ()

    def for_task(self, task: str) -> list[str]:
        """The default layers: the head's inputs for detectors, else the last stage."""
        if task == "detect" and self.head_inputs:
            return list(self.head_inputs)
        return [self.stage] if self.stage else []


def _tensors(value: Any) -> list[Tensor]:
    """The tensors in an output or an argument list (tuples, lists, dicts, nested)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _tensors(item)]
    return []


def _is_feature(tensor: Tensor) -> bool:
    return tensor.dim() == 4 and tensor.is_floating_point() and min(tensor.shape[-2:]) >= 2


def find_reference_layers(module: nn.Module, run: Callable[[], Any]) -> ReferenceLayers:
    """Call ``run()`` (one forward pass) and find the reference layers (``ReferenceLayers``).

    The output head: of the layers whose output holds a tensor of the model's predictions (the very tensor the
    output leads with, also inside a tuple, list or dict), the outermost that takes feature maps given by layers
    outside it (a wrapper of the whole network takes the image instead); else the innermost of them. Everything
    inside the head is left out; its inputs name the layers that gave them (the outermost giving that tensor)."""
    finished: list[tuple[str, Any]] = []
    taken: dict[str, list[Tensor]] = {}

    def started(name: str, args: tuple) -> None:
        taken[name] = _tensors(args)  # now: a YOLOv5 Detect overwrites its input list in place

    layers = [(name, layer) for name, layer in module.named_modules()
              if name and not isinstance(layer, torch.jit.ScriptModule)]
    handles = [layer.register_forward_pre_hook(lambda m, args, name=name: started(name, args)) for name, layer in layers]
    handles += [layer.register_forward_hook(lambda m, a, out, name=name: finished.append((name, out)))
                for name, layer in layers]
    try:
        output = run()
    finally:
        for handle in handles:
            handle.remove()
    givers: dict[int, list[str]] = {}  # tensor -> the layers whose output it is
    for name, out in finished:
        feature = layer_output(out)
        if feature is not None:
            givers.setdefault(id(feature), []).append(name)

    def inside(name: str, root: str | None) -> bool:
        return root is not None and (name == root or name.startswith(root + "."))

    def fed_from_outside(name: str) -> list[Tensor]:
        return [tensor for tensor in taken.get(name, []) if _is_feature(tensor)
                and any(not inside(giver, name) for giver in givers.get(id(tensor), []))]

    answer = {id(tensor) for tensor in _tensors(leading_output(output))}
    chain = sorted({name for name, out in finished if any(id(tensor) in answer for tensor in _tensors(out))},
                   key=lambda name: name.count("."))  # outermost first
    head = next((name for name in chain if fed_from_outside(name)), chain[-1] if chain else None)
    stage, stage_area = None, None
    for name, out in finished:
        feature = layer_output(out)
        if inside(name, head) or feature is None or min(feature.shape[-2:]) < 2:
            continue
        area = feature.shape[-2] * feature.shape[-1]
        if stage_area is None or area <= stage_area:
            stage, stage_area = name, area
    by_scale: dict[tuple[int, int], str] = {}
    inputs = fed_from_outside(head) if head else []
    for tensor in sorted(inputs, key=lambda t: -t.shape[-2] * t.shape[-1]):
        outside = [giver for giver in givers[id(tensor)] if not inside(giver, head)]
        by_scale.setdefault(tuple(tensor.shape[-2:]), min(outside, key=lambda name: name.count(".")))
    return ReferenceLayers(stage, tuple(by_scale.values()))

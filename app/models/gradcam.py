"""Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391) at one layer of a model, as a reference map.

For a scalar score ``y`` (a class logit, or a detection's confidence) and the layer's activations ``A``
``(N, C, h, w)``: channel weights ``w_c = mean over positions of dy/dA_c``, map ``ReLU(sum_c w_c A_c)``
``(N, h, w)``, in the layer's activation units. The layer defaults to the model's last feature stage
(``feature_layer``); users name another with ``--gradcam-layer``. The hook lives only inside
``LayerActivation`` (removed on exit), as ``attnlens.blocks.capture``'s do.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerActivation", "feature_layer", "grad_cam_map", "layer_output"]


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


class LayerActivation:
    """Keeps the output of ``module``'s layer ``name`` during a forward pass (``.output``)."""

    def __init__(self, module: nn.Module, name: str):
        layers = dict(module.named_modules())
        if name not in layers:
            raise ValueError(f"the model has no layer {name!r} for Grad-CAM")
        if isinstance(layers[name], torch.jit.ScriptModule):
            raise ValueError(f"layer {name!r} is TorchScript, which supports no forward hooks: Grad-CAM cannot read it")
        self.name, self.layer, self.output = name, layers[name], None

    @contextmanager
    def kept(self, graph_from_here: bool = False) -> Iterator[LayerActivation]:
        """Keep the layer's output while inside. ``graph_from_here``: the forward runs under ``no_grad`` and the
        graph Grad-CAM needs starts at this layer: its feature map is handed on as a leaf that requires grad, and
        grad mode is on for the rest of the forward (the caller's ``no_grad`` restores it). The score's gradient
        at the layer is the same; nothing before the layer is recorded (Grad-CAM's backward, and the forward's
        bookkeeping, cost only what lies after it)."""
        def keep(module: nn.Module, args: tuple, output: Any) -> Any:
            feature = layer_output(output)
            if not graph_from_here or feature is None:
                self.output = feature
                return None
            self.output = feature.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
            return _with_first(output, self.output)

        handle = self.layer.register_forward_hook(keep)
        try:
            yield self
        finally:
            handle.remove()


def grad_cam_map(activations: Tensor, score: Tensor) -> Tensor:
    """``ReLU(sum_c mean_hw(d score / d A_c) * A_c)`` ``(N, h, w)``, float32, detached; ``score``: a scalar
    (the sum of each image's own score: images of a batch do not mix, so each gets its own gradient).
    ``ValueError`` if the score does not depend on the activations."""
    if not score.requires_grad:
        raise ValueError("the target's score does not depend on the model's weights or input")
    (gradients,) = torch.autograd.grad(score, activations, allow_unused=True)
    if gradients is None:
        raise ValueError("the target's score does not depend on this layer")
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    return F.relu((weights * activations.float()).sum(dim=1)).detach()


def feature_layer(module: nn.Module, run: Any) -> str | None:
    """The model's last feature stage: call ``run()`` (one forward pass) and take, among the layers giving a
    ``(N, C, h, w)`` map with ``h, w >= 2``, the coarsest (largest stride), the last to finish (so the
    outermost of nested layers giving the same map); the output head is left out (the layer whose output is
    the model's output, with everything inside it: a YOLO ``Detect``'s convs are not a feature stage).
    None when no layer gives such a map."""
    finished: list[tuple[str, Any]] = []
    handles = [layer.register_forward_hook(lambda m, a, out, name=name: finished.append((name, out)))
               for name, layer in module.named_modules() if name and not isinstance(layer, torch.jit.ScriptModule)]
    try:
        output = run()
    finally:
        for handle in handles:
            handle.remove()
    heads = [name for name, out in finished if out is output]
    head = min(heads, key=len) if heads else None
    best, best_area = None, None
    for name, out in finished:
        if head is not None and (name == head or name.startswith(head + ".")):
            continue
        feature = layer_output(out)
        if feature is None or min(feature.shape[-2:]) < 2:
            continue
        area = feature.shape[-2] * feature.shape[-1]
        if best_area is None or area <= best_area:
            best, best_area = name, area
    return best

"""Train the default model's blocks so their maps come from a task: ``attnlens train``.

Recipe (the defaults, r9 in the README's model card): the pretrained plain Lite0 (teacher) sees the
object alone on grey; the augmented model (student) sees the same object pasted on a photo and learns
to match the teacher's prediction (KL divergence at temperature ``T``). With ``consistency`` it also
sees the object alone and must keep the teacher's answer there, so the trained model still agrees
with the plain one on clean inputs. With ``probe``, training-only linear read-outs of what GC, CA and
ACmix produce (``BlockProbes``) must also give the teacher's answer, so each block's output has to sum
up the object, not the clutter. Only the blocks (``plugins``: GC, CA, ACmix, DCN and their gates)
train; the backbone and its BatchNorm statistics stay frozen. No loss sees the object masks or the
maps. With ``--data DIR`` (an ImageFolder with labels) the blocks and a new classifier head train with
cross-entropy instead.

Only the trained parameters are saved (safetensors). Checkpoints every ``checkpoint_every`` steps,
``--resume`` continues from the last one; the seed fixes data order and initialisation.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from attnlens.models import LoadedModel, load_model

from .composites import CompositeSet
from .config import TrainConfig

__all__ = ["TrainConfig", "train", "trained_state"]


def trained_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters training changes: every ``requires_grad`` parameter, by qualified name."""
    return {name: p.detach().cpu().contiguous() for name, p in module.named_parameters() if p.requires_grad}


def _freeze_all_but_blocks(module: nn.Module, extra: tuple[str, ...] = ()) -> list[nn.Parameter]:
    module.eval()  # BatchNorm statistics stay as pretrained
    trainable = []
    for name, parameter in module.named_parameters():
        parameter.requires_grad = name.startswith(("plugins.", *extra))
        if parameter.requires_grad:
            trainable.append(parameter)
    return trainable


def _global_context(block: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return block.spatial_pool(inputs[0]).flatten(1)


def _output_mean(block: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.mean(dim=(2, 3))


class BlockProbes(nn.Module):
    """Training-only linear read-outs of what each attention block produces, asked for the teacher's answer.

    * GC: its global context (``spatial_pool``: the attention-pooled vector the block fuses back);
    * CA: the mean over positions of its output ``x * a_h * a_w``;
    * ACmix: the mean over positions of its branch's output.

    A block whose output summarises the object rather than the clutter answers better, so the task
    (not a target map) makes the blocks find the object. The probes read the blocks' outputs, never
    their maps or the masks, and are not saved with the blocks.
    """

    def __init__(self, plugins: nn.ModuleDict, classes: int):
        super().__init__()
        gc, ca, acmix = plugins["gc"], plugins["ca"], plugins["acmix"].branch
        self.sources = {"gc": (gc, _global_context), "ca": (ca, _output_mean), "acmix": (acmix, _output_mean)}
        widths = {"gc": gc.inplanes, "ca": ca.oup, "acmix": acmix.out_planes}
        self.heads = nn.ModuleDict({name: nn.Sequential(nn.LayerNorm(width), nn.Linear(width, classes))
                                    for name, width in widths.items()})
        self.pooled: dict[str, torch.Tensor] = {}

    def attach(self) -> list:
        """Hook the blocks so every forward pass keeps their read-outs; returns the handles."""
        def keep(name, read):
            return lambda block, inputs, output: self.pooled.__setitem__(name, read(block, inputs, output))
        return [block.register_forward_hook(keep(name, read)) for name, (block, read) in self.sources.items()]

    def logits(self, rows: slice) -> list[torch.Tensor]:
        """Each probe's logits for ``rows`` of the last forward pass."""
        return [head(self.pooled[name][rows]) for name, head in self.heads.items()]


def _composite_batches(config: TrainConfig, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    data = CompositeSet("train", config.steps * config.batch_size, seed=config.seed, sources=config.sources)
    for step in range(start, config.steps):
        items = [data[step * config.batch_size + i] for i in range(config.batch_size)]
        yield torch.stack([item["image"] for item in items]), torch.stack([item["teacher"] for item in items])


def _folder_batches(config: TrainConfig, start: int, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(str(config.data), transform=transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]))
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(dataset), generator=generator).tolist()
    for step in range(start, config.steps):
        indexes = [order[(step * config.batch_size + i) % len(order)] for i in range(config.batch_size)]
        items = [dataset[i] for i in indexes]
        yield torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


def train(config: TrainConfig, progress=None) -> dict:
    """Run the recipe; returns ``{"losses": [...], "weights": path}``. ``progress``: a tqdm-like wrapper."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    config.out.mkdir(parents=True, exist_ok=True)
    student: LoadedModel = load_model("efficientnet_lite0_untrained", device=config.device)
    module = student.module
    extra: tuple[str, ...] = ()
    if config.data is not None:
        classes = len([p for p in config.data.iterdir() if p.is_dir()])
        module._fc = nn.Linear(module._fc.in_features, classes).to(student.device)
        extra = ("_fc.",)
    parameters = _freeze_all_but_blocks(module, extra)
    probes = None
    if config.probe and config.data is None:
        probes = BlockProbes(module.plugins, module._fc.out_features).to(student.device)
        parameters += list(probes.parameters())
    ca = {id(p) for p in module.plugins["ca"].parameters()} if "ca" in module.plugins else set()
    groups = [{"params": [p for p in parameters if id(p) not in ca]},
              {"params": [p for p in parameters if id(p) in ca], "lr": config.lr * config.ca_lr_factor}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps)))
    start, losses = 0, []
    checkpoint = config.out / "checkpoint.pt"
    if config.resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        module.load_state_dict(state["trained"], strict=False)
        if probes is not None and state.get("probes"):
            probes.load_state_dict(state["probes"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start, losses = int(state["step"]), list(state["losses"])
    teacher = None if config.data is not None else load_model("efficientnet_lite0_plain", device=config.device).module

    batches = (_folder_batches(config, start, student.input_size) if config.data is not None
               else _composite_batches(config, start))
    steps = range(start, config.steps)
    bar = progress(steps, initial=start, total=config.steps) if progress else None
    handles = probes.attach() if probes is not None else []
    try:
        losses = _run(config, module, student, teacher, probes, optimizer, schedule, zip(steps, batches), losses, bar)
    finally:
        for handle in handles:
            handle.remove()
        if bar is not None:
            bar.close()
    weights = config.out / "blocks.safetensors"
    save_file(trained_state(module), str(weights), metadata={"recipe": "distillation" if teacher else "supervised",
                                                             "steps": str(config.steps), "seed": str(config.seed)})
    return {"losses": losses, "weights": weights}


def _run(config: TrainConfig, module: nn.Module, student: LoadedModel, teacher: nn.Module | None,
         probes: BlockProbes | None, optimizer, schedule, batches, losses: list[float], bar) -> list[float]:
    """The optimisation steps; checkpoints as it goes. Returns all losses so far."""
    checkpoint = config.out / "checkpoint.pt"
    for step, (images, targets) in batches:
        inputs = images if teacher is None or not config.consistency else torch.cat([images, targets])
        logits = module(student.normalize(inputs.to(student.device)))
        if teacher is None:
            loss = F.cross_entropy(logits, targets.to(student.device))
        else:
            with torch.no_grad():
                reference = teacher(student.normalize(targets.to(student.device)))
            t = config.temperature

            def distill(student_logits: torch.Tensor) -> torch.Tensor:
                return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(reference / t, 1),
                                log_target=True, reduction="batchmean") * t * t

            loss = distill(logits[: len(images)])
            if probes is not None:
                probe_logits = probes.logits(slice(0, len(images)))
                loss = loss + config.probe * sum(map(distill, probe_logits)) / len(probe_logits)
            if config.consistency:
                loss = loss + config.consistency * distill(logits[len(images):])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            torch.save({"step": step + 1, "trained": trained_state(module), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "losses": losses,
                        "probes": probes.state_dict() if probes is not None else {}}, checkpoint)
    return losses

"""attnlens: see what CNN plug-in blocks (ACmix, GC, CA, SPD, DCN) attend to.

Areas, with data flowing one way (nothing imports ``server``):
``server`` -> ``analysis`` -> ``models`` -> ``blocks``; ``evaluation`` -> ``analysis``; ``server`` -> ``evaluation``
(the datasets it serves); ``training`` -> ``evaluation``, ``models``, ``blocks``; ``cli`` on top.

In a notebook::

    import attnlens
    model = attnlens.load_model()                  # the default; or "pkg.module:factory", "best.pt", an nn.Module
    result = attnlens.analyze(model, "cat.jpg", reference="layercam")
    result.heatmaps["plugins.gc"]                  # (h, w) tensor; result.maps: every block's full maps
    result.report()["predictions"]; result.figure()
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .analysis.result import Analysis
    from .models import LoadedModel

__version__ = "0.1.0"
__all__ = ["__version__", "analyze", "evaluate", "figure", "load_model"]


def load_model(model: Any = None, **options: Any) -> LoadedModel:
    """A model ready to analyse with: a built-in name (default ``efficientnet_lite0``), ``"package.module:factory"``,
    a whole-model checkpoint path (with ``trust_checkpoint=True``), an ``nn.Module`` or ``ModelSpec``; the
    other options are ``attnlens.models.ModelOptions``' (``device``, ``input_size``, ``resize``, ``task`` ...)."""
    from .models import load_model as load

    return load(model, **options)


def analyze(model: Any, image: Any, *, reference: str | None = None, target: int | None = None,
            target_kind: str = "class", size: int | None = None, precision: str = "fp32",
            gradcam: bool = False, knockout: bool = False) -> Analysis:
    """Analyse one image: ``model`` as ``load_model`` takes it (load it once to analyse many images), ``image`` a
    path, bytes, a PIL image or an ``(H, W, 3)`` uint8 array. Returns an ``Analysis``: ``predictions`` /
    ``report()["detections"]``, ``maps`` and ``heatmaps`` as tensors, ``reference`` (with ``reference``:
    ``gradcam``, ``gradcam++``, ``layercam`` or ``eigencam``; ``target``: a class index or a detection's rank;
    ``target_kind``: ``class``, ``box`` or ``all`` of a detection), ``report()``, ``npz()``, ``figure()``.
    ``gradcam=True``: the same as ``reference="gradcam"``. ``knockout=True``: the answer again with each block's map
    made flat (``report()["knockout"]``, one extra forward per block)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from .analysis.engine import Engine
    from .analysis.imaging import decode_image
    from .analysis.options import AnalyzeOptions
    from .models import LoadedModel

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if isinstance(image, (str, Path)):
        image = Path(image).read_bytes()
    if isinstance(image, bytes):
        image = decode_image(image)
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image).convert("RGB")
    elif isinstance(image, Image.Image):
        image = image.convert("RGB")
    else:
        raise TypeError(f"image must be a path, bytes, a PIL image or an (H, W, 3) uint8 array, not {type(image).__name__}")
    if gradcam and reference not in (None, "gradcam"):
        raise ValueError(f"gradcam=True asks for reference='gradcam', but reference={reference!r} was given")
    options = AnalyzeOptions(size=size, reference="gradcam" if gradcam else reference, target=target,
                             target_kind=target_kind, knockout=knockout)
    return Engine(loaded, precision).analysis(image, options)


def figure(models: Any, images: Any, **options: Any):
    """The paper figure (``attnlens figure``): ``models`` ``[(name, model)]`` (a model as ``load_model`` takes it),
    ``images`` paths, bytes or PIL images (rows); options as ``attnlens.evaluation.paper.paper_figure`` takes them
    (``maps``, ``reference``, ``width``, ``dpi``, ``font_size``, ``scale``, ``boxes``, ``row_labels``, ``colormap``,
    ``titles``). Returns the matplotlib ``Figure`` (``attnlens.evaluation.paper.save_paper_figure`` writes it as the
    command does)."""
    from pathlib import Path

    from PIL import Image

    from .analysis.imaging import decode_image
    from .evaluation.paper import PaperImage, paper_figure
    from .models import LoadedModel

    loaded = [(name, model if isinstance(model, LoadedModel) else load_model(model)) for name, model in models]
    rows = []
    for number, image in enumerate(images, 1):
        label = Path(image).stem if isinstance(image, (str, Path)) else f"image {number}"
        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        picture = decode_image(image) if isinstance(image, bytes) else image.convert("RGB") \
            if isinstance(image, Image.Image) else None
        if picture is None:
            raise TypeError(f"images must be paths, bytes or PIL images, not {type(image).__name__}")
        rows.append(PaperImage(picture, label))
    return paper_figure(loaded, rows, **options)


def evaluate(models: Any, data: Any, **options: Any) -> dict:
    """Score every map of ``models`` (``[(name, model)]``, a model as ``load_model`` takes it) against the boxes of
    a labelled dataset (a YOLO ``data.yaml`` or a COCO JSON with ``images=``): the summary ``attnlens eval --data``
    writes to ``summary.json``; ``out=DIR`` writes the files too. Options: ``attnlens.evaluation.evaluate``'s."""
    from .evaluation import evaluate as run

    return run(models, data, **options)

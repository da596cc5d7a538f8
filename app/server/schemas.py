"""Response models of the v1 API: the OpenAPI schema at /docs documents every field from these."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from attnlens.blocks.kinds import KINDS

BlockType = Literal[tuple(KINDS)]  # the kinds of attnlens.blocks.kinds


class BlockDescription(BaseModel):
    id: str = Field(description="qualified module name of the block in the model (name#2, name#3 ... for its "
                    "later calls in one pass)")
    type: BlockType = Field(description="block kind")
    feature_stride: int = Field(description="input-image pixels per cell of the block's maps")
    channels: int = Field(description="channels of the block's input")
    class_name: str = Field("", description="the module's class")
    recognised: str = Field("", description="how the block was recognised: by names (a known structure, checked "
                            "against what it computes), by computation (what it computes), or named by the user")


class CandidateDescription(BaseModel):
    id: str = Field(description="qualified module name")
    class_name: str = Field(description="the module's class")
    why: str = Field(description="why it is not read as a block")


class InputRecipeDescription(BaseModel):
    size: int = Field(description="input size in pixels: the short side (short-side) or the long side (letterbox)")
    resize: Literal["short-side", "letterbox"]
    normalize: str = Field(description="imagenet, none, lite or M,M,M/S,S,S")


class ModelDescription(BaseModel):
    name: str = Field(description="the name requests choose it by (?model=NAME)")
    backbone: str = Field(description="the loaded model: a built-in name, package.module:factory or a checkpoint file")
    device: str = Field(description="where inference runs, e.g. cpu or cuda:0")
    task: Literal["classify", "detect", "maps"] = Field(description="how the output is read: class logits, boxes, "
                                                        "or not at all (maps only)")
    output: str = Field(description="the output layout read, in words")
    note: str | None = Field(None, description="what of the output was ignored, or why there are no predictions")
    input_size: int = Field(description="default input size in pixels (see input)")
    input: InputRecipeDescription = Field(description="how an image becomes the model's input")
    num_classes: int
    blocks_trained: bool | None = Field(None, description="whether the blocks carry trained weights (false: "
                                        "initialisation, so their maps show untrained blocks); null where attnlens "
                                        "cannot know (a user's model or checkpoint)")
    reference_layers: list[str] = Field(description="the layers reference maps are computed at (reference=...), "
                                        "fused when several: a detector's head inputs, one per scale, or a "
                                        "classifier's last stage (--reference-layers)")
    gradcam_layer: str | None = Field(description="reference_layers comma-joined (v1's one layer; kept for its "
                                      "clients)")
    memory_mb: float = Field(description="memory of the model's parameters and buffers on its device, MiB")
    blocks: list[BlockDescription] = Field(description="blocks in execution order")
    candidates: list[CandidateDescription] = Field(default_factory=list, description="modules seen but not read as "
                                                   "blocks, with why (name one with --block MODULE=KIND)")


class ModelList(BaseModel):
    default: str = Field(description="the model analyses use when none is named")
    models: list[ModelDescription] = Field(description="every model the server offers, the default first")


class ImageSize(BaseModel):
    width: int = Field(description="upright width (EXIF orientation applied) of the uploaded image, pixels")
    height: int


class InputSize(BaseModel):
    width: int = Field(description="width of the image as fed to the model (after resizing), pixels")
    height: int
    content: list[int] = Field(description="[x0, y0, x1, y1]: where the image lies in the input, input pixels "
                               "(letterbox: inside the grey padding; short-side: the whole input)")


class Prediction(BaseModel):
    index: int = Field(description="class index")
    label: str
    score: float = Field(description="softmax probability")


class Detection(BaseModel):
    box: list[float] = Field(description="[x0, y0, x1, y1] in pixels of the upright original image")
    index: int = Field(description="class index")
    label: str
    score: float = Field(description="confidence (YOLOv5 / v7: objectness x class score)")


class Heatmap(BaseModel):
    shape: list[int] = Field(description="[h, w] of the map, at the block's feature resolution")
    png: str = Field(description="data:image/png;base64 URL of the colour-mapped map (min-max scaled)")
    range: list[float] = Field(description="[min, max] of the values")
    meaning: str = Field(description="what the map shows")
    unit: str = Field(description="unit of the values")
    values: list[list[float | None]] | None = Field(None, description="raw values, h rows of w (with "
                                                    "include=values); null where the value is not finite")
    masked: int | None = Field(None, description="how many cells are not finite (NaN / inf): grey in the PNG, null "
                               "in values, left out of range (absent when none)")


class BlockResult(BaseModel):
    id: str
    type: BlockType
    heatmap: Heatmap
    maps: dict[str, Any] = Field(description="kind-specific maps: summaries always, full arrays with include=maps "
                                 "(gc: [context_mask (H, W)]; ca: a_h_mean, a_w_mean [, a_h (C, H), a_w (C, W)]; "
                                 "acmix: rate1, rate2, kernel_size, stride, dilation, heads, input_size [, attention "
                                 "(heads, k*k, H, W)]; dcn: kernel_size, stride, padding, dilation, modulated [, "
                                 "offsets (G, k*k, 2 [dy, dx], H, W), mask (G, k*k, H, W) for DCNv2]; spd: "
                                 "phase_energy_mean [, phase_energy (4, H, W), phase_detail (H, W)])")


class ReferenceTarget(BaseModel):
    index: int = Field(description="class index explained")
    label: str
    kind: Literal["class", "box", "all"] = Field(description="the score explained: the class score (classifiers: "
                                                 "the logit), the detection's box coordinates, or both")
    rank: int | None = Field(None, description="detectors: the rank of the explained detection in detections")


class Reference(BaseModel):
    method: Literal["gradcam", "gradcam++", "layercam", "eigencam"]
    layers: list[str] = Field(description="the layers whose activations (and gradients) make the map, fused when "
                              "several")
    layer: str = Field(description="layers, comma-joined (v1's one layer)")
    target: ReferenceTarget | None = Field(None, description="what the map explains; absent for eigencam (no target)")
    heatmap: Heatmap = Field(description="the reference map over the model input at the finest layer's grid, like "
                             "a block's heatmap (several layers: each scaled to [0, 1], averaged, scaled again)")


class GroundTruthBox(BaseModel):
    box: list[float] = Field(description="[x0, y0, x1, y1] in upright original-image pixels")
    index: int = Field(description="the dataset's class index")
    label: str


class MatchedGroundTruthBox(GroundTruthBox):
    status: Literal["found", "missed"] | None = Field(None, description="found: a detection matched this box (IoU >= "
                                                      "0.5, the same class, best detections first); missed: none did. "
                                                      "A detection no box matched is a false positive. Absent for a "
                                                      "model that gives no boxes (a classifier): nothing to match")
    detection: int | None = Field(None, description="found: the rank in detections of the detection matched")


class DatasetDescription(BaseModel):
    name: str
    images: int = Field(description="images in the split")
    classes: list[str]
    sort_keys: list[str] = Field(description="MAP:MEASURE keys the images sort by (from --eval-results; none without)")


class DatasetList(BaseModel):
    datasets: list[DatasetDescription]


class DatasetImage(BaseModel):
    id: str = Field(description="the image's id: its path relative to the dataset's root, as in per_image.csv")
    file: str = Field(description="its file name")
    width: int | None = Field(description="upright width in pixels (null: the file cannot be read)")
    height: int | None
    boxes: list[GroundTruthBox]
    scores: dict[str, float] = Field(description="MAP:MEASURE -> this image's value, from the eval results")


class DatasetListing(BaseModel):
    total: int = Field(description="images matching the filters")
    offset: int
    images: list[DatasetImage]


class ClassIndex(BaseModel):
    index: int = Field(description="class index")
    label: str


class ClassChange(BaseModel):
    top_kept: bool = Field(description="whether the top class stayed the top class with the map flat")
    top: ClassIndex = Field(description="the model's top class")
    new_top: ClassIndex = Field(description="the top class with the map flat")
    probability: float = Field(description="the top class's probability")
    probability_after: float = Field(description="its probability with the map flat")
    probability_change: float = Field(description="probability_after - probability")


class KeptDetection(BaseModel):
    index: int = Field(description="the detection, in detections")
    matched: int = Field(description="the detection it became, in this entry's detections")
    iou: float
    score_change: float = Field(description="its score with the map flat minus its score")


class DetectionChange(BaseModel):
    lost: list[int] = Field(description="detections (indices into detections) with no match of their class at IoU "
                                        ">= 0.5 once the map is flat")
    gained: list[int] = Field(description="detections with the map flat (indices into this entry's detections) that "
                                          "match none of the model's")
    kept: list[KeptDetection]
    mean_score_change: float | None = Field(description="the kept detections' mean score change (None: none kept)")


class Knockout(BaseModel):
    block: str = Field(description="the block's module (a module called twice is one block)")
    kind: BlockType
    replaced: str = Field(description="what was made flat, in one sentence")
    skipped: str | None = Field(None, description="why this block was not knocked out (SPD: no preference to remove)")
    predictions: list[Prediction] | None = Field(None, description="classify: the top 5 classes with the map flat")
    detections: list[Detection] | None = Field(None, description="detect: the boxes with the map flat")
    change: ClassChange | DetectionChange | None = Field(None, description="what changed")


class AnalysisResult(BaseModel):
    model: str = Field(description="the name of the model that answered")
    image: ImageSize
    input: InputSize = Field(description="the resized image the model saw; map cells cover input pixels")
    task: Literal["classify", "detect", "maps"]
    predictions: list[Prediction] | None = Field(None, description="classify: the top 5 classes")
    detections: list[Detection] | None = Field(None, description="detect: boxes above the confidence threshold "
                                               "after class-wise NMS, best first")
    note: str | None = Field(None, description="what of the output was ignored, or why there are no predictions")
    blocks: list[BlockResult] = Field(description="one entry per block, in execution order")
    reference: Reference | None = Field(None, description="with reference= (or include=gradcam): the reference map")
    knockout: list[Knockout] | None = Field(None, description="with include=knockout: the answer again with each "
                                            "block's map made flat (an inference-time ablation, one forward per block)")
    ground_truth: list[MatchedGroundTruthBox] | None = Field(None, description="with dataset= and image=: the image's "
                                                             "labelled boxes, each matched to a detection or missed")
    timings_ms: dict[str, float] = Field(description="milliseconds spent: decode, queue, forward (with a reference's "
                                         "backward pass when asked), knockout (its forwards), heatmaps (the "
                                         "batch's summary maps), maps (rendering), total")


class ErrorResponse(BaseModel):
    detail: Any = Field(description="what went wrong")


class ModelFailure(BaseModel):
    detail: str = Field(description="what went wrong, in one line naming the model")
    model: str = Field(description="the name of the model that failed")
    raised: str = Field(description="what the model's code raised: exception type and the first line of its message")


class Health(BaseModel):
    status: str


class Colormaps(BaseModel):
    colormaps: dict[str, list[list[int]]] = Field(description="name -> 256 RGB entries, as the PNGs use them")

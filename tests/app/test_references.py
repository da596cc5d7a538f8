"""Reference maps (Grad-CAM, Grad-CAM++, LayerCAM, EigenCAM) against their definitions written out here, per
channel and position in float64 numpy, from activations and gradients taken with plain hooks and ``backward``;
the layers they are computed at (a detector's head inputs, also behind a tuple-wrapped head); targets."""
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

import attnlens
from attnlens.models.outputs import TargetError
from attnlens.models.references import METHODS, find_reference_layers
from attnlens.server import create_app
from attnlens.server.settings import Settings
from tests.app.yolo_models import CrowdDetector, TupleHeadYolo

EPSILON = 1e-7


# --- the definitions, written out -------------------------------------------------------------------------

def written_grad_cam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``a``, ``g``: ``(C, h, w)``. Each channel weighted by its gradient's mean over positions."""
    cam = np.zeros(a.shape[1:])
    for c in range(a.shape[0]):
        cam += g[c].mean() * a[c]
    return np.maximum(cam, 0)


def written_grad_cam_plus_plus(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    cam = np.zeros(a.shape[1:])
    for c in range(a.shape[0]):
        total = a[c].sum()
        weight = 0.0
        for y in range(a.shape[1]):
            for x in range(a.shape[2]):
                grad = g[c, y, x]
                alpha = 0.0 if grad == 0 else grad ** 2 / (2 * grad ** 2 + total * grad ** 3 + EPSILON)
                weight += max(grad, 0.0) * alpha
        cam += weight * a[c]
    return np.maximum(cam, 0)


def written_layer_cam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    cam = np.zeros(a.shape[1:])
    for y in range(a.shape[1]):
        for x in range(a.shape[2]):
            cam[y, x] = sum(max(g[c, y, x], 0.0) * a[c, y, x] for c in range(a.shape[0]))
    return np.maximum(cam, 0)


def written_eigen_cam(a: np.ndarray, g: np.ndarray | None = None) -> np.ndarray:
    """The projection on the first right singular vector of the centred (positions x channels) matrix, signed to
    rise with the summed activation, ReLU'd."""
    samples = a.reshape(a.shape[0], -1).T  # (h*w, C)
    centred = samples - samples.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=True)
    projection = centred @ vt[0]
    if np.corrcoef(projection, samples.sum(axis=1))[0, 1] < 0:
        projection = -projection
    return np.maximum(projection, 0).reshape(a.shape[1:])


WRITTEN = {"gradcam": written_grad_cam, "gradcam++": written_grad_cam_plus_plus, "layercam": written_layer_cam,
           "eigencam": written_eigen_cam}


def written_fusion(maps: list[np.ndarray]) -> np.ndarray:
    """pytorch-grad-cam's: each map to [0, 1] (minus its minimum, over its maximum: without pytorch-grad-cam's
    + 1e-7 there), on the finest grid (bilinear, pixel centres), averaged, to [0, 1] again."""
    def unit(m):
        m = m - m.min()
        return m / m.max() if m.max() > 0 else m

    if len(maps) == 1:
        return maps[0]
    finest = max((m.shape for m in maps), key=lambda shape: shape[0] * shape[1])
    resized = [F.interpolate(torch.from_numpy(unit(m))[None, None], size=finest, mode="bilinear",
                             align_corners=False)[0, 0].numpy() for m in maps]
    return unit(np.mean(resized, axis=0))


def activations_and_gradients(model, batch, layers, score_of):
    """Each layer's activations and the gradient of ``score_of(raw output)`` at them, by hooks and ``backward``."""
    kept = {}
    handles = [dict(model.module.named_modules())[name].register_forward_hook(
        lambda m, a, out, name=name: kept.__setitem__(name, out)) for name in layers]
    try:
        with torch.enable_grad():
            output = model.forward(batch)
            for name in layers:
                kept[name].retain_grad()
            score_of(output).backward()
    finally:
        for handle in handles:
            handle.remove()
        model.module.zero_grad(set_to_none=True)
    return [(kept[name][0].detach().double().numpy(), kept[name].grad[0].double().numpy()) for name in layers]


def expected_map(method, pairs):
    return written_fusion([WRITTEN[method](a, g) for a, g in pairs])


# --- a classifier -------------------------------------------------------------------------------------------

class SmallClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def classifier():
    return attnlens.load_model(SmallClassifier(), device="cpu", input_size=64, normalize="none")


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_on_a_classifier_matches_its_written_out_definition(classifier, image, method):
    assert classifier.reference_layers == ["features"]  # the last stage (outermost), not the head
    result = attnlens.analyze(classifier, image, reference=method)
    batch = classifier.recipe.prepare(image)[0]
    top = int(result.predictions.argmax())
    pairs = activations_and_gradients(classifier, batch, ["features"], lambda logits: logits[0, top])
    expected = expected_map(method, pairs)
    np.testing.assert_allclose(result.reference.heatmap.double().numpy(), expected, rtol=1e-4,
                               atol=1e-5 * max(expected.max(), 1e-6))
    assert expected.max() > 0 and result.reference.layers == ("features",)
    report = result.report()["reference"]
    assert report["method"] == method and report["layers"] == ["features"] and report["layer"] == "features"
    assert report["target"] == (None if method == "eigencam" else {"index": top, "label": f"class {top}", "kind": "class"})


def test_the_written_out_definitions_by_hand():
    """Two channels on 1 x 2 positions, gradients chosen so each method's map is known by hand."""
    a = np.array([[[1.0, 3.0]], [[2.0, 0.0]]])
    g = np.array([[[0.5, -0.5]], [[1.0, 1.0]]])
    np.testing.assert_allclose(written_grad_cam(a, g), [[2.0, 0.0]])  # weights (0, 1): A_1
    np.testing.assert_allclose(written_layer_cam(a, g), [[0.5 + 2.0, 0.0]])  # ReLU(g) A summed
    alpha = 0.25 / (0.5 + 4 * 0.125 + EPSILON)  # channel 0, position 0: g^2 / (2 g^2 + sum(A) g^3)
    alpha_1 = 1.0 / (2.0 + 2.0 + EPSILON)  # channel 1, both positions
    np.testing.assert_allclose(written_grad_cam_plus_plus(a, g), [[0.5 * alpha * 1 + 2 * alpha_1 * 2, 0.5 * alpha * 3]])
    samples = np.array([[[0.0, 1.0, 2.0]], [[0.0, 2.0, 4.0]]])  # one direction: (1, 2), rising with the sum
    projection = written_eigen_cam(samples)
    np.testing.assert_allclose(projection, [[0.0, 0.0, np.sqrt(5)]], atol=1e-12)


# --- a detector whose head's answer is wrapped in a tuple ---------------------------------------------------

@pytest.fixture(scope="module")
def detector():
    return attnlens.load_model(TupleHeadYolo(), device="cpu", input_size=64, resize="letterbox", normalize="none")


def test_a_tuple_headed_yolo_gets_its_head_inputs_one_per_scale(detector):
    """Not a layer inside the head (the old search picked ``model.5.cv3.2``-like convs): P3, P4 (the outermost
    layer giving it, not its CA block), P5, finest first."""
    assert detector.task == "detect"
    assert detector.reference_layers == ["model.2", "model.3", "model.4"]
    module = detector.module
    found = find_reference_layers(module, lambda: module(torch.zeros(1, 3, 64, 64)))
    assert found.head_inputs == ("model.2", "model.3", "model.4") and not found.stage.startswith("model.5")
    assert found.for_task("classify") == [found.stage]


def detection_score(output, detections, rank, kind):
    """The detection's score from the raw ultralytics output ``(N, 4 + nc, A)``, written out."""
    y = output[0][0]
    row, cls = int(detections.rows[rank]), int(detections.classes[rank])
    box = y[0, :4, row].sum()
    confidence = y[0, 4 + cls, row]
    return {"class": confidence, "box": box, "all": confidence + box}[kind]


@pytest.mark.parametrize("method, kind", [("gradcam", "class"), ("gradcam++", "box"), ("layercam", "all"),
                                          ("layercam", "class"), ("eigencam", "class")])
def test_each_method_on_a_detector_matches_its_written_out_definition(detector, image, method, kind):
    rank = 2
    target = {} if method == "eigencam" else {"target": rank, "target_kind": kind}
    result = attnlens.analyze(detector, image, reference=method, **target)
    batch = detector.recipe.prepare(image)[0]
    layers = detector.reference_layers
    pairs = activations_and_gradients(detector, batch, layers,
                                      lambda output: detection_score(output, result.predictions, rank, kind))
    expected = expected_map(method, pairs)
    assert result.reference.heatmap.shape == (8, 8)  # the finest layer's grid (P3, stride 8)
    np.testing.assert_allclose(result.reference.heatmap.double().numpy(), expected, rtol=1e-4, atol=1e-5)
    report = result.report()["reference"]
    assert report["layers"] == layers and report["heatmap"]["unit"] == "relative, 0 to 1"
    if method != "eigencam":
        label = detector.label(int(result.predictions.classes[rank]))
        assert report["target"] == {"index": int(result.predictions.classes[rank]), "label": label, "kind": kind,
                                    "rank": rank}


def test_tiny_maps_are_scaled_too():
    """Gradients far below 1e-6 (a model far from its data) still fuse to a map that spans [0, 1]."""
    from attnlens.models.references import fuse

    tiny = [torch.tensor([[[0.0, 1e-12], [2e-12, 4e-12]]]), torch.tensor([[[3e-13]]]).expand(1, 1, 1)]
    fused = fuse(tiny)
    assert fused.max() == pytest.approx(1.0) and fused.min() == 0
    assert fuse([torch.zeros(1, 2, 2), torch.zeros(1, 1, 1)]).abs().max() == 0  # flat stays flat, no NaN


def test_each_layer_gets_the_gradient_through_the_later_ones(detector, image):
    """The graph starts at the first reference layer, and the later ones stay in it: P3's gradient is the whole
    of it (through P4 and P5 too), as plain ``backward`` gives it (the test above compares the fused map; here P3
    alone, against LayerCAM at P3 asked by name)."""
    alone = attnlens.load_model(TupleHeadYolo(), device="cpu", input_size=64, resize="letterbox", normalize="none",
                                reference_layers="model.2")
    result = attnlens.analyze(alone, image, reference="layercam", target=0)
    batch = alone.recipe.prepare(image)[0]
    pairs = activations_and_gradients(alone, batch, ["model.2"],
                                      lambda output: detection_score(output, result.predictions, 0, "class"))
    np.testing.assert_allclose(result.reference.heatmap.double().numpy(), written_layer_cam(*pairs[0]), rtol=1e-4,
                               atol=1e-9)
    assert result.report()["reference"]["heatmap"]["unit"] == "activation x gradient"


def test_targets_that_do_not_fit_are_clear_errors(classifier, detector, image):
    with pytest.raises(TargetError, match="target_kind box is for detectors"):
        attnlens.analyze(classifier, image, reference="gradcam", target_kind="box")
    with pytest.raises(ValueError, match="eigencam uses no gradients"):
        attnlens.analyze(detector, image, reference="eigencam", target=1)
    with pytest.raises(ValueError, match="reference must be one of"):
        attnlens.analyze(detector, image, reference="scorecam")
    with pytest.raises(ValueError, match="target_kind must be one of"):
        attnlens.analyze(detector, image, reference="gradcam", target_kind="boxes")
    with pytest.raises(ValueError, match="give them with a reference"):
        attnlens.analyze(detector, image, target=1)
    with pytest.raises(ValueError, match="gradcam=True asks for"):
        attnlens.analyze(detector, image, gradcam=True, reference="layercam")
    with pytest.raises(attnlens.models.ModelLoadError, match="no layer 'model.9'"):
        attnlens.load_model(TupleHeadYolo(), device="cpu", input_size=64, reference_layers="model.2,model.9")
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in detector.module.modules())  # released


# --- the API ----------------------------------------------------------------------------------------------

def test_the_api_names_the_layers_and_answers_every_method(tmp_path, image):
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "yolo"\nmodel = "tests.app.yolo_models:tuple_head"\ninput_size = 64\n'
                      'resize = "letterbox"\nnormalize = "none"\n\n[[models]]\nname = "named"\n'
                      'model = "tests.app.yolo_models:tuple_head"\ninput_size = 64\nresize = "letterbox"\n'
                      'normalize = "none"\ngradcam_layer = "model.3"\n')
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()

    def post(client, **params):
        return client.post("/api/v1/analyze", params=params, files={"file": ("x.png", data, "image/png")})

    with TestClient(create_app(Settings(device="cpu", models=models), load_in_background=False)) as client:
        described = client.get("/api/v1/model").json()
        assert described["reference_layers"] == ["model.2", "model.3", "model.4"]
        assert described["gradcam_layer"] == "model.2,model.3,model.4"
        named = client.get("/api/v1/model", params={"model": "named"}).json()
        assert named["reference_layers"] == ["model.3"]  # the models file's gradcam_layer (the old key)
        for method in METHODS:
            answer = post(client, reference=method, include="values")
            assert answer.status_code == 200, answer.text
            reference = answer.json()["reference"]
            assert reference["method"] == method and reference["layers"] == described["reference_layers"]
            assert ("target" in reference) == (method != "eigencam")
        box = post(client, reference="layercam", target=1, target_kind="box").json()["reference"]["target"]
        assert box["rank"] == 1 and box["kind"] == "box"
        assert post(client, include="gradcam").json()["reference"]["method"] == "gradcam"
        for params, detail in (({"include": "gradcam", "reference": "eigencam"}, "give one of them"),
                               ({"reference": "eigencam", "target": 0}, "explains no target"),
                               ({"reference": "nope"}, "reference must be one of"),
                               ({"target_kind": "box"}, "give them with a reference"),
                               ({"reference": "gradcam", "target": 500}, "rank from 0 to")):
            refused = post(client, **params)
            assert refused.status_code == 400 and detail in refused.json()["detail"], (params, refused.text)


# --- a crowded image's figure ------------------------------------------------------------------------------

def test_the_figure_draws_the_best_few_boxes_and_says_how_many_more(image):
    from matplotlib.patches import Rectangle

    model = attnlens.load_model(CrowdDetector(), device="cpu", input_size=64, resize="letterbox", normalize="none")
    result = attnlens.analyze(model, image)
    assert len(result.report()["detections"]) == 90
    for boxes, title in ((None, "best 5; 85 more"), (12, "best 12; 78 more")):
        figure = result.figure(boxes=boxes)
        first = figure.axes[0]
        assert title in first.get_title()
        assert sum(isinstance(patch, Rectangle) for patch in first.patches) == (boxes or 5)


# --- the dataset evaluation ---------------------------------------------------------------------------------

def test_eval_scores_several_references_from_one_pass(tmp_path):
    """Every method asked is scored beside the blocks; one pass serves them all, so each scores as when asked
    alone (to float precision: the pass with gradients runs other kernels); a maps-only model gets EigenCAM (no
    target needed) but no gradient method."""
    from tests.app.labelled_data import write_dataset

    yaml, _ = write_dataset(tmp_path / "data")
    detector = attnlens.load_model(TupleHeadYolo(), device="cpu", input_size=64, resize="letterbox", normalize="none")
    features = attnlens.load_model("tests.app.yolo_models:features", device="cpu")
    models = [("yolo", detector), ("features", features)]
    together = attnlens.evaluate(models, yaml, reference="gradcam,layercam,eigencam", workers=0)
    rows = {(row["model"], row["map"]): row for row in together["rows"]}
    assert {("yolo", "reference/gradcam"), ("yolo", "reference/layercam"), ("yolo", "reference/eigencam"),
            ("features", "reference/eigencam")} <= set(rows)
    assert ("features", "reference/gradcam") not in rows
    alone = attnlens.evaluate([("yolo", detector)], yaml, reference=["eigencam"], workers=0)
    (eigen,) = [row for row in alone["rows"] if row["map"] == "reference/eigencam"]
    assert eigen["energy"]["mean"] == pytest.approx(rows[("yolo", "reference/eigencam")]["energy"]["mean"], abs=1e-6)
    assert not [row for row in attnlens.evaluate(models, yaml, reference="none", workers=0)["rows"]
                if row["map"].startswith("reference/")]
    with pytest.raises(ValueError, match="reference must be none or among"):
        attnlens.evaluate(models, yaml, reference="gradcam,scorecam", workers=0)


# --- the command line ----------------------------------------------------------------------------------------

def test_the_cli_takes_methods_layers_targets_and_figure_boxes(tmp_path):
    import json
    import subprocess
    import sys

    from attnlens.cli import REFERENCE_METHODS

    assert REFERENCE_METHODS == tuple(METHODS)  # the CLI's list, kept without importing torch for --help

    def attnlens_cli(*args):
        return subprocess.run([sys.executable, "-m", "attnlens", "analyze", "tests/data/chelsea.jpg", "--device", "cpu",
                               "--input-size", "64", "--resize", "letterbox", "--normalize", "none", *args],
                              capture_output=True, text=True, timeout=300)

    named = attnlens_cli("--model", "tests.app.yolo_models:tuple_head", "--gradcam-layer", "model.3,model.4",
                         "--reference", "gradcam++", "--target", "1", "--target-kind", "all", "--json")
    assert named.returncode == 0, named.stderr
    reference = json.loads(named.stdout)["reference"]
    assert reference["layers"] == ["model.3", "model.4"] and reference["method"] == "gradcam++"
    assert reference["target"]["rank"] == 1 and reference["target"]["kind"] == "all"
    figure = tmp_path / "crowd.png"
    drawn = attnlens_cli("--model", "tests.app.yolo_models:crowd", "--figure", str(figure), "--figure-boxes", "3")
    assert drawn.returncode == 0 and figure.stat().st_size > 10_000, drawn.stderr
    both = attnlens_cli("--model", "tests.app.yolo_models:tuple_head", "--gradcam", "--reference", "eigencam")
    assert both.returncode == 2 and both.stderr.count("\n") == 1 and "give one" in both.stderr

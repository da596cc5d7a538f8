"""Compare, in the API and in Python: several models in one server, Grad-CAM references against written-out
implementations, npz maps, the ``attnlens.analyze`` entry point, models files and their mistakes."""
import io
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from matplotlib.figure import Figure
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import attnlens
from attnlens.analysis.engine import Engine
from attnlens.models import ModelLoadError, ModelSpec, load_model
from attnlens.models.catalog import read_models_file
from attnlens.models.references import find_reference_layers
from attnlens.server import Settings, create_app
from tests.app.conftest import CAT_CLASSES, DATA
from tests.app.test_evaluate import reference_grad_cam
from tests.helpers import encode


@pytest.fixture(scope="module")
def client():
    """The server as ``make serve`` starts it: the default model and the same with untrained blocks."""
    with TestClient(create_app(Settings(device="cpu"), load_in_background=False)) as client:
        yield client


def post(client, data: bytes, **params):
    return client.post("/api/v1/analyze", params=params, files={"file": ("photo.jpg", data, "image/jpeg")})


def test_the_default_server_offers_two_models_whose_maps_differ(client, photos):
    listing = client.get("/api/v1/models").json()
    assert listing["default"] == "efficientnet_lite0"
    names = [model["name"] for model in listing["models"]]
    assert names == ["efficientnet_lite0", "efficientnet_lite0_untrained"]
    trained, untrained = listing["models"]
    assert trained["blocks_trained"] and not untrained["blocks_trained"]
    assert trained["blocks"] == untrained["blocks"] and 10 < trained["memory_mb"] < 100
    assert client.get("/api/v1/model", params={"model": "efficientnet_lite0_untrained"}).json() == untrained
    default = post(client, photos["cat"], include="values").json()
    other = post(client, photos["cat"], include="values", model="efficientnet_lite0_untrained").json()
    assert default["model"] == "efficientnet_lite0" and other["model"] == "efficientnet_lite0_untrained"
    gc = [np.asarray(next(b for b in report["blocks"] if b["type"] == "gc")["heatmap"]["values"])
          for report in (default, other)]
    assert gc[0].shape == gc[1].shape and np.abs(gc[0] - gc[1]).max() > 1e-3
    spd = [next(b for b in report["blocks"] if b["type"] == "spd")["heatmap"]["values"] for report in (default, other)]
    assert spd[0] == spd[1]  # SPD has no trained weights: the same map in both


def test_every_model_runs_on_the_one_inference_thread(client, photos, monkeypatch):
    """Each thread that runs torch gets an OpenMP team of its own; a server alternating between two models on
    two threads ran each forward ~1.5x slower on 2 cores."""
    threads = []
    run = Engine.run

    def recording(self, *args, **kwargs):
        threads.append(threading.get_ident())
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "run", recording)
    for name in ("efficientnet_lite0", "efficientnet_lite0_untrained", "efficientnet_lite0"):
        assert post(client, photos["cat"], model=name).status_code == 200
    assert len(threads) == 3 and len(set(threads)) == 1


def test_an_unknown_model_is_404_json(client, photos):
    for response in (post(client, photos["cat"], model="nope"), client.get("/api/v1/model", params={"model": "nope"})):
        assert response.status_code == 404 and "nope" in response.json()["detail"]
        assert "efficientnet_lite0_untrained" in response.json()["detail"]  # says what there is


def test_grad_cam_reference_of_the_default_model_matches_a_written_out_one(client, default_model, photos):
    image = Image.open(io.BytesIO(photos["cat"])).convert("RGB")
    batch, _ = default_model.recipe.prepare(image)
    expected = reference_grad_cam(default_model.module, batch[0])  # top-1, last stage, by backward()
    report = post(client, photos["cat"], include="gradcam,values").json()
    reference = report["reference"]
    assert reference["method"] == "gradcam" and reference["layer"] == "_blocks.15"
    assert reference["target"]["index"] == report["predictions"][0]["index"] in CAT_CLASSES
    torch.testing.assert_close(torch.tensor(reference["heatmap"]["values"]), expected, rtol=1e-3,
                               atol=1e-4 * float(expected.max()))
    assert reference["heatmap"]["shape"] == list(expected.shape) and reference["heatmap"]["range"][1] > 0
    chosen = post(client, photos["cat"], include="gradcam", target=967).json()["reference"]["target"]
    assert chosen == {"index": 967, "label": "espresso", "kind": "class"}
    assert "reference" not in post(client, photos["cat"]).json()  # only when asked


@pytest.mark.parametrize("params, detail", [({"include": "gradcam", "target": 1000}, "class index from 0 to 999"),
                                            ({"target": 3}, "give them with a reference"),
                                            ({"format": "csv"}, "format must be")])
def test_reference_and_format_mistakes_are_400(client, photos, params, detail):
    response = post(client, photos["cat"], **params)
    assert response.status_code == 400 and detail in response.json()["detail"]


def test_npz_holds_every_map_and_the_report(client, photos):
    response = post(client, photos["cat"], format="npz", include="gradcam")
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-npz"
    arrays = np.load(io.BytesIO(response.content))  # no pickle needed
    full = post(client, photos["cat"], include="maps,values").json()
    report = json.loads(str(arrays["report"]))
    assert [b["id"] for b in report["blocks"]] == [b["id"] for b in full["blocks"]] and "reference" in report
    for block in full["blocks"]:
        np.testing.assert_allclose(arrays[f"{block['id']}/heatmap"], block["heatmap"]["values"], atol=1e-6)
        for name, value in block["maps"].items():
            if isinstance(value, list) and np.asarray(value).ndim >= 2:  # every full map, at full precision
                assert arrays[f"{block['id']}/{name}"].dtype == np.float32
                np.testing.assert_allclose(arrays[f"{block['id']}/{name}"], value, atol=1e-5)
    assert arrays["plugins.gc/context_mask"].sum() == pytest.approx(1.0, abs=1e-5)  # per image, no batch axis
    assert arrays["plugins.acmix.branch/attention"].shape[:2] == (4, 49)
    assert arrays["reference/gradcam"].shape == tuple(report["reference"]["heatmap"]["shape"])


# --- two checkpoints that differ in one block -------------------------------------------------------------

def test_two_checkpoints_differing_in_one_block_differ_only_there(tmp_path, default_model, photos):
    """B = A with GC's ``conv_mask`` zeroed: B's context mask is uniform, 1/(H*W), so the difference B - A at
    every position is 1/(H*W) minus A's mask there; every other block's map is the same in both."""
    state = {k: v.clone() for k, v in default_model.module.state_dict().items()}
    state["plugins.gc.conv_mask.weight"].zero_()
    state["plugins.gc.conv_mask.bias"].zero_()
    save_file(state, tmp_path / "b.safetensors")
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nname = "A"\n\n[[models]]\nname = "B"\nweights = "{tmp_path / "b.safetensors"}"\n')
    with TestClient(create_app(Settings(device="cpu", models=models), load_in_background=False)) as client:
        assert [m["name"] for m in client.get("/api/v1/models").json()["models"]] == ["A", "B"]
        a, b = ({x["id"]: np.asarray(x["heatmap"]["values"]) for x in post(client, photos["cat"], include="values",
                                                                           model=name).json()["blocks"]}
                for name in ("A", "B"))
    assert set(a) == set(b)
    for block in a:
        if block != "plugins.gc":
            np.testing.assert_allclose(a[block], b[block], atol=1e-6)
    height, width = a["plugins.gc"].shape
    np.testing.assert_allclose(b["plugins.gc"] - a["plugins.gc"], 1 / (height * width) - a["plugins.gc"], atol=1e-6)
    assert np.abs(b["plugins.gc"] - a["plugins.gc"]).max() > 1e-3


# --- Grad-CAM of a detector, by hand ---------------------------------------------------------------------

class ScoredDetector(nn.Module):
    """ultralytics layout ``(N, 4 + 2, A)``. Anchor 3's class-1 score is ``sigmoid(s)``, ``s = sum_c w_c mean(A_c)``
    with ``A = stage(x)``, so Grad-CAM of it is ``ReLU(sum_c sigmoid'(s) w_c / (h w) A_c)``."""

    head = torch.tensor([1.5, -0.5, 0.25])

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stage = nn.Conv2d(3, 3, kernel_size=8, stride=8)
        self.names = {0: "cat", 1: "dog"}

    def forward(self, x):
        activations = self.stage(x)
        n = x.shape[0]
        rows = torch.zeros(n, 16, 6)
        rows[:, :, :4] = torch.tensor([20.0, 20.0, 8.0, 8.0])
        rows[:, 3, :4] = torch.tensor([32.0, 24.0, 16.0, 16.0])
        score = torch.sigmoid((activations.mean(dim=(2, 3)) * self.head).sum(1))  # (N,)
        rows = rows.index_put((torch.arange(n), torch.full((n,), 3), torch.full((n,), 5)), score)
        return rows.transpose(1, 2), [activations]


def test_grad_cam_of_a_detection_by_hand():
    model = load_model(ModelSpec(ScoredDetector(), 64, "letterbox", "none"), device="cpu", conf=0.0)
    assert model.task == "detect" and model.reference_layers == ["stage"]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    result = attnlens.analyze(model, image, gradcam=True)
    detections = result.report()["detections"]
    best = max(range(len(detections)), key=lambda k: detections[k]["score"])
    assert best == 0 and detections[0]["label"] == "dog"
    x = model.recipe.prepare(image)[0]
    with torch.no_grad():
        activations = model.module.stage(x)[0]  # (C, h, w)
        s = float((activations.mean(dim=(1, 2)) * ScoredDetector.head).sum())
    slope = torch.sigmoid(torch.tensor(s)) * (1 - torch.sigmoid(torch.tensor(s)))
    weights = slope * ScoredDetector.head / (activations.shape[1] * activations.shape[2])
    expected = torch.relu((weights[:, None, None] * activations).sum(0))
    torch.testing.assert_close(result.reference.heatmap, expected, rtol=1e-4, atol=1e-7)
    assert result.reference.rank == 0 and result.reference.label == "dog"
    from attnlens.models.outputs import TargetError

    with pytest.raises(TargetError, match="detection.s rank from 0 to"):
        attnlens.analyze(model, image, gradcam=True, target=5)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.module.modules())  # released, also on errors
    features = load_model("tests.app.yolo_models:features", device="cpu")
    with pytest.raises(TargetError, match="task maps"):
        attnlens.analyze(features, image, gradcam=True)


def test_the_feature_stage_is_found_by_structure():
    """The coarsest map outside the head, the outermost layer giving it: ResNet's layer4; a YOLO-style model's
    last neck layer, not its head's convs."""
    import torchvision

    resnet = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        assert find_reference_layers(resnet, lambda: resnet(torch.zeros(1, 3, 64, 64))).stage == "layer4"
    from tests.app.yolo_models import YoloDetector

    detector = YoloDetector("v8").eval()
    with torch.no_grad():
        assert find_reference_layers(detector, lambda: detector(torch.zeros(1, 3, 64, 64))).stage == "model.dcn"


# --- the Python entry point and the CLI ------------------------------------------------------------------

def test_analyze_in_python_returns_tensors_a_report_and_a_figure(default_model):
    result = attnlens.analyze(default_model, DATA / "chelsea.jpg")
    assert result.report()["predictions"][0]["index"] in CAT_CLASSES
    assert set(result.heatmaps) == {block.id for block in default_model.blocks}
    assert all(isinstance(heatmap, torch.Tensor) and heatmap.dim() == 2 for heatmap in result.heatmaps.values())
    assert isinstance(result.figure(), Figure)
    from_array = attnlens.analyze(default_model, np.asarray(Image.open(DATA / "chelsea.jpg").convert("RGB")))
    torch.testing.assert_close(from_array.heatmaps["plugins.gc"], result.heatmaps["plugins.gc"])
    with pytest.raises(TypeError, match="image must be"):
        attnlens.analyze(default_model, 42)


def test_cli_gradcam_out_writes_npz_and_the_reference_overlay(tmp_path):
    run = subprocess.run([sys.executable, "-m", "attnlens", "analyze", str(DATA / "chelsea.jpg"), "--gradcam",
                          "--out", str(tmp_path), "--figure", str(tmp_path / "figure.png"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    arrays = np.load(tmp_path / "chelsea.npz")
    assert "reference/gradcam" in arrays.files and "plugins.ca/a_h" in arrays.files
    report = json.loads((tmp_path / "chelsea.json").read_text())
    assert report["reference"]["layer"] == "_blocks.15" and "values" not in report["reference"]["heatmap"]
    assert (tmp_path / "chelsea" / "reference.gradcam.png").is_file() and (tmp_path / "figure.png").is_file()
    refused = subprocess.run([sys.executable, "-m", "attnlens", "analyze", str(DATA / "chelsea.jpg"), "--target", "3"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "give them with a reference" in refused.stderr


@pytest.mark.parametrize("text, message", [
    ('[[models]]\nname = "a"\nmodle = "x"\n', "unknown keys modle"),
    ('[[models]]\nname = "a"\n[[models]]\nname = "a"\n', "two models are named 'a'"),
    ('[[models]]\nmodel = "resnet18"\n', "needs a name"),
    ('models = 3\n', "expected one or more [[models]] tables"),
    ('[[models]]\nname = "a"\ninput_size = "big"\n', "input_size"),
    ('[[models\n', "cannot read the models file"),
])
def test_models_file_mistakes_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ModelLoadError, match=message.replace("[", r"\[")):
        read_models_file(path)
    run = subprocess.run([sys.executable, "-m", "attnlens", "serve", "--models", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr and message in run.stderr


def test_a_models_file_serves_a_users_detector_beside_the_default(tmp_path, photos):
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "lite0"\n\n[[models]]\nname = "yolo"\nmodel = "tests.app.yolo_models:v8"\n'
                      'input-size = 640\nresize = "letterbox"\nnormalize = "none"\n')
    with TestClient(create_app(Settings(device="cpu", models=models), load_in_background=False)) as client:
        listing = client.get("/api/v1/models").json()
        assert [(m["name"], m["task"]) for m in listing["models"]] == [("lite0", "classify"), ("yolo", "detect")]
        image = Image.open(io.BytesIO(photos["cat"])).convert("RGB")
        image.paste((255, 255, 255), (200, 100, 260, 150))
        report = post(client, encode(image, "PNG"), model="yolo").json()
        assert report["model"] == "yolo"  # the name it is served under
        (detection,) = report["detections"]
        assert detection["label"] == "square" and np.allclose(detection["box"], (200, 100, 260, 150), atol=2)
        # this test detector's scores are written in by hand, not computed from its features
        refused = post(client, encode(image, "PNG"), model="yolo", include="gradcam")
        assert refused.status_code == 400 and "does not depend" in refused.json()["detail"]


def test_a_model_that_fails_to_load_stops_serve_with_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "attnlens", "serve", "--port", "0", "--device", "cpu",
                          "--model", "tests.app.yolo_models:raises"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == ("attnlens: the model tests.app.yolo_models:raises could not be "
                                                   "loaded: tests.app.yolo_models:raises() raised RuntimeError: my "
                                                   "factory is broken")

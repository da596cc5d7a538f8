"""Blocks the user names (``--block att=ca``: a coordinate attention whose gates multiply a stride-2 projection inside
it, which recognition alone does not read; a 1x1 projection it reads) and blocks built in the model's first
forward, through every route:
``attnlens.analyze``, the CLI (JSON, npz), the server (and its dataset view), ``attnlens eval``; the maps equal the
block's own gates, computed here from its input and weights (or read with hooks on its sigmoids)."""
import io
import json
import subprocess
import sys

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

import attnlens
from attnlens.server import create_app
from attnlens.server.settings import Settings
from tests.app.labelled_data import write_dataset

PROJECTED = "tests.app.fork_models:strided_ca"
ONE_BY_ONE = "tests.app.fork_models:projected_ca"
LAZY = "tests.app.fork_models:lazy_attention"
OPTIONS = {"device": "cpu", "input_size": 64}
IMAGE = Image.new("RGB", (80, 64), (120, 30, 200))


def projected_gates(loaded, image: Image.Image) -> tuple:
    """``(a_h (C, H), a_w (C, W))`` of ``StridedCoordAtt`` (sigmoid(conv1d(mean over columns / rows of its
    projection))) or ``ProjectedCoordAtt`` (of its input), from its input (kept by a pre-hook) and its weights."""
    block, kept = loaded.module.att, {}
    handle = block.register_forward_pre_hook(lambda m, args: kept.setdefault("x", args[0]))
    try:
        batch, _ = loaded.recipe.prepare(image)
        with torch.no_grad():
            loaded.module(loaded.normalize(batch))
    finally:
        handle.remove()
    x = kept["x"][0]
    if block.proj.stride == (2, 2):
        with torch.no_grad():
            x = block.proj(x[None])[0]
    gate = lambda conv, pooled: torch.sigmoid(torch.nn.functional.conv1d(pooled[None], conv.weight, conv.bias,
                                                                          padding=1))[0]
    with torch.no_grad():
        return gate(block.conv_h, x.mean(2)), gate(block.conv_w, x.mean(1))


def own_gates(module: torch.nn.Module, block: torch.nn.Module, image: Image.Image, loaded) -> tuple:
    """``(a_h (C, H), a_w (C, W))``: the CA_Block's own sigmoid outputs on ``image``, kept by forward hooks."""
    kept = {}
    handles = [block.sigmoid_h.register_forward_hook(lambda m, a, out: kept.setdefault("h", out)),
               block.sigmoid_w.register_forward_hook(lambda m, a, out: kept.setdefault("w", out))]
    try:
        batch, _ = loaded.recipe.prepare(image)
        with torch.no_grad():
            module(loaded.normalize(batch))
    finally:
        for handle in handles:
            handle.remove()
    return kept["h"][0, :, :, 0], kept["w"][0, :, 0, :]


def attnlens_cli(*args):
    return subprocess.run([sys.executable, "-m", "attnlens", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_a_block_built_in_the_first_forward_has_one_id_and_its_class():
    model = attnlens.load_model(LAZY, **OPTIONS)
    assert [(b.id, b.type, b.class_name) for b in model.blocks] == [("att.coordatt", "ca", "CA_Block")]
    assert model.blocks[0].recognised.startswith("by computation")
    report = attnlens.analyze(model, IMAGE).report()
    assert [block["id"] for block in report["blocks"]] == ["att.coordatt"]
    a_h, a_w = own_gates(model.module, model.module.att.coordatt, IMAGE, model)
    maps = attnlens.analyze(model, IMAGE).maps["att.coordatt"]
    torch.testing.assert_close(maps.a_h[0], a_h)
    torch.testing.assert_close(maps.a_w[0], a_w)
    listed = attnlens_cli("blocks", "--model", LAZY, "--device", "cpu", "--input-size", "64")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "att.coordatt" in line)
    assert "CA_Block" in line and "ca" in line.split()


def test_gates_on_a_one_by_one_projection_are_read_by_computation():
    model = attnlens.load_model(ONE_BY_ONE, **OPTIONS)
    assert [(b.id, b.type, b.class_name) for b in model.blocks] == [("att", "ca", "ProjectedCoordAtt")]
    a_h, a_w = projected_gates(model, IMAGE)
    maps = attnlens.analyze(model, IMAGE).maps["att"]
    torch.testing.assert_close(maps.a_h[0], a_h)
    torch.testing.assert_close(maps.a_w[0], a_w)


def test_a_named_block_reaches_analyze_the_cli_and_npz(tmp_path):
    assert attnlens.load_model(PROJECTED, **OPTIONS).blocks == []  # by computation alone: not read
    model = attnlens.load_model(PROJECTED, blocks={"att": "ca"}, **OPTIONS)
    a_h, a_w = projected_gates(model, IMAGE)
    result = attnlens.analyze(model, IMAGE)
    assert [block["id"] for block in result.report()["blocks"]] == ["att"]
    torch.testing.assert_close(result.maps["att"].a_h[0], a_h)
    torch.testing.assert_close(result.maps["att"].a_w[0], a_w)
    # the CLI: JSON, and the npz beside it
    path = tmp_path / "image.png"
    IMAGE.save(path)
    done = attnlens_cli("analyze", path, "--model", PROJECTED, "--device", "cpu", "--input-size", "64", "--block",
                        "att=ca", "--json", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert [block["id"] for block in json.loads(done.stdout)["blocks"]] == ["att"]
    arrays = np.load(tmp_path / "out" / "image.npz")
    np.testing.assert_allclose(arrays["att/a_h"], a_h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["att/a_w"], a_w.numpy(), rtol=1e-5, atol=1e-6)


def test_a_named_block_reaches_the_server_its_dataset_view_and_eval(tmp_path):
    yaml, _ = write_dataset(tmp_path / "data")
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nname = "projected"\nmodel = "{PROJECTED}"\ninput_size = 64\nblocks = ["att=ca"]\n')
    with TestClient(create_app(Settings(device="cpu", models=models, data=yaml), load_in_background=False)) as client:
        described = client.get("/api/v1/model").json()
        assert [block["id"] for block in described["blocks"]] == ["att"]
        upload = io.BytesIO()
        IMAGE.save(upload, "PNG")
        answer = client.post("/api/v1/analyze", files={"file": ("x.png", upload.getvalue(), "image/png")},
                             params={"include": "maps"})
        assert answer.status_code == 200, answer.text
        assert [block["id"] for block in answer.json()["blocks"]] == ["att"]
        served = client.post("/api/v1/analyze", params={"dataset": "data", "image": "images/val/a.png"})
        assert [block["id"] for block in served.json()["blocks"]] == ["att"]
    summary = attnlens.evaluate([("projected", attnlens.load_model(PROJECTED, blocks={"att": "ca"}, **OPTIONS))], yaml,
                                reference="none")
    assert {row["map"] for row in summary["rows"] if row["type"] == "ca"} == {"att"}

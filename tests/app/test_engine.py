"""The engine on real photos: predictions, one heatmap per block, values consistent with the PNGs."""
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import attnlens
from attnlens.analysis.engine import AnalyzeOptions, Engine
from attnlens.analysis.imaging import decode_image
from tests.app.conftest import CAT_CLASSES, ESPRESSO
from tests.helpers import png_of


@pytest.fixture(scope="module")
def cat_report(engine, photos):
    return engine.analyze(decode_image(photos["cat"]), AnalyzeOptions(include_values=True, include_maps=True))


def test_predictions_on_real_photos(engine, photos, cat_report):
    assert cat_report["predictions"][0]["index"] in CAT_CLASSES
    espresso = engine.analyze(decode_image(photos["espresso"]))
    assert espresso["predictions"][0]["index"] == ESPRESSO and espresso["predictions"][0]["label"] == "espresso"
    scores = [p["score"] for p in cat_report["predictions"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


LABELS = (Path(attnlens.__file__).parent / "data" / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()


def lite0_input(image: Image.Image) -> torch.Tensor:
    """The documented preprocessing, written out: bicubic resize of the short side to 224 (aspect kept), RGB
    in [0, 1], then Lite0's ``(x * 255 - 127) / 128``."""
    width, height = image.size
    scale = 224 / min(width, height)
    resized = image.resize((round(width * scale), round(height * scale)), Image.BICUBIC)
    x = torch.tensor(np.asarray(resized), dtype=torch.float32).permute(2, 0, 1)[None] / 255
    return (x * 255 - 127) / 128


@pytest.mark.parametrize("name", ["cat", "espresso"])
def test_report_matches_a_plain_forward_with_hooks(engine, default_model, photos, name):
    """Predictions, and the GC and CA heatmaps, against the model's own modules run by hand: the documented
    preprocessing, a softmax, and each block's map recomputed from its input (caught with a plain hook)."""
    image = decode_image(photos[name])
    report = engine.analyze(image, AnalyzeOptions(include_values=True))
    module = default_model.module
    seen = {}
    handles = [module.plugins[kind].register_forward_hook(
        lambda block, args, output, kind=kind: seen.__setitem__(kind, (args[0], output))) for kind in ("gc", "ca")]
    try:
        with torch.no_grad():
            probabilities = module(lite0_input(image)).softmax(dim=-1)[0]
    finally:
        for handle in handles:
            handle.remove()
    top = probabilities.argsort(descending=True)[:5].tolist()
    assert [p["index"] for p in report["predictions"]] == top
    assert [p["label"] for p in report["predictions"]] == [LABELS[i] for i in top]
    assert [p["score"] for p in report["predictions"]] == pytest.approx(probabilities[top].tolist(), abs=2e-6)

    values = {b["type"]: np.asarray(b["heatmap"]["values"]) for b in report["blocks"]}
    with torch.no_grad():
        x, _ = seen["gc"]  # GC: softmax of conv_mask(x) over all positions
        gc = module.plugins["gc"]
        context = gc.conv_mask(x).flatten(1).softmax(dim=1).reshape(x.shape[-2:])
        np.testing.assert_allclose(values["gc"], context.numpy(), rtol=1e-4, atol=1e-7)

        x, output = seen["ca"]  # CA: a_h, a_w from row / column means; heatmap mean_c a_h[c] a_w[c]
        ca = module.plugins["ca"]
        height = x.shape[2]
        pooled = torch.cat([x.mean(dim=3, keepdim=True), x.mean(dim=2, keepdim=True).transpose(2, 3)], dim=2)
        y = F.hardswish(ca.bn1(ca.conv1(pooled)))
        a_h = ca.conv_h(y[:, :, :height]).sigmoid()  # (1, C, H, 1)
        a_w = ca.conv_w(y[:, :, height:].transpose(2, 3)).sigmoid()  # (1, C, 1, W)
        torch.testing.assert_close(output, x * a_h * a_w)  # this reading of the block is the block
        np.testing.assert_allclose(values["ca"], (a_h * a_w).mean(dim=1)[0].numpy(), rtol=1e-4, atol=1e-6)


def test_report_shape_and_one_heatmap_per_block(cat_report, default_model):
    assert cat_report["image"] == {"width": 451, "height": 300}
    assert [b["id"] for b in cat_report["blocks"]] == [b.id for b in default_model.blocks]
    assert {b["type"] for b in cat_report["blocks"]} == {"gc", "ca", "acmix", "dcn", "spd"}
    assert set(cat_report["timings_ms"]) == {"preprocess", "forward", "heatmaps", "maps", "total"}
    for block in cat_report["blocks"]:
        heatmap = block["heatmap"]
        values = np.asarray(heatmap["values"])
        assert list(values.shape) == heatmap["shape"]
        png = png_of(heatmap["png"])
        assert png.size == (heatmap["shape"][1], heatmap["shape"][0]) and png.mode == "RGB"
        assert heatmap["range"] == pytest.approx([values.min(), values.max()], rel=1e-4, abs=1e-6)  # values: 7 decimals
        assert heatmap["meaning"] and heatmap["unit"]


def test_map_values_mean_what_they_say(cat_report):
    by_type = {b["type"]: b for b in cat_report["blocks"]}
    assert np.sum(by_type["gc"]["heatmap"]["values"]) == pytest.approx(1.0, abs=1e-4)
    acmix = by_type["acmix"]
    attention = np.asarray(acmix["maps"]["attention"])  # (heads, k*k, H, W)
    assert attention.shape == (4, 49, *acmix["heatmap"]["shape"])
    assert np.allclose(attention.sum(1), 1.0, atol=1e-3)
    h, w = acmix["heatmap"]["shape"]
    assert np.sum(acmix["heatmap"]["values"]) == pytest.approx(h * w, rel=1e-3)  # each query hands out 1
    ca = by_type["ca"]
    a_h, a_w = np.asarray(ca["maps"]["a_h"]), np.asarray(ca["maps"]["a_w"])
    assert np.allclose(np.einsum("ch,cw->hw", a_h, a_w) / len(a_h), ca["heatmap"]["values"], atol=1e-4)
    offsets = np.asarray(by_type["dcn"]["maps"]["offsets"])
    assert offsets.shape == (1, 9, 2, *by_type["dcn"]["heatmap"]["shape"])


def test_colormap_and_size_options(engine, photos):
    image = decode_image(photos["espresso"])
    default = engine.analyze(image)
    gray = engine.analyze(image, AnalyzeOptions(colormap="gray"))
    gc_default = png_of(default["blocks"][-1]["heatmap"]["png"])
    gc_gray = np.asarray(png_of(gray["blocks"][-1]["heatmap"]["png"]))
    assert np.array_equal(gc_gray[..., 0], gc_gray[..., 1])  # grey levels
    assert not np.array_equal(np.asarray(gc_default), gc_gray)
    larger = engine.analyze(image, AnalyzeOptions(size=320))
    assert larger["blocks"][-1]["heatmap"]["shape"][0] > default["blocks"][-1]["heatmap"]["shape"][0]
    assert "values" not in default["blocks"][0]["heatmap"] and "attention" not in default["blocks"][3]["maps"]


@pytest.mark.parametrize("options, match", [(AnalyzeOptions(colormap="nope"), "colormap"),
                                            (AnalyzeOptions(size=5000), "size")])
def test_bad_options(engine, photos, options, match):
    with pytest.raises(ValueError, match=match):
        engine.analyze(decode_image(photos["cat"]), options)


@pytest.mark.parametrize("size", [(1, 1), (2000, 3), (3, 900)])
def test_tiny_and_extreme_images(engine, size):
    report = engine.analyze(Image.new("RGB", size, (90, 120, 30)))
    assert report["image"] == {"width": size[0], "height": size[1]} and len(report["blocks"]) == 5


def test_prepare_keeps_aspect_and_bounds_the_long_side(engine):
    assert engine.prepare(Image.new("RGB", (451, 300)))[0].shape == (1, 3, 224, 337)
    assert engine.prepare(Image.new("RGB", (2000, 3)))[0].shape[-1] == 4 * 224


def test_bf16_autocast_keeps_maps_faithful(default_model, photos):
    """The reduced precision CUDA uses by default, checked here on CPU against fp32."""
    from attnlens.analysis.engine import Engine

    image = decode_image(photos["cat"])
    full = Engine(default_model, "fp32").run(Engine(default_model).prepare(image)[0])
    reduced = Engine(default_model, "bf16").run(Engine(default_model).prepare(image)[0])
    assert reduced.predictions.argmax() == full.predictions.argmax()
    for name, record in full.maps.items():
        a, b = record.heatmap.float().flatten(), reduced.maps[name].heatmap.float().flatten()
        if a.std() > 0:
            assert np.corrcoef(a.numpy(), b.numpy())[0, 1] > 0.98, name


def test_precision_is_checked(default_model):
    from attnlens.analysis.engine import Engine

    assert Engine(default_model, "auto").precision == "fp32"  # CPU
    with pytest.raises(ValueError, match="precision"):
        Engine(default_model, "fp8")


def test_a_batch_of_four_gives_the_reports_of_four_single_images(default_model, photos):
    """Through the server's own path (Service, MicroBatcher, max_batch 4): four different photos of one input
    size run as one batch answer what each answers alone (values, predictions; PNGs aside: a rounding of the
    last digit can move a colour level)."""
    import asyncio

    from attnlens.analysis.options import AnalyzeOptions
    from attnlens.server import Settings
    from attnlens.server.service import Service

    base = Image.open(io.BytesIO(photos["cat"])).convert("RGB").resize((320, 240))
    images = [base, base.transpose(Image.FLIP_LEFT_RIGHT), base.rotate(180),
              Image.open(io.BytesIO(photos["espresso"])).convert("RGB").resize((320, 240))]
    options = AnalyzeOptions(include_values=True, include_maps=True)
    engine = Engine(default_model)
    alone = [engine.analyze(image, options) for image in images]
    service = Service(Settings(model="efficientnet_lite0", device="cpu", max_batch=4, batch_window_ms=500))
    service.start(background=False)
    try:
        served = service.get(None)
        jobs = [(*engine.prepare(image), image) for image in images]

        async def together():
            return await asyncio.gather(*(served.batcher.submit(tuple(tensor.shape), (tensor, options, geometry, 0.0), 60)
                                          for tensor, geometry, _ in jobs))

        batched = [analysis.report(options) for analysis in asyncio.run(together())]
        assert list(served.batcher.batch_sizes) == [4]
    finally:
        service.stop()
    for single, in_batch in zip(alone, batched, strict=True):
        assert [p["index"] for p in single["predictions"]] == [p["index"] for p in in_batch["predictions"]]
        for a, b in zip(single["blocks"], in_batch["blocks"], strict=True):
            assert a["id"] == b["id"]
            np.testing.assert_allclose(b["heatmap"]["values"], a["heatmap"]["values"], rtol=1e-4,
                                       atol=1e-5 * max(1.0, abs(a["heatmap"]["range"][1])))
            for name, value in a["maps"].items():
                np.testing.assert_allclose(np.asarray(b["maps"][name], dtype=float), np.asarray(value, dtype=float),
                                           rtol=1e-3, atol=1e-4, err_msg=f"{a['id']}/{name}")
    assert batched[0]["blocks"][0]["heatmap"]["values"] != batched[3]["blocks"][0]["heatmap"]["values"]  # not one image 4x


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="counts threads in /proc (Linux)")
def test_reports_do_their_torch_work_on_the_model_thread(engine, photos):
    """The server renders reports on request threads. A torch op big enough to run in parallel there gives that
    thread an OpenMP team of its own, and with two teams on 2 cores every forward ran ~1.5-2x slower: the
    heatmaps and summaries are computed on the model's thread, so rendering starts no thread."""
    with ThreadPoolExecutor(1) as model_thread, ThreadPoolExecutor(1) as request_thread:
        analysis = model_thread.submit(engine.analysis, decode_image(photos["cat"])).result()
        request_thread.submit(lambda: None).result()
        threads = len(os.listdir("/proc/self/task"))
        request_thread.submit(analysis.report, AnalyzeOptions(include_maps=True, include_values=True)).result()
        assert len(os.listdir("/proc/self/task")) == threads

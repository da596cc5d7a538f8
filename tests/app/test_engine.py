"""The engine on real photos: predictions, one heatmap per block, values consistent with the PNGs."""

import numpy as np
import pytest
from PIL import Image

from attnlens.analysis.engine import AnalyzeOptions
from attnlens.analysis.imaging import decode_image
from tests.app.conftest import CAT_CLASSES, ESPRESSO
from tests.helpers import png_of


@pytest.fixture(scope="module")
def cat_report(engine, photos):
    return engine.analyze(decode_image(photos["cat"]), AnalyzeOptions(include_values=True, include_maps=True))


def test_predictions_on_real_photos(engine, photos, cat_report):
    assert cat_report["predictions"][0]["index"] in CAT_CLASSES
    espresso = engine.analyze(decode_image(photos["espresso"]))
    assert espresso["predictions"][0] == {"index": ESPRESSO, "label": "espresso",
                                          "score": espresso["predictions"][0]["score"]}
    scores = [p["score"] for p in cat_report["predictions"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def test_report_shape_and_one_heatmap_per_block(cat_report, default_model):
    assert cat_report["image"] == {"width": 451, "height": 300}
    assert [b["id"] for b in cat_report["blocks"]] == [b.id for b in default_model.blocks]
    assert {b["type"] for b in cat_report["blocks"]} == {"gc", "ca", "acmix", "dcn", "spd"}
    assert set(cat_report["timings_ms"]) == {"preprocess", "forward", "maps", "total"}
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
    assert engine.prepare(Image.new("RGB", (451, 300))).shape == (1, 3, 224, 337)
    assert engine.prepare(Image.new("RGB", (2000, 3))).shape[-1] == 4 * 224


def test_bf16_autocast_keeps_maps_faithful(default_model, photos):
    """The reduced precision CUDA uses by default, checked here on CPU against fp32."""
    from attnlens.analysis.engine import Engine

    image = decode_image(photos["cat"])
    full = Engine(default_model, "fp32").run(Engine(default_model).prepare(image))
    reduced = Engine(default_model, "bf16").run(Engine(default_model).prepare(image))
    assert reduced.probabilities.argmax() == full.probabilities.argmax()
    for name, record in full.maps.items():
        a, b = record.heatmap.float().flatten(), reduced.maps[name].heatmap.float().flatten()
        if a.std() > 0:
            assert np.corrcoef(a.numpy(), b.numpy())[0, 1] > 0.98, name


def test_precision_is_checked(default_model):
    from attnlens.analysis.engine import Engine

    assert Engine(default_model, "auto").precision == "fp32"  # CPU
    with pytest.raises(ValueError, match="precision"):
        Engine(default_model, "fp8")

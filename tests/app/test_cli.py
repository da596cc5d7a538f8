"""``attnlens analyze`` as users run it: a real process, real photos."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.app.conftest import CAT_CLASSES, DATA


def attnlens(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "attnlens", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_json_prints_exactly_one_object_with_every_block():
    result = attnlens("analyze", DATA / "chelsea.jpg", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON document
    assert report["predictions"][0]["index"] in CAT_CLASSES
    assert {b["type"] for b in report["blocks"]} == {"gc", "ca", "acmix", "dcn", "spd"}
    assert all(b["heatmap"]["png"].startswith("data:image/png;base64,") for b in report["blocks"])


def test_out_writes_overlays_and_json_for_many_images(tmp_path):
    result = attnlens("analyze", DATA / "chelsea.jpg", DATA / "coffee.jpg", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    for stem in ("chelsea", "coffee"):
        report = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
        for block in report["blocks"]:
            overlay = Image.open(tmp_path / "out" / stem / f"{block['id']}.png")
            assert overlay.size == (report["image"]["width"], report["image"]["height"])


@pytest.mark.parametrize("suffix", [".pdf", ".svg", ".png"])
def test_figure(tmp_path, suffix):
    target = tmp_path / f"figure{suffix}"
    result = attnlens("analyze", DATA / "coffee.jpg", "--figure", target)
    assert result.returncode == 0, result.stderr
    assert target.stat().st_size > 10_000
    assert "espresso" in result.stdout  # the human summary


def test_bad_inputs_give_messages_not_tracebacks(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    result = attnlens("analyze", tmp_path / "notes.txt", tmp_path / "missing.jpg")
    assert result.returncode == 1
    assert "notes.txt: not an image" in result.stderr and "missing.jpg" in result.stderr
    assert "Traceback" not in result.stderr
    result = attnlens("analyze", DATA / "coffee.jpg", "--model", "resnet99")
    assert result.returncode == 2 and "package.module:factory" in result.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "attnlens"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("attnlens ")

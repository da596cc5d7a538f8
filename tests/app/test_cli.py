"""``attnlens analyze``, ``train`` and ``eval`` as users run them: real processes, real photos, fake Debian data."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from attnlens.models import load_model
from attnlens.training.composites import SOURCES, CompositeSet, locate_sources
from tests.app.conftest import CAT_CLASSES, DATA
from tests.app.fake_sources import make_sources


def attnlens(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "attnlens", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


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


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["analyze", "--help"], ["serve", "--help"],
                                  ["blocks", "--help"]])
def test_version_and_help_do_not_import_torch(args):
    """Importing torch takes seconds: --version and every --help answer without it."""
    probe = ("import sys, runpy\nsys.argv = ['attnlens', *sys.argv[1:]]\ntry:\n    runpy.run_module('attnlens', "
             "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("torch imported: False")


# --- train and eval on a tiny fake of the Debian data ----------------------------------------------------


CACHE_IN_HOME = Path(".cache", "attnlens", "debian")  # composites.DEBIAN_CACHE, relative to HOME


@pytest.fixture(scope="module")
def fake_home(tmp_path_factory):
    """A HOME whose ~/.cache/attnlens/debian holds the fake packages unpacked (``<cache>/<package>/<folder>``),
    where ``attnlens train`` / ``eval`` look when they are not installed (installed ones win)."""
    home = tmp_path_factory.mktemp("home")
    staging = home / "staging"
    make_sources(staging)
    for package, folder in SOURCES.items():
        target = home / CACHE_IN_HOME / package / folder
        target.parent.mkdir(parents=True)
        (staging / folder).rename(target)
    return home


def in_home(home: Path) -> dict[str, str]:
    return dict(os.environ, HOME=str(home))


SENTINEL_LOSSES = [101.0, 102.0]


@pytest.fixture(scope="module")
def trained(fake_home):
    """``attnlens train`` for 2 steps of 2 composites, checkpointing every step; then ``--resume`` to 3 steps from
    that checkpoint, whose loss history is first replaced by sentinels: a run that continues keeps them, a
    run that restarts (same seed, same data) would recompute the same first two losses and hide it."""
    out = fake_home / "run"
    common = ("--batch-size", 2, "--checkpoint-every", 1, "--out", out, "--device", "cpu")
    first = attnlens("train", "--steps", 2, *common, cwd=fake_home, env=in_home(fake_home))
    assert first.returncode == 0, first.stderr
    checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    with safe_open(str(out / "blocks.safetensors"), "pt") as file:
        metadata = file.metadata()
    blocks = load_file(str(out / "blocks.safetensors"))
    torch.save({**checkpoint, "losses": SENTINEL_LOSSES}, out / "checkpoint.pt")
    resumed = attnlens("train", "--steps", 3, "--resume", *common, cwd=fake_home, env=in_home(fake_home))
    assert resumed.returncode == 0, resumed.stderr
    with safe_open(str(out / "blocks.safetensors"), "pt") as file:
        resumed_metadata = file.metadata()
    return {"out": out, "first": first, "checkpoint": checkpoint, "metadata": metadata, "blocks": blocks,
            "resumed": resumed, "resumed_metadata": resumed_metadata,
            "resumed_checkpoint": torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)}


def test_train_saves_only_the_trained_block_parameters(trained):
    assert "Traceback" not in trained["first"].stderr
    assert f"trained blocks: {trained['out'] / 'blocks.safetensors'}" in trained["first"].stdout
    initial = load_model("efficientnet_lite0_untrained", device="cpu").module
    plugin_parameters = {name: p.detach() for name, p in initial.named_parameters() if name.startswith("plugins.")}
    saved = trained["blocks"]
    assert plugin_parameters and set(saved) == set(plugin_parameters)  # every block parameter, nothing else
    assert all(saved[name].shape == p.shape for name, p in plugin_parameters.items())
    assert any(not torch.equal(saved[name], p) for name, p in plugin_parameters.items())  # they did train
    assert trained["metadata"] == {"recipe": "distillation", "steps": "2", "seed": "0"}
    checkpoint = trained["checkpoint"]
    assert checkpoint["step"] == 2 and len(checkpoint["losses"]) == 2
    assert all(math.isfinite(loss) and 0 < loss < 100 for loss in checkpoint["losses"])


def test_train_resume_continues_the_run(trained):
    after = trained["resumed_checkpoint"]
    assert "Traceback" not in trained["resumed"].stderr
    assert after["step"] == 3 and len(after["losses"]) == 3
    assert after["losses"][:2] == SENTINEL_LOSSES  # the history came from the checkpoint: continued, not restarted
    assert math.isfinite(after["losses"][2]) and after["losses"][2] < 100
    assert trained["resumed_metadata"]["steps"] == "3"


def test_eval_json_scores_the_given_blocks(trained, fake_home):
    """``eval --blocks`` on the trained file with CA put back to its initial state: CA starts uniform (its convs
    zero), so its row must be the uniform map's (the shipped blocks' CA is not uniform), while the other
    trained blocks score differently from their untrained selves (so the file was loaded, not skipped)."""
    initial = load_model("efficientnet_lite0_untrained", device="cpu").module.state_dict()
    blocks = load_file(str(trained["out"] / "blocks.safetensors"))
    blocks |= {name: initial[name].clone() for name in blocks if name.startswith("plugins.ca.")}
    save_file(blocks, str(fake_home / "blocks-ca-initial.safetensors"))
    result = attnlens("eval", "--count", 2, "--json", "--blocks", fake_home / "blocks-ca-initial.safetensors",
                      "--device", "cpu", cwd=fake_home, env=in_home(fake_home))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    scores = json.loads(result.stdout)  # exactly one JSON document
    rows = scores["rows"]
    assert scores["count"] == 2 and scores["agreement"] in (0.0, 0.5, 1.0)
    kinds = {"gc", "ca", "acmix", "dcn", "spd"}
    by_kind = {label: {name.split()[1]: row for name, row in rows.items() if name.startswith(f"{label} ")}
               for label in ("trained", "untrained")}
    assert set(by_kind["trained"]) == set(by_kind["untrained"]) == kinds
    assert {"centre prior", "uniform", "Grad-CAM, plain backbone last stage",
            "Grad-CAM reference, trained model (what include=gradcam serves)"} <= set(rows)
    assert len(rows) == 2 * len(kinds) + 4
    assert all(0 <= row["pointing"] <= 1 and 0 <= row["energy"] <= 1 for row in rows.values())
    # the uniform map's energy is the objects' mean area share, worked out here from the same composites
    sources = locate_sources(fake_home / CACHE_IN_HOME)
    masks = [CompositeSet("heldout", 2, seed=1, sources=sources, cache=fake_home / "bg").composite(i).mask
             for i in range(2)]
    assert rows["uniform"]["energy"] == pytest.approx(np.mean([mask.mean() for mask in masks]), abs=1e-9)
    assert by_kind["trained"]["ca"] == pytest.approx(rows["uniform"])
    assert by_kind["untrained"]["ca"] == pytest.approx(rows["uniform"])
    assert any(by_kind["trained"][kind] != pytest.approx(by_kind["untrained"][kind], abs=1e-6)
               for kind in ("gc", "acmix", "dcn"))


@pytest.mark.parametrize("args", [
    pytest.param(("eval", "--count", 2, "--blocks", "/nonexistent.safetensors"), id="missing blocks file"),
    pytest.param(("eval", "--count", 2, "--blocks", "{home}/misfit.safetensors"), id="blocks that do not fit"),
    pytest.param(("train", "--steps", 0, "--out", "{home}/run0"), id="zero steps"),
    pytest.param(("train", "--batch-size", 0, "--out", "{home}/run0"), id="zero batch"),
    pytest.param(("eval", "--count", 0), id="zero composites"),
])
def test_train_and_eval_mistakes_give_one_line_not_a_traceback(fake_home, args):
    save_file({"plugins.gc.conv_mask.weight": torch.zeros(3)}, str(fake_home / "misfit.safetensors"))
    result = attnlens(*(str(a).format(home=fake_home) for a in args), "--device", "cpu", cwd=fake_home,
                      env=in_home(fake_home))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines()  # ours, or argparse's usage error
              if line.startswith("attnlens: ") or line.startswith(f"attnlens {args[0]}: error: ")]
    assert len(errors) == 1, result.stderr


def test_the_kinds_listing_says_each_thing_once():
    done = attnlens("blocks")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    first = {line.split()[0]: line for line in lines if line and not line.startswith(" ")}
    assert set(first) >= {"gc", "ca", "acmix", "dcn", "spd"}
    assert first["gc"].count("context mask") == 1 and first["acmix"].count("attention received") == 1
    assert sum("read by names" in line for line in lines) == 5  # one line per kind, its readers joined

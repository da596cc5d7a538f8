"""Users' models with blocks copied from forks (names attnlens does not know): recognised at load, listed by
``attnlens blocks``, served with how each was recognised; a model with none says so; users name what is missed."""
import json
import subprocess
import sys

import pytest
import torch
from fastapi.testclient import TestClient

from attnlens.models import ModelLoadError, load_model
from attnlens.models.options import EnvironmentModelOptions
from attnlens.server import Settings, create_app
from tests.app.conftest import DATA

FORK = "tests.app.fork_models:fork_classifier"
CBAM_ONLY = "tests.app.fork_models:cbam_only"


def attnlens(*args, env=None):
    return subprocess.run([sys.executable, "-m", "attnlens", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_fork_blocks_are_recognised_at_load():
    model = load_model(FORK, device="cpu")
    found = {block.id: (block.class_name, block.type, block.feature_stride) for block in model.blocks}
    assert found == {"model.0": ("Focus", "spd", 2), "model.2": ("CA_Block", "ca", 4), "model.3": ("GC", "gc", 4),
                     "model.4": ("JointAtt", "ca", 4), "model.5": ("ParamGeneratorDCN", "dcn", 4)}
    assert all(block.recognised.startswith("by computation") for block in model.blocks)
    assert model.blocks_trained is None  # attnlens cannot know
    assert [block.channels for block in model.blocks] == [3, 32, 32, 32, 32]
    assert model.note == ""


def test_blocks_named_by_option_environment_and_models_file(tmp_path, monkeypatch):
    wrapped = load_model(FORK, device="cpu", blocks={"model": "ca"})  # the whole Sequential read as one CA
    assert [(block.id, block.type) for block in wrapped.blocks if block.id == "model"] == [("model", "ca")]
    monkeypatch.setenv("ATTNLENS_BLOCKS", "model=ca")
    assert EnvironmentModelOptions().model_options().blocks == {"model": "ca"}
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nname = "fork"\nmodel = "{FORK}"\nblocks = ["model=ca"]\n')
    from attnlens.models.catalog import read_models_file

    assert read_models_file(models)[0][1].blocks == {"model": "ca"}


def test_a_name_recognition_cannot_read_is_one_clear_error():
    with pytest.raises(ModelLoadError, match=r"--block model\.99=ca: the model has no module 'model\.99'; nearest"):
        load_model(FORK, device="cpu", blocks={"model.99": "ca"})
    with pytest.raises(ModelLoadError, match=r"--block 1=gc: named as gc, but it computes nothing read as gc"):
        load_model(CBAM_ONLY, device="cpu", blocks={"1": "gc"})
    with pytest.raises(ModelLoadError, match="the kind must be one of gc, ca, acmix, dcn, spd"):
        load_model(CBAM_ONLY, device="cpu", blocks={"1": "cbam"})


def test_blocks_command_lists_blocks_and_candidates():
    listed = attnlens("blocks", "--model", FORK, "--device", "cpu")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"{FORK}: 5 block records")
    row = next(line for line in lines if line.split()[:3] == ["model.2", "CA_Block", "ca"])
    assert "stride  4" in row and "by computation" in row
    as_json = json.loads(attnlens("blocks", "--model", FORK, "--device", "cpu", "--json").stdout)
    assert [block["id"] for block in as_json["blocks"]] == ["model.0", "model.2", "model.3", "model.4", "model.5"]
    assert as_json["blocks"][3]["class_name"] == "JointAtt"


def test_a_model_without_blocks_says_so_everywhere():
    listed = attnlens("blocks", "--model", CBAM_ONLY, "--device", "cpu")
    assert listed.returncode == 0 and "0 block records" in listed.stdout
    assert "1                            CBAM" in listed.stdout and "a spatial gate" in listed.stdout
    assert "--block MODULE=KIND" in listed.stdout
    report = json.loads(attnlens("analyze", DATA / "chelsea.jpg", "--model", CBAM_ONLY, "--device", "cpu",
                                 "--json").stdout)
    assert report["blocks"] == [] and "no block of a kind attnlens reads" in report["note"]
    assert "--block MODULE=KIND" in report["note"]
    wrong = attnlens("analyze", DATA / "chelsea.jpg", "--model", CBAM_ONLY, "--block", "2=ca")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr


def test_served_fork_model_describes_how_blocks_were_recognised(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nname = "fork"\nmodel = "{FORK}"\nresize = "letterbox"\n\n'
                      f'[[models]]\nname = "cbam"\nmodel = "{CBAM_ONLY}"\n')
    with TestClient(create_app(Settings(device="cpu", models=models), load_in_background=False)) as client:
        fork = client.get("/api/v1/model", params={"model": "fork"}).json()
        assert fork["blocks_trained"] is None
        assert {block["id"]: block["class_name"] for block in fork["blocks"]}["model.4"] == "JointAtt"
        assert fork["blocks"][0]["recognised"].startswith("by computation")
        cbam = client.get("/api/v1/model", params={"model": "cbam"}).json()
        assert cbam["blocks"] == [] and "--block" in cbam["note"]
        assert {candidate["class_name"] for candidate in cbam["candidates"]} == {"CBAM"}
        with open(DATA / "chelsea.jpg", "rb") as photo:
            answer = client.post("/api/v1/analyze", params={"model": "fork"}, files={"file": photo}).json()
        assert [block["id"] for block in answer["blocks"]] == ["model.0", "model.2", "model.3", "model.4", "model.5"]
        assert all(torch.isfinite(torch.tensor(block["heatmap"]["range"])).all() for block in answer["blocks"])

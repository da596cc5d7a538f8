"""Model loading: the embedded default, ResNets from weight files the tests write, users' factories."""
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from attnlens.models.loading import ModelLoadError, load_model, resolve_device
from attnlens.models.weights import read_state_dict


def test_default_model_describes_every_block(default_model):
    kinds = {block.type: block for block in default_model.blocks}
    assert set(kinds) == {"spd", "dcn", "ca", "acmix", "gc"}
    assert kinds["spd"].feature_stride == 2 and kinds["spd"].channels == 3
    assert kinds["dcn"].feature_stride == 8 and kinds["dcn"].channels == 40
    assert kinds["gc"].feature_stride == 16 and kinds["gc"].channels == 112
    assert default_model.num_classes == 1000 and default_model.labels[967] == "espresso"


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_resnet18_from_weight_file(tmp_path, resnet18_state, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(resnet18_state, path)
    else:
        save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    loaded = load_model("resnet18", str(path), "cpu")
    assert {b.type for b in loaded.blocks} == {"spd", "dcn", "ca", "acmix", "gc"}
    plain = torchvision.models.resnet18(weights=None).eval()
    plain.load_state_dict(resnet18_state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), plain(x), atol=1e-4)  # augmented starts as the plain model


def test_resnet18_from_torch_hub_cache(tmp_path, monkeypatch, resnet18_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(resnet18_state, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    assert load_model("resnet18", device="cpu").name == "resnet18"


def test_resnet_without_weights_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="--weights"):
        load_model("resnet50", device="cpu")


def test_augmented_checkpoint_round_trip(tmp_path, default_model):
    path = tmp_path / "augmented.pt"
    state = default_model.module.state_dict()
    torch.save({"state_dict": state}, path)  # wrapped checkpoints are unwrapped
    again = load_model(weights=str(path), device="cpu")
    for key, value in again.module.state_dict().items():
        assert torch.equal(value, state[key])


def test_user_factory_with_weights(tmp_path):
    from tests.app.user_models import tiny

    reference = tiny()
    path = tmp_path / "tiny.safetensors"
    save_file(reference.state_dict(), str(path))
    loaded = load_model("tests.app.user_models:tiny", str(path), "cpu")
    assert [b.type for b in loaded.blocks] == ["ca", "gc"]  # official CoordAtt recognised by structure
    assert loaded.labels == [f"class {i}" for i in range(10)]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.module(loaded.normalize(x)), reference.eval()(loaded.normalize(x)))


def test_bad_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    from tests.app.user_models import tiny

    state = tiny().state_dict()
    state.pop("2.conv_h.weight")
    state["extra.weight"] = torch.zeros(1)
    state["6.weight"] = torch.zeros(3, 16)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError) as error:
        load_model("tests.app.user_models:tiny", str(path), "cpu")
    message = str(error.value)
    assert "missing keys: 2.conv_h.weight" in message and "unexpected keys: extra.weight" in message
    assert "6.weight (3, 16) != (10, 16)" in message


@pytest.mark.parametrize("content, match", [(b"not a checkpoint", "cannot read"), (None, "not found")])
def test_unreadable_weights(tmp_path, content, match):
    path = tmp_path / "weights.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match):
        read_state_dict(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "code": print}, path)  # needs unpickling a function
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_state_dict(path)


@pytest.mark.parametrize("spec, match", [("tests.app.user_models:not_a_module", "not a torch.nn.Module"),
                                         ("tests.app.user_models:missing", "cannot import"),
                                         ("no_such_package.module:factory", "cannot import"),
                                         ("resnet99", "package.module:factory")])
def test_bad_model_specs(spec, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(spec, device="cpu")


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ModelLoadError, match="unknown device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        assert resolve_device(None).type == "cpu"
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            resolve_device("cuda")
